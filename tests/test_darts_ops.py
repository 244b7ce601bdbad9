"""The DARTS operations: shapes, definitions and registry metadata.

Shape and metadata tests are parametrized over every registered operation, so a new op (built-in
or from a plugin) is checked automatically.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import nasreg
from nasreg._core.plugins import load_plugins

REGS = load_plugins().registries
OPS = REGS.operations
ALL_OPS = OPS.names()
DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
NASNET_OPS = ["sep_conv_7x7", "conv_7x1_1x7"]  # for the published NASNet-A / AmoebaNet-A genotypes
KINDS = {"zero", "pool", "identity", "conv"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: thread start-up and sync would dominate (badly so on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_darts_plugin_registers_the_eight_ops_and_two_nasnet_ops():
    assert sorted(OPS.by_plugin("darts")) == sorted(DARTS_OPS + NASNET_OPS)


def check_shape(name, stride, size, C, affine):
    op = OPS.get(name).factory(C, stride, affine)
    assert isinstance(op, nn.Module)
    h, w = size
    x = torch.randn(2, C, h, w, requires_grad=True)
    y = op(x)
    assert y.shape == (2, C, math.ceil(h / stride), math.ceil(w / stride))
    assert y.dtype == x.dtype
    if not OPS.get(name).get("is_zero", False):
        y.square().sum().backward()  # differentiable end to end
        assert x.grad is not None


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(8, 8), (7, 7)])
def test_output_shape(name, stride, size):
    torch.manual_seed(0)
    check_shape(name, stride, size, 4, False)


@pytest.mark.parametrize("name", ALL_OPS)
def test_output_shape_odd_cases(name):
    """Odd channels, affine BN, non-square and 1x1 inputs."""
    torch.manual_seed(0)
    for stride in (1, 2):
        for size in ((5, 8), (1, 1)):
            check_shape(name, stride, size, 3, True)


@pytest.mark.parametrize("name", ALL_OPS)
def test_metadata(name):
    entry = OPS.get(name)
    if entry.plugin == "darts":
        assert isinstance(entry["is_zero"], bool)
        assert isinstance(entry["parameter_free"], bool)
        assert entry["kind"] in KINDS
        assert entry["is_zero"] == (name == "none")
        assert entry.description
    for key in ("is_zero", "parameter_free"):
        assert isinstance(entry.get(key, False), bool)
    if "parameter_free" in entry.metadata:
        # The documented definition: no trainable weights as the search supernet builds it.
        assert entry["parameter_free"] == (n_params(entry.factory(8, 1, False)) == 0)


def test_parameter_free_set():
    free = {n for n in DARTS_OPS if OPS.get(n)["parameter_free"]}
    assert free == {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"}


@pytest.mark.parametrize("stride", [1, 2])
def test_none_outputs_zeros(stride):
    op = OPS.get("none").factory(4, stride, False)
    y = op(torch.randn(2, 4, 7, 8))
    assert y.shape == (2, 4, 4 if stride == 2 else 7, 4 if stride == 2 else 8)
    assert not y.any()


def test_zero_op_gets_no_module_in_mixed_op():
    mixed = nasreg.MixedOp(["none", "skip_connect", "sep_conv_3x3"], 4, 1, OPS, affine=False)
    assert "none" not in mixed.ops
    assert list(mixed.ops) == ["skip_connect", "sep_conv_3x3"]
    x = torch.randn(2, 4, 8, 8)
    w = torch.tensor([0.5, 0.25, 0.25])
    # With the conv weighted 0, the output is the weighted identity: none contributes nothing.
    out = mixed(x, torch.tensor([0.9, 0.1, 0.0]))
    torch.testing.assert_close(out, 0.1 * x)
    assert mixed(x, w).shape == x.shape


def test_skip_connect_is_identity_at_stride_1_and_factorized_reduce_at_stride_2():
    from nasreg_darts.ops import FactorizedReduce

    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(OPS.get("skip_connect").factory(4, 1, False)(x), x)
    assert isinstance(OPS.get("skip_connect").factory(4, 2, False), FactorizedReduce)


def test_factorized_reduce_matches_darts_on_even_sizes():
    from nasreg_darts.ops import FactorizedReduce

    torch.manual_seed(0)
    fr = FactorizedReduce(4, 6, affine=False).eval()
    x = torch.randn(2, 4, 8, 6)
    r = torch.relu(x)
    expected = fr.bn(torch.cat([fr.conv_1(r), fr.conv_2(r[:, :, 1:, 1:])], dim=1))
    torch.testing.assert_close(fr(x), expected)


def test_factorized_reduce_odd_channels():
    from nasreg_darts.ops import FactorizedReduce

    assert FactorizedReduce(4, 5)(torch.randn(1, 4, 7, 7)).shape == (1, 5, 4, 4)


@pytest.mark.parametrize("name,expected", [
    # (depthwise k*k*C + pointwise C*C) per block, at C=16 and stride 1, affine=False (no BN params)
    ("sep_conv_3x3", 2 * (9 * 16 + 16 * 16)),
    ("sep_conv_5x5", 2 * (25 * 16 + 16 * 16)),
    ("dil_conv_3x3", 9 * 16 + 16 * 16),
    ("dil_conv_5x5", 25 * 16 + 16 * 16),
    ("max_pool_3x3", 0), ("avg_pool_3x3", 0), ("skip_connect", 0), ("none", 0),
    ("sep_conv_7x7", 2 * (49 * 16 + 16 * 16)),
    ("conv_7x1_1x7", 2 * 7 * 16 * 16),
])
def test_standard_definitions_weight_counts(name, expected):
    assert n_params(OPS.get(name).factory(16, 1, False)) == expected


def test_skip_connect_stride_2_weights():
    assert n_params(OPS.get("skip_connect").factory(16, 2, False)) == 2 * 16 * 8
    assert n_params(OPS.get("skip_connect").factory(16, 2, True)) == 2 * 16 * 8 + 2 * 16


@pytest.mark.parametrize("name,dilation,kernel", [("dil_conv_3x3", 2, 3), ("dil_conv_5x5", 2, 5),
                                                  ("sep_conv_3x3", 1, 3), ("sep_conv_5x5", 1, 5)])
def test_depthwise_convs(name, dilation, kernel):
    op = OPS.get(name).factory(8, 2, False)
    convs = [m for m in op.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [m for m in convs if m.groups == 8]
    pointwise = [m for m in convs if m.kernel_size == (1, 1)]
    n_blocks = 2 if name.startswith("sep") else 1
    assert len(depthwise) == len(pointwise) == n_blocks
    assert all(m.kernel_size == (kernel, kernel) and m.dilation == (dilation, dilation) for m in depthwise)
    assert depthwise[0].stride == (2, 2) and all(m.stride == (1, 1) for m in depthwise[1:] + pointwise)
    assert sum(isinstance(m, nn.ReLU) for m in op.modules()) == n_blocks
    assert sum(isinstance(m, nn.BatchNorm2d) for m in op.modules()) == n_blocks


@pytest.mark.parametrize("name", ["max_pool_3x3", "avg_pool_3x3"])
def test_pools_have_bn_with_given_affine_and_can_be_bare(name):
    factory = OPS.get(name).factory
    bns = [m for m in factory(4, 1, False).modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 1 and not bns[0].affine
    assert n_params(factory(4, 1, True)) == 8
    bare = factory(4, 1, False, bn=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in bare.modules())


def test_eval_kwargs_metadata_builds_bare_pools():
    """The evaluation network passes ``eval_kwargs``: DARTS's evaluation pools have no BN."""
    for name in OPS.by_plugin("darts"):
        entry = OPS.get(name)
        module = entry.factory(4, 1, True, **entry.get("eval_kwargs", {}))
        if name in ("max_pool_3x3", "avg_pool_3x3"):
            assert n_params(module) == 0 and not any(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def test_avg_pool_does_not_count_padding():
    op = OPS.get("avg_pool_3x3").factory(1, 1, False, bn=False)
    y = op(torch.ones(1, 1, 4, 4))
    torch.testing.assert_close(y, torch.ones(1, 1, 4, 4))


def test_ops_do_not_modify_their_input():
    x = torch.randn(2, 4, 8, 8)
    ref = x.clone()
    for name in ALL_OPS:
        for stride in (1, 2):
            OPS.get(name).factory(4, stride, False)(x)
            assert torch.equal(x, ref), name
