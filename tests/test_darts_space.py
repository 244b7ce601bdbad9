"""The darts-cell search space and its supernet."""

from __future__ import annotations

import warnings

import pytest
import torch

import nasreg
from nasreg._core.errors import SpecError
from nasreg._core.params import bind, component
from nasreg._core.plugins import load_plugins

REGS = load_plugins().registries
OPS = REGS.operations
DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
FACTORY = REGS.search_spaces.get("darts-cell").factory


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: thread start-up and sync would dominate (badly so on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def space(**keys) -> nasreg.SearchSpace:
    return FACTORY(keys.pop("operations", DARTS_OPS), **keys)


def supernet(sp, in_channels=3, num_classes=10, candidates=None):
    return sp.build_supernet(candidates or sp.full_candidates(), ops=OPS, in_channels=in_channels,
                             num_classes=num_classes)


def test_registered_by_darts():
    entry = REGS.search_spaces.get("darts-cell")
    assert entry.plugin == "darts" and entry.description


def test_edges_and_concat():
    sp = space()
    edges = sp.edges()
    assert set(edges) == {"normal", "reduce"}
    expected = [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3), (0, 4), (1, 4), (2, 4), (3, 4),
                (0, 5), (1, 5), (2, 5), (3, 5), (4, 5)]
    assert edges["normal"] == edges["reduce"] == expected
    assert sp.concat("normal") == sp.concat("reduce") == [2, 3, 4, 5]
    assert sp.inputs_per_node == 2
    assert len(space(nodes=1).edges()["normal"]) == 2
    assert len(space(nodes=5).edges()["reduce"]) == 20


def test_default_reductions_follow_darts_rule():
    assert space().reductions == [2, 5]
    assert space(cells=20).reductions == [6, 13]
    assert space(cells=3).reductions == [1, 2]
    assert space(cells=5, reductions=[4, 0]).reductions == [0, 4]


def test_default_supernet_matches_reference_counts():
    """REFERENCE.md: 8 cells, 16 channels, 8 ops, 3x32x32, 10 classes -> 1,930,618 weights, 224 alphas."""
    net = supernet(space())
    assert sum(a.numel() for a in net.arch_parameters()) == 2 * 14 * 8 == 224
    assert net.num_weights() == 1_930_618
    assert len(net.cells) == 8
    assert [c.cell_type for c in net.cells].count("reduce") == 2


def tiny(**keys):
    defaults = dict(cells=3, channels=4)
    return space(**{**defaults, **keys})


@pytest.mark.parametrize("in_channels,size", [(1, 8), (3, 32), (1, 7), (3, 5), (1, 1)])
@pytest.mark.parametrize("nodes", [2, 4])
def test_forward_shapes(in_channels, size, nodes):
    torch.manual_seed(0)
    net = supernet(tiny(nodes=nodes), in_channels=in_channels, num_classes=10)
    out = net(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_forward_odd_shapes_and_consecutive_reductions():
    torch.manual_seed(0)
    sp = space(cells=4, channels=3, nodes=3, reductions=[0, 1, 3])  # odd channels: FactorizedReduce
    net = supernet(sp, in_channels=1, num_classes=4)
    assert net(torch.randn(2, 1, 7, 9)).shape == (2, 4)


def test_backward_reaches_alphas_and_weights():
    torch.manual_seed(0)
    net = supernet(tiny(nodes=3), in_channels=1)
    net(torch.randn(2, 1, 8, 8)).logsumexp(1).sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.arch_parameters())
    weights = [p for p in net.weight_parameters() if p.grad is not None]
    assert len(weights) == len(net.weight_parameters())


