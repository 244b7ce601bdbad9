"""The DARTS ops' fast path computes exactly what their definitions say (up to float rounding).

Each check runs in float64 against the plain definition: a dilated depthwise conv against
``F.conv2d``, an op's ``fused_forward`` against ``scale * op(x)``, a mixed op against
``sum(w * op(x))`` with every op's plain ``forward``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nasreg
from nasreg._core.plugins import load_plugins
from nasreg_darts.ops import DepthwiseConv2d, batch_norm_scaled

REGS = load_plugins().registries
OPS = REGS.operations
DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
CL = torch.channels_last


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("k,d", [(3, 2), (5, 2), (3, 3)])
@pytest.mark.parametrize("stride", [1, "d"])
@pytest.mark.parametrize("size", [(8, 8), (7, 9), (1, 1), (2, 5)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_dilated_depthwise_matches_conv2d(k, d, stride, size, memory_format):
    s = d if stride == "d" else 1
    torch.manual_seed(0)
    C = 3
    conv = DepthwiseConv2d(C, C, k, stride=s, padding=d * (k - 1) // 2, dilation=d, groups=C, bias=True).double()
    assert conv._phase
    x = torch.randn(2, C, *size, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_()
    params = [x, conv.weight, conv.bias]
    results = []
    for fn in (conv, lambda x: F.conv2d(x, conv.weight, conv.bias, s, conv.padding, d, C)):
        y = fn(x)
        gy = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(3))
        results.append((y, *torch.autograd.grad(y, params, gy)))
    for got, ref in zip(*results):
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_depthwise_conv_is_a_conv2d_with_the_same_parameters():
    conv = DepthwiseConv2d(4, 4, 5, stride=2, padding=4, dilation=2, groups=4, bias=False)
    assert isinstance(conv, nn.Conv2d) and conv._phase
    assert [n for n, _ in conv.named_parameters()] == ["weight"]
    assert not DepthwiseConv2d(4, 4, 3, padding=1, groups=4)._phase  # not dilated: plain conv
    assert not DepthwiseConv2d(4, 4, 3, padding=1, dilation=2, groups=4)._phase  # not "same" padding
    assert not DepthwiseConv2d(4, 8, 3, padding=2, dilation=2, groups=4)._phase  # not depthwise


@pytest.mark.parametrize("name", [n for n in DARTS_OPS + ["sep_conv_7x7", "conv_7x1_1x7"] if n != "none"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_fused_forward_is_scale_times_forward(name, stride, affine, train):
    torch.manual_seed(0)
    op = OPS.get(name).factory(4, stride, affine).double().train(train)
    if affine:  # non-trivial BN scale and shift
        for m in op.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight)
                nn.init.normal_(m.bias)
    twin = copy.deepcopy(op)
    x = torch.randn(3, 4, 7, 6, dtype=torch.float64)
    scale = torch.tensor(0.37, dtype=torch.float64, requires_grad=True)
    expected = scale * op(x)
    fused = getattr(twin, "fused_forward", None)
    if fused is None:  # skip_connect at stride 1 is nn.Identity: the mixed op multiplies it
        assert isinstance(twin, nn.Identity)
        return
    x_relu = torch.relu(x) if getattr(twin, "relu_input", False) else None
    got = fused(x, scale, x_relu)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert twin.state_dict().keys() == op.state_dict().keys()
    for key, value in op.state_dict().items():  # running statistics moved the same way
        torch.testing.assert_close(twin.state_dict()[key], value, rtol=1e-12, atol=1e-12)
    g1, = torch.autograd.grad(expected.square().sum(), scale)
    g2, = torch.autograd.grad(got.square().sum(), scale)
    torch.testing.assert_close(g2, g1, rtol=1e-10, atol=1e-12)


def test_batch_norm_scaled_momentum_none_and_plain_fallback():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, momentum=None).double()
    twin = copy.deepcopy(bn)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    s = torch.tensor(2.0, dtype=torch.float64)
    for _ in range(3):
        torch.testing.assert_close(batch_norm_scaled(twin, x, s), s * bn(x))
    assert int(twin.num_batches_tracked) == int(bn.num_batches_tracked) == 3
    torch.testing.assert_close(twin.running_mean, bn.running_mean)
    other = nn.GroupNorm(1, 3).double()  # not a BatchNorm: scale * module(x)
    torch.testing.assert_close(batch_norm_scaled(other, x, s), s * other(x))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("with_out", [False, True])
def test_mixed_op_equals_weighted_sum_of_plain_forwards(stride, with_out):
    torch.manual_seed(0)
    mixed = nasreg.MixedOp(DARTS_OPS, 4, stride, OPS).double()
    twin = copy.deepcopy(mixed)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    alpha = torch.randn(len(DARTS_OPS), dtype=torch.float64, requires_grad=True)
    w = torch.softmax(alpha, -1)
    expected = sum(w[i] * twin.ops[n](x) for i, n in enumerate(DARTS_OPS) if n in twin.ops)
    base = torch.randn_like(expected)
    if with_out:
        out = base.clone()
        got = mixed(x, w, out=out)
        assert got is out  # accumulated in place
        expected = expected + base
    else:
        got = mixed(x, w, x_relu=torch.relu(x))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    ga, = torch.autograd.grad(got.sum(), alpha, retain_graph=True)
    ge, = torch.autograd.grad(expected.sum(), alpha)
    torch.testing.assert_close(ga, ge, rtol=1e-10, atol=1e-12)


def test_third_party_op_without_fused_forward_is_weighted_plainly():
    ops = nasreg.Registry("operations", "operation")
    ops.register("times_two", lambda C, stride, affine: _Double(), plugin="test")
    ops.register("none", lambda C, stride, affine: None, plugin="test", is_zero=True)
    mixed = nasreg.MixedOp(["none", "times_two"], 2, 1, ops)
    assert not mixed.relu_input
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(mixed(x, torch.tensor([0.25, 0.75])), 1.5 * x)


class _Double(nn.Module):
    def forward(self, x):
        return 2 * x


def test_supernet_runs_channels_last_on_cpu_for_images_of_16x16_and_more():
    torch.manual_seed(0)
    sp = REGS.search_spaces.get("darts-cell").factory(DARTS_OPS, cells=3, channels=4)
    net = sp.build_supernet(sp.full_candidates(), ops=OPS, in_channels=3, num_classes=10).double()
    seen = []
    net.cells[0].register_forward_hook(lambda m, i, o: seen.append(o.is_contiguous(memory_format=CL)))
    assert net(torch.randn(2, 3, 16, 16, dtype=torch.float64)).shape == (2, 10)
    assert net(torch.randn(2, 3, 8, 8, dtype=torch.float64)).shape == (2, 10)
    assert seen == [True, False]


@pytest.mark.parametrize("stride", [1, 2])
def test_dilated_depthwise_keeps_the_input_memory_format(stride):
    conv = DepthwiseConv2d(4, 4, 3, stride=stride, padding=2, dilation=2, groups=4, bias=False)
    x = torch.randn(2, 4, 8, 8)
    assert conv(x).is_contiguous()
    y = conv(x.contiguous(memory_format=CL))
    assert y.is_contiguous(memory_format=CL) and not y.is_contiguous()


def test_factorized_reduce_on_few_channels_last_channels_survives_backward():
    """torch 2.14's CPU backward of a 1x1 stride-2 conv on a channels-last input with 2 to 7
    channels corrupts the heap (the process aborts): FactorizedReduce must not hit it. In a
    subprocess, so that a regression fails this test instead of killing the test run."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import torch
        from nasreg_darts.ops import FactorizedReduce
        torch.set_num_threads(1)
        torch.manual_seed(0)
        for C in range(2, 8):
            for C_out in (2, 4, 8, 16):
                fr = FactorizedReduce(C, C_out, affine=False)
                for _ in range(3):
                    x = torch.randn(2, C, 16, 16).contiguous(memory_format=torch.channels_last)
                    x.requires_grad_()
                    grads = torch.autograd.grad(fr(x).sum(), [x, *fr.parameters()])
                    x2 = x.detach().contiguous().requires_grad_()
                    ref = torch.autograd.grad(fr(x2).sum(), [x2, *fr.parameters()])
                    for a, b in zip(grads, ref):
                        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
