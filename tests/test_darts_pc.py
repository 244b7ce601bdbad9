"""PC-DARTS options of the darts-cell space: partial channel connections and edge normalization."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import nasreg
from nasreg.cli import main
from nasreg._core.plugins import load_plugins
from nasreg_darts.space import PartialChannelMixedOp, channel_shuffle, shuffle_concat

REGS = load_plugins().registries
OPS = REGS.operations
FACTORY = REGS.search_spaces.get("darts-cell").factory
DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def supernet(**keys):
    sp = FACTORY(DARTS_OPS, **{"cells": 3, "channels": 8, **keys})
    return sp.build_supernet(sp.full_candidates(), ops=OPS, in_channels=3, num_classes=10)


def reference_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS's channel_shuffle, verbatim in substance."""
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, -1, h, w)


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_shuffle_concat_is_pc_darts_channel_shuffle_and_a_permutation(k, memory_format):
    torch.manual_seed(0)
    C = 8
    y = torch.randn(2, C // k, 3, 5).contiguous(memory_format=memory_format)
    rest = torch.randn(2, C - C // k, 3, 5).contiguous(memory_format=memory_format)
    cat = torch.cat([y, rest], dim=1)
    out = shuffle_concat(y, rest, k)
    assert torch.equal(out, reference_shuffle(cat, k))
    assert torch.equal(out, channel_shuffle(cat, k))
    if memory_format is torch.channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)
    # a permutation: every input channel appears exactly once
    src = torch.arange(C, dtype=torch.float64).view(1, C, 1, 1).expand(1, C, 2, 2)
    perm = shuffle_concat(src[:, :C // k], src[:, C // k:], k)[0, :, 0, 0].long().tolist()
    assert sorted(perm) == list(range(C)) and perm != list(range(C))
    assert perm == [g * (C // k) + j for j in range(C // k) for g in range(k)]


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("size", [(8, 8), (7, 5)])
def test_forward_shapes(k, size):
    torch.manual_seed(0)
    net = supernet(partial_channels=k, edge_normalization=True)
    out = net(torch.randn(2, 3, *size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_ops_are_built_with_c_over_k_channels_and_k4_has_fewer_weights():
    full, pc = supernet(), supernet(partial_channels=4)
    edge = pc.cells[0].edges[0]
    assert isinstance(edge, PartialChannelMixedOp) and edge.k == 4
    assert edge.ops["sep_conv_3x3"].op[1].weight.shape == (2, 1, 3, 3)  # 8 channels / 4
    assert pc.num_weights() < full.num_weights() / 2
    # parameter names keep the plain mixed op's layout
    assert any(n.startswith("cells.0.edges.0.ops.sep_conv_3x3.") for n, _ in pc.named_weight_parameters())


def test_partial_channels_validated():
    with pytest.raises(ValueError, match="partial_channels: channels \\(6\\) must be a multiple"):
        FACTORY(DARTS_OPS, channels=6, partial_channels=4)
    from nasreg._core.errors import SpecError
    from nasreg._core.params import component

    with pytest.raises(SpecError, match="partial_channels"):
        component("search_spaces", {"name": "darts-cell", "operations": DARTS_OPS, "partial_channels": 0},
                  "spec.toml: [search_space]", REGS)


def test_bypass_channels_pass_through_unchanged():
    """With every op weight 0, an edge outputs its bypass channels (shuffled) and zeros."""
    torch.manual_seed(0)
    edge = PartialChannelMixedOp(DARTS_OPS, 8, 1, OPS, k=4).train()
    x = torch.randn(2, 8, 6, 6)
    out = edge(x, torch.zeros(len(DARTS_OPS)))
    assert torch.equal(out, shuffle_concat(torch.zeros(2, 2, 6, 6), x[:, 2:], 4))
    down = PartialChannelMixedOp(DARTS_OPS, 8, 2, OPS, k=4)(x, torch.zeros(len(DARTS_OPS)))
    assert down.shape == (2, 8, 3, 3)


def test_edge_normalization_betas_are_arch_parameters_with_gradients():
    torch.manual_seed(0)
    net = supernet(partial_channels=2, edge_normalization=True)
    betas = list(net.extra_arch.values())
    assert [b.shape for b in betas] == [(14,), (14,)]
    arch = net.arch_parameters()
    assert len(arch) == 2 * 14 + 2 and all(any(b is a for a in arch) for b in betas)
    assert net.alpha_parameters() == arch[:28]
    assert not any(any(b is w for w in net.weight_parameters()) for b in betas)
    net(torch.randn(2, 3, 8, 8)).logsumexp(1).sum().backward()
    assert all(b.grad is not None and b.grad.abs().sum() > 0 for b in betas)
    assert net.num_weights() == supernet(partial_channels=2).num_weights()
    assert not supernet(partial_channels=2).extra_arch  # off: no betas


def test_edge_normalization_weights_each_node_sum_and_the_derivation():
    torch.manual_seed(0)
    net = supernet(edge_normalization=True)
    with torch.no_grad():
        net.extra_arch["betas_normal"].copy_(torch.randn(14))
    scales = net.edge_scales("normal")
    # per node, the edge weights are a softmax over its incoming edges
    groups = [[0, 1], [2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12, 13]]
    for g in groups:
        torch.testing.assert_close(sum(scales[e] for e in g), torch.tensor(1.0))
    # alpha_softmax (what the selectors derive from) is softmax(alpha) x edge weight
    soft = net.alpha_softmax()["normal"]
    for e, ops in enumerate(soft):
        expected = torch.softmax(net.alphas["normal"][e].detach(), -1) * scales[e].detach()
        torch.testing.assert_close(torch.tensor(ops, dtype=torch.float64), expected.double(), rtol=1e-6, atol=1e-9)


def test_tiny_search_with_partial_channels_runs(tmp_path):
    out = tmp_path / "pc"
    args = ["run", str(ROOT / "specs" / "darts.toml"), "--out", str(out), "-q"]
    for o in ["data.dataset=digits", "data.limit=96", "data.batch_size=24", "data.num_workers=0",
              "search_space.cells=3", "search_space.channels=4", "run.threads=1", "search.epochs=2",
              "strategy.order=1", "search_space.partial_channels=2", "search_space.edge_normalization=true"]:
        args += ["--set", o]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    spec_text = (out / "spec.toml").read_text()
    assert "partial_channels = 2" in spec_text and "edge_normalization = true" in spec_text
    genotype = nasreg.Genotype.load(out / "genotype.json", REGS)
    assert all(len(c.edges) == 8 for c in genotype.cells.values())
    # recorded gradients and alphas are per edge and op of the alphas (betas are not mixed in)
    grads = json.loads((out / "gradients.json").read_text())["stages"][0]["grad_history"]
    assert [len(grads[ct]) for ct in ("normal", "reduce")] == [14, 14]
    assert all(len(edge) == 8 and all(len(t) == 2 for t in edge) for edge in grads["normal"])
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert "extra_arch.betas_normal" in ckpt["model"]
