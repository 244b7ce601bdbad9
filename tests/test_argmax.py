"""The DARTS derivation (nasreg_darts.derive, the darts-cell space's ``derive``) and the argmax selector."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import nasreg
from nasreg._core.errors import GenotypeError, SpecError
from nasreg._core.params import component
from nasreg._core.plugins import load_plugins
from nasreg._core.run import Run
from nasreg._core.spec import validate
from nasreg import GenotypeEdge
from nasreg_darts.derive import derive_topk
from nasreg_darts.selector import ArgmaxSelector

PLUGINS = load_plugins()
REGS = PLUGINS.registries
DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


def make_space(nodes=4, operations=DARTS_OPS):
    return REGS.search_spaces.get("darts-cell").factory(list(operations), nodes=nodes, cells=3, channels=4)


def fake_run(space, seed=5, digest="feedfacecafebeef"):
    """The parts of :class:`nasreg._core.run.Run` a selector uses."""
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
        assert got == [(2, 0, "sep_conv_3x3"), (2, 1, "skip_connect"),  # stronger edge first
                       (3, 2, "avg_pool_3x3"), (3, 1, "dil_conv_5x5"),
                       (4, 3, "sep_conv_3x3"), (4, 0, "sep_conv_5x5")]
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
    # node 2: sep_conv_3x3 (1.0, alone on its edge) outweighs skip_connect (0.51): listed first;
    # node 3: edge (1,3) has only `none` and can never be kept, the other two tie (lower input first)
    assert [(e.node, e.input, e.op) for e in g.cells["normal"].edges] == [
        (2, 1, "sep_conv_3x3"), (2, 0, "skip_connect"), (3, 0, "dil_conv_3x3"), (3, 2, "sep_conv_5x5")]
    assert g.provenance["stages"] == 2


def test_provenance():
    space = make_space(nodes=2)
    result = result_for(space, lambda ct, i, ops: one_hot(ops, "sep_conv_3x3", 0.5))
    g = ArgmaxSelector().derive(result, fake_run(space, seed=11))
    assert g.provenance == {"spec_hash": "feedfacecafebeef", "nasreg_version": nasreg.__version__,
                            "seed": 11, "selector": "argmax", "stages": 1}


def test_argmax_applies_the_space_derivation_rule():
    """argmax holds no rule: what the space's derive keeps is the genotype (here a k=1 space)."""
    space = make_space(nodes=2)
    space.inputs_per_node = 1
    result = result_for(space, lambda ct, i, ops: one_hot(ops, "sep_conv_3x3", 0.1 * (i + 1)))
    g = ArgmaxSelector().derive(result, fake_run(space))
    assert [(e.node, e.input) for e in g.cells["normal"].edges] == [(2, 1), (3, 2)]


def test_a_space_without_a_derivation_rule_is_a_one_line_error():
    class NoRule(nasreg.SearchSpace):
        operations = ["sep_conv_3x3"]

        def edges(self):
            return {"normal": [(0, 1)]}

        def concat(self, cell_type):
            return [1]

        def build_supernet(self, candidates, *, ops, in_channels, num_classes):
            raise AssertionError("not built")

    space = NoRule()
    with pytest.raises(SpecError, match=r"^\[search_space\]: NoRule has no derivation rule .*\[selector\]"):
        ArgmaxSelector().derive(result_for(space, lambda ct, i, ops: [1.0]), fake_run(space))


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


# --- derive_topk: the rule itself ---------------------------------------------------------


def test_derive_topk_keeps_the_strongest_non_zero_edges_per_node_stronger_first():
    edges = {"normal": [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]}
    cands = {"normal": [["none", "conv", "skip"]] * 5}
    alphas = {"normal": [[0.9, 0.05, 0.05],   # (0,2): none dominates, best real op 0.05
                         [0.1, 0.2, 0.7],     # (1,2): skip 0.7
                         [0.1, 0.5, 0.4],     # (0,3): conv 0.5
                         [0.1, 0.45, 0.45],   # (1,3): tie conv/skip 0.45 -> conv (earlier)
                         [0.0, 0.3, 0.6]]}    # (2,3): skip 0.6
    out = derive_topk(alphas, cands, edges, zero_ops={"none"}, k=2)
    assert out["normal"] == [GenotypeEdge(2, 1, "skip"), GenotypeEdge(2, 0, "conv"),
                             GenotypeEdge(3, 2, "skip"), GenotypeEdge(3, 0, "conv")]
    out1 = derive_topk(alphas, cands, edges, zero_ops={"none"}, k=1)
    assert out1["normal"] == [GenotypeEdge(2, 1, "skip"), GenotypeEdge(3, 2, "skip")]


def test_derive_topk_breaks_ties_between_edges_by_the_lower_input():
    edges = {"c": [(0, 3), (1, 3), (2, 3)]}
    cands = {"c": [["conv"], ["conv"], ["conv"]]}
    out = derive_topk({"c": [[0.2], [0.5], [0.5]]}, cands, edges, zero_ops=set(), k=2)
    assert out["c"] == [GenotypeEdge(3, 1, "conv"), GenotypeEdge(3, 2, "conv")]


def test_derive_topk_never_keeps_an_edge_with_only_zero_ops():
    out = derive_topk({"c": [[1.0], [0.2, 0.8]]}, {"c": [["none"], ["none", "conv"]]},
                      {"c": [(0, 2), (1, 2)]}, zero_ops={"none"})
    assert out["c"] == [GenotypeEdge(2, 1, "conv")]


def reference_parse(W, ops, steps):
    """The DARTS reference derivation (``_parse`` of ``model_search.py``, quark0/darts), restated:
    ``W`` is one cell's weights, edges in its order (node 2's two, node 3's three, ...); a node's
    edges are sorted (stably) by their strongest non-``none`` weight, descending, the first two
    kept, each with its strongest non-``none`` op. Returns the gene, [(op, input), ...]."""
    none = ops.index("none")
    gene, start = [], 0
    for i in range(steps):
        rows = W[start:start + i + 2]
        strength = [max(w for k, w in enumerate(row) if k != none) for row in rows]
        for j in sorted(range(i + 2), key=lambda x: -strength[x])[:2]:
            best = max((k for k in range(len(ops)) if k != none), key=lambda k: (rows[j][k], -k))
            gene.append((ops[best], j))
        start += i + 2
    return gene


def test_the_darts_cell_derivation_equals_the_reference_parse_on_random_weights():
    space = make_space(nodes=4)
    rng = random.Random(0)
    for trial in range(50):
        # Rounded weights: ties between edges and between ops happen too.
        result = result_for(space, lambda ct, i, ops: [round(rng.random(), 1) for _ in ops])
        kept = space.derive(result, {"none"})
        for ct in ("normal", "reduce"):
            expected = reference_parse(result.alphas[ct], DARTS_OPS, steps=4)
            assert [(e.op, e.input) for e in kept[ct]] == expected, (trial, ct)
            assert [e.node for e in kept[ct]] == [2, 2, 3, 3, 4, 4, 5, 5]