def test_per_edge_candidates_give_smaller_supernet():
    sp = tiny()
    full = supernet(sp)
    cands = sp.full_candidates()
    cands["normal"][0] = ["none", "skip_connect"]
    cands["normal"][3] = ["sep_conv_3x3"]
    cands["reduce"] = [["max_pool_3x3", "avg_pool_3x3"] for _ in cands["reduce"]]
    small = supernet(sp, candidates=cands)
    assert small.num_weights() < full.num_weights()
    assert [len(a) for a in small.alphas["normal"]][:4] == [2, 8, 8, 1]
    assert sum(len(m.ops) for m in small.modules() if isinstance(m, nasreg.MixedOp)) < \
        sum(len(m.ops) for m in full.modules() if isinstance(m, nasreg.MixedOp))
    assert small(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_fewer_operations_fewer_weights():
    n_full = supernet(tiny()).num_weights()
    n_small = supernet(tiny(operations=["none", "max_pool_3x3", "sep_conv_3x3"])).num_weights()
    assert n_small < n_full


def test_edge_with_only_none():
    sp = tiny(nodes=2)
    cands = sp.full_candidates()
    cands["normal"] = [["none"] for _ in cands["normal"]]
    net = supernet(sp, candidates=cands)
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_parameter_names_do_not_depend_on_candidate_order():
    sp = tiny(nodes=2)
    a = supernet(sp)
    b = supernet(sp, candidates={ct: [list(reversed(c)) for c in e] for ct, e in sp.full_candidates().items()})
    assert set(dict(a.named_weight_parameters())) == set(dict(b.named_weight_parameters()))


def test_bad_candidates_rejected():
    sp = tiny(nodes=2)
    cands = sp.full_candidates()
    with pytest.raises(ValueError, match="expected 5 edges"):
        supernet(sp, candidates={**cands, "normal": cands["normal"] + [["none"]]})
    with pytest.raises(ValueError, match="no operation"):
        supernet(sp, candidates={**cands, "normal": [[]] + cands["normal"][1:]})
    with pytest.raises(ValueError, match="cell types"):
        supernet(sp, candidates={"normal": cands["normal"]})


def test_reductions_validated():
    with pytest.raises(ValueError, match="cell index 8 is out of range"):
        space(reductions=[2, 8])
    with pytest.raises(ValueError, match="duplicate"):
        space(reductions=[2, 2])
    with pytest.raises(ValueError, match="more than once"):
        space(operations=["none", "none"])


def test_no_normal_cell_warns():
    with pytest.warns(UserWarning, match="no normal cell"):
        space(cells=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        space(cells=3)


def spec_component(table):
    return component("search_spaces", {"name": "darts-cell", **table}, "spec.toml: [search_space]", REGS)


def test_spec_schema_defaults_and_errors():
    comp = spec_component({"operations": DARTS_OPS})
    assert comp.params == {"operations": DARTS_OPS, "nodes": 4, "cells": 8, "channels": 16,
                           "stem_multiplier": 3, "reductions": None, "drop_path": 0.0, "affine": False,
                           "alpha_init_std": 1e-3, "partial_channels": 1, "edge_normalization": False,
                           "skip_dropout": 0.0, "skip_dropout_decay": 0.0, "batched_edges": True}
    assert isinstance(comp.build(), nasreg.SearchSpace)
    with pytest.raises(SpecError, match="operations: missing required key"):
        spec_component({})
    with pytest.raises(SpecError, match=r"operations\[1\]: unknown operation 'sep_conv_9x9'"):
        spec_component({"operations": ["none", "sep_conv_9x9"]})
    with pytest.raises(SpecError, match="nodes"):
        spec_component({"operations": DARTS_OPS, "nodes": 0})
    with pytest.raises(SpecError, match="drop_path"):
        spec_component({"operations": DARTS_OPS, "drop_path": 1.0})
    with pytest.raises(SpecError, match="unknown key"):
        spec_component({"operations": DARTS_OPS, "layers": 8})
    with pytest.raises(SpecError, match="rejected its parameters: reductions: cell index 9"):
        spec_component({"operations": DARTS_OPS, "cells": 9, "reductions": [3, 9]}).build()
    assert bind(FACTORY, {"operations": ["none"], "reductions": [0]}, "w", REGS)["reductions"] == [0]


def test_drop_path_train_only_and_never_on_identity():
    from nasreg_darts.space import DropPathMixedOp

    torch.manual_seed(0)
    x = torch.randn(64, 4, 4, 4)
    ident = DropPathMixedOp(["none", "skip_connect"], 4, 1, OPS, drop_prob=0.9).train()
    torch.testing.assert_close(ident(x, torch.tensor([0.5, 0.5])), 0.5 * x)
    conv = DropPathMixedOp(["sep_conv_3x3"], 4, 1, OPS, drop_prob=0.5).train()
    out = conv(x, torch.tensor([1.0]))
    dropped = (out.flatten(1).abs().sum(1) == 0).sum().item()
    assert 10 < dropped < 54  # about half of the 64 samples
    conv.eval()
    plain = nasreg.MixedOp(["sep_conv_3x3"], 4, 1, OPS)
    assert plain.state_dict().keys() == conv.state_dict().keys()
    plain.load_state_dict(conv.state_dict())
    plain.eval()
    torch.testing.assert_close(conv(x, torch.tensor([1.0])), plain(x, torch.tensor([1.0])))


def test_supernet_drop_prob():
    net = supernet(tiny(drop_path=0.3))
    assert net.drop_prob == pytest.approx(0.3)
    net.drop_prob = 0.0
    assert net.drop_prob == 0.0
    with pytest.raises(ValueError):
        net.drop_prob = 1.0
    torch.manual_seed(0)
    net = supernet(tiny(drop_path=0.5), in_channels=1)
    x = torch.randn(4, 1, 8, 8)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))


def test_affine_adds_bn_parameters():
    assert supernet(tiny(affine=True)).num_weights() > supernet(tiny()).num_weights()


def test_build_network_builds_the_evaluation_network():
    """The evaluation network itself is tested in test_darts_network.py."""
    from pathlib import Path

    from nasreg import Genotype
    from nasreg_darts.network import DartsEvalNetwork

    genotype = Genotype.load(Path(__file__).resolve().parents[1] / "genotypes" / "darts_v2.json")
    net = tiny().build_network(genotype, ops=OPS, in_channels=3, num_classes=10, cells=3, channels=4)
    assert isinstance(net, DartsEvalNetwork) and len(net.cells) == 3
    assert net.stem[0].out_channels == 3 * 4  # the space's stem multiplier
    with pytest.raises(TypeError, match="unknown key 'depth'"):
        tiny().build_network(genotype, ops=OPS, in_channels=3, num_classes=10, depth=3)
