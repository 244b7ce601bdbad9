"""The ``nasnet`` plugin's operations: the five NASNet ops DARTS lacks and the nas-layers layer ops."""

from __future__ import annotations

import pytest
import torch

import nasreg_nasnet.factories as nops
from nasreg._core.plugins import load_plugins
from nasreg_nasnet.factories import FILTERS, HEIGHTS, NASNET_OPERATIONS, STRIDES, WIDTHS, layer_op_name

REGS = load_plugins().registries
OPS = REGS.operations


pytestmark = pytest.mark.usefixtures("one_thread")
NEW_OPS = ["conv_1x3_3x1", "max_pool_5x5", "max_pool_7x7", "conv_1x1", "conv_3x3"]


def test_the_plugin_registers_the_new_ops_and_reuses_the_darts_ones():
    assert set(OPS.by_plugin("nasnet")) >= set(NEW_OPS)
    for name in NASNET_OPERATIONS:  # all 13 NASNet ops resolve, each registered once
        entry = OPS.get(name)
        assert entry.plugin == ("nasnet" if name in NEW_OPS else "darts"), name
    assert len(NASNET_OPERATIONS) == 13
    assert "conv_1x7_7x1" not in OPS  # the DARTS name conv_7x1_1x7 is that op


@pytest.mark.parametrize("name", NASNET_OPERATIONS)
@pytest.mark.parametrize("stride, size, out", [(1, 8, 8), (2, 8, 4), (1, 5, 5), (2, 5, 3), (2, 1, 1)])
def test_every_nasnet_op_keeps_channels_and_divides_the_size_rounding_up(name, stride, size, out):
    entry = OPS.get(name)
    for affine, kwargs in ((False, {}), (True, dict(entry.get("eval_kwargs", None) or {}))):
        op = entry.factory(6, stride, affine, **kwargs)
        y = op(torch.randn(2, 6, size, size))
        assert y.shape == (2, 6, out, out), (name, stride, size)


def test_metadata():
    assert OPS.get("max_pool_5x5")["parameter_free"] and OPS.get("max_pool_7x7")["kind"] == "pool"
    assert OPS.get("max_pool_7x7")["eval_kwargs"] == {"bn": False}
    assert not OPS.get("conv_3x3")["parameter_free"] and OPS.get("conv_1x3_3x1")["kind"] == "conv"
    for name in NEW_OPS:
        assert OPS.get(name)["is_zero"] is False
        params = sum(p.numel() for p in OPS.get(name).factory(4, 1, False).parameters())
        assert (params == 0) == OPS.get(name)["parameter_free"], name


def test_op_definitions():
    conv = nops.conv_1x3_3x1(4, 2, True).op
    assert [tuple(m.kernel_size) for m in conv if isinstance(m, torch.nn.Conv2d)] == [(1, 3), (3, 1)]
    assert isinstance(conv[0], torch.nn.ReLU) and isinstance(conv[-1], torch.nn.BatchNorm2d)
    pool = nops.max_pool_7x7(4, 1, True, bn=False)
    assert pool.pool.kernel_size == 7 and isinstance(pool.bn, torch.nn.Identity)
    assert nops.conv_3x3(4, 1, True).op[1].kernel_size == (3, 3)


def test_layer_ops_cover_the_papers_grid_with_metadata():
    names = [e.name for e in OPS if e.get("kind") == "nas-layer"]
    assert len(names) == len(HEIGHTS) * len(WIDTHS) * len(FILTERS) * len(STRIDES) == 192
    entry = OPS.get("conv_3x5_36")
    assert entry["layer"] == {"height": 3, "width": 5, "filters": 36, "stride": 1}
    assert OPS.get("conv_7x1_64_s2")["layer"] == {"height": 7, "width": 1, "filters": 64, "stride": 2}
    assert layer_op_name(1, 7, 24, 3) == "conv_1x7_24_s3" and "conv_1x7_24_s3" in OPS


@pytest.mark.parametrize("h, w, f, s", [(3, 5, 36, 1), (7, 1, 24, 2), (1, 1, 64, 3), (5, 7, 48, 2)])
def test_a_layer_op_is_its_conv_at_its_own_filters_and_stride(h, w, f, s):
    factory = OPS.get(layer_op_name(h, w, f, s)).factory
    op = factory(f, s, True)  # the contract: C -> C at the op's own C and stride
    assert op(torch.randn(2, f, 9, 9)).shape == (2, f, -(-9 // s), -(-9 // s))
    layer = factory(f, s, True, in_channels=3)  # the network passes the input channels
    y = layer(torch.randn(2, 3, 8, 8))
    assert y.shape == (2, f, -(-8 // s), -(-8 // s)) and y.min() >= 0  # ends in a ReLU
    assert layer.conv.kernel_size == (h, w)
    # Like every op, it works at any C and stride (the layer's own values come from its metadata).
    other = OPS.get("conv_3x5_36").factory(16, 2, False)
    assert other(torch.randn(2, 16, 9, 9)).shape == (2, 16, 5, 5)
