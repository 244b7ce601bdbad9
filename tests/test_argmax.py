"""The argmax selector (DARTS derivation) and the shared genotype helper."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import nasreg
from nasreg.errors import GenotypeError, SpecError
from nasreg.params import component
from nasreg.plugins import load_plugins
from nasreg.run import Run
from nasreg.spec import validate
from nasreg_darts.selector import ArgmaxSelector, genotype_from_result

PLUGINS = load_plugins()
REGS = PLUGINS.registries
DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


def make_space(nodes=4, operations=DARTS_OPS):
    return REGS.search_spaces.get("darts-cell").factory(list(operations), nodes=nodes, cells=3, channels=4)


def fake_run(space, seed=5, digest="feedfacecafebeef"):
    """The parts of :class:`nasreg.run.Run` a selector uses."""
    spec = SimpleNamespace(digest=lambda: digest, search_space=SimpleNamespace(name="darts-cell"))
    return SimpleNamespace(spec=spec, seed=seed, space=space, registries=REGS,
                           zero_ops=lambda: {e.name for e in REGS.operations if e.get("is_zero", False)})


def result_for(space, weights_of, stage=0, candidates=None):
    """A StageResult whose alphas are ``weights_of(cell_type, edge_index, candidates)``."""
    candidates = candidates or space.full_candidates()
    alphas = {ct: [weights_of(ct, i, c) for i, c in enumerate(edges)] for ct, edges in candidates.items()}
    return nasreg.StageResult(stage=stage, candidates=candidates, edges=space.edges(), alphas=alphas)


def one_hot(ops, strong, value, rest=0.01):
    return [value if op == strong else rest for op in ops]


def test_registered_and_schema():
    entry = REGS.selectors.get("argmax")
    assert entry.plugin == "darts" and entry.description
    comp = component("selectors", {"name": "argmax"}, "spec.toml: [selector]", REGS)
    sel = comp.build()
    assert isinstance(sel, nasreg.Selector) and sel.num_stages == 1
    with pytest.raises(SpecError, match="unknown key"):
        component("selectors", {"name": "argmax", "k": 3}, "spec.toml: [selector]", REGS)


def test_darts_strategy_registered():
    entry = REGS.strategies.get("darts")
    assert entry.plugin == "darts"
    assert entry.description == "DARTS bilevel optimization, first or second order"


def test_picks_top2_edges_by_strongest_non_none_op_and_ignores_none():
    space = make_space(nodes=3)  # edges: (0,2) (1,2) | (0,3) (1,3) (2,3) | (0,4) (1,4) (2,4) (3,4)
    plan = {
        # edge index: (op, weight); every edge also has `none` at 0.9, larger than anything else
        0: ("sep_conv_3x3", 0.05), 1: ("skip_connect", 0.04),
        2: ("max_pool_3x3", 0.02), 3: ("dil_conv_5x5", 0.06), 4: ("avg_pool_3x3", 0.08),
        5: ("sep_conv_5x5", 0.07), 6: ("skip_connect", 0.03), 7: ("dil_conv_3x3", 0.03), 8: ("sep_conv_3x3", 0.08),
    }

    def weights(ct, i, ops):
        op, w = plan[i]
        out = one_hot(ops, op, w)
        out[ops.index("none")] = 0.9
        return out

    genotype = ArgmaxSelector().derive(result_for(space, weights), fake_run(space))
    for ct in ("normal", "reduce"):
        got = [(e.node, e.input, e.op) for e in genotype.cells[ct].edges]
        assert got == [(2, 0, "sep_conv_3x3"), (2, 1, "skip_connect"),
                       (3, 1, "dil_conv_5x5"), (3, 2, "avg_pool_3x3"),
                       (4, 0, "sep_conv_5x5"), (4, 3, "sep_conv_3x3")]
        assert all(e.op != "none" for e in genotype.cells[ct].edges)
        assert genotype.cells[ct].concat == [2, 3, 4]
    assert genotype.space == "darts-cell"


def test_cell_types_are_derived_independently():
    space = make_space(nodes=1)

    def weights(ct, i, ops):
        return one_hot(ops, "max_pool_3x3" if ct == "reduce" else "sep_conv_3x3", 0.5)

    g = ArgmaxSelector().derive(result_for(space, weights), fake_run(space))
    assert {e.op for e in g.cells["normal"].edges} == {"sep_conv_3x3"}
    assert {e.op for e in g.cells["reduce"].edges} == {"max_pool_3x3"}


def test_per_edge_candidates_are_respected():
    space = make_space(nodes=2)
    cands = {ct: [["none", "skip_connect"], ["sep_conv_3x3"], ["avg_pool_3x3", "dil_conv_3x3"],
                  ["none"], ["max_pool_3x3", "sep_conv_5x5"]] for ct in ("normal", "reduce")}

    def weights(ct, i, ops):
        return [1.0 / len(ops) + 0.01 * k for k in range(len(ops))]  # the last op is the strongest

    g = ArgmaxSelector().derive(result_for(space, weights, stage=1, candidates=cands), fake_run(space))
    # node 3: edge (1,3) has only `none` and can never be kept
    assert [(e.node, e.input, e.op) for e in g.cells["normal"].edges] == [
        (2, 0, "skip_connect"), (2, 1, "sep_conv_3x3"), (3, 0, "dil_conv_3x3"), (3, 2, "sep_conv_5x5")]
    assert g.provenance["stages"] == 2


def test_provenance_and_helper():
    space = make_space(nodes=2)
    result = result_for(space, lambda ct, i, ops: one_hot(ops, "sep_conv_3x3", 0.5))
    run = fake_run(space, seed=11)
    g = ArgmaxSelector().derive(result, run)
    assert g.provenance == {"spec_hash": "feedfacecafebeef", "nasreg_version": nasreg.__version__,
                            "seed": 11, "selector": "argmax", "stages": 1}
    g2 = genotype_from_result(result, run, "my-selector", groups=[1, 2])
    assert g2.provenance["selector"] == "my-selector" and g2.provenance["groups"] == [1, 2]
    assert g2.cells["normal"].edges == g.cells["normal"].edges


def test_genotype_json_round_trip_and_validation(tmp_path):
    space = make_space()
    torch.manual_seed(0)
    net = space.build_supernet(space.full_candidates(), ops=REGS.operations, in_channels=3, num_classes=10)
    result = nasreg.StageResult(stage=0, candidates=net.candidates, edges=space.edges(),
                                alphas=net.alpha_softmax())
    g = ArgmaxSelector().derive(result, fake_run(space))
    assert all(len(edges) == 2 for cell in g.cells.values() for edges in cell.by_node().values())
    assert len(g.cells["normal"].edges) == 8
    path = g.save(tmp_path / "genotype.json")
    json.loads(path.read_text())  # plain JSON
    loaded = nasreg.Genotype.load(path, registries=REGS)
    assert loaded.to_dict() == g.to_dict()
    assert loaded.cells == g.cells and loaded.provenance == g.provenance

    data = g.to_dict()
    data["cells"]["normal"]["edges"][0]["op"] = "sep_conv_9x9"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(GenotypeError, match="sep_conv_9x9"):
        nasreg.Genotype.load(bad, registries=REGS)


def test_with_a_real_run(tmp_path):
    raw = {
        "run": {"seed": 4, "device": "cpu"},
        "data": {"dataset": "digits"},
        "search_space": {"name": "darts-cell", "operations": DARTS_OPS, "nodes": 2, "cells": 3, "channels": 4},
        "strategy": {"name": "darts"},
        "selector": {"name": "argmax"},
    }
    spec = validate(raw, Path("spec.toml"), REGS)
    space = spec.search_space.build()
    run = Run(spec=spec, plugins=PLUGINS, run_dir=tmp_path, device=torch.device("cpu"), space=space)
    result = result_for(space, lambda ct, i, ops: one_hot(ops, "dil_conv_3x3", 0.3))
    g = spec.selector.build().derive(result, run)
    assert g.space == "darts-cell"
    assert g.provenance["spec_hash"] == spec.digest() and g.provenance["seed"] == 4
    assert {e.op for c in g.cells.values() for e in c.edges} == {"dil_conv_3x3"}
    g.validate(REGS)
