"""The pdarts selector (P-DARTS), the per-stage search space keys it relies on
(``Selector.stage_space_keys``) and the darts-cell space's skip dropout (``Supernet.start_epoch``).

The pruning and the skip-connection limit are tested on hand-made stage results; one shrunk
three-stage search on digits runs end to end (stages.json, the genotype and its network, the
dropout schedule the engine set) and is stopped in its second stage and resumed to the same end.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

import nasreg
from nasreg import GenotypeEdge, SpecError, StageResult, hookimpl
from nasreg_darts.cellspace import skip_dropout_rate
from nasreg_pdarts import ProgressiveSelector, limit_skip_connects, prune

OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
       "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


def tiny_spec(**selector) -> dict:
    return {
        "run": {"name": "pdarts-tiny", "seed": 0, "threads": 1, "device": "cpu"},
        "data": {"dataset": "digits", "limit": 64, "batch_size": 32},
        "search_space": {"name": "darts-cell", "operations": OPS, "nodes": 3, "channels": 4},
        "search": {"epochs": 2, "warmup_epochs": 1},
        "strategy": {"name": "darts", "w_lr": 0.05, "alpha_lr": 3e-3},
        "selector": {"name": "pdarts", "cells": [3, 4, 5], "keep_ops": [5, 3],
                     "skip_dropout": [0.0, 0.4, 0.7], **selector},
    }


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setenv("NASREG_DISABLE_PLUGINS", "plots")


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize("override, message", [
    ("selector.cells=[3, 4]",
     "[selector]: selector 'pdarts' rejected its parameters: cells: expected 3 values (one per stage; stages = 3), got 2"),
    ("selector.keep_ops=[5]", "keep_ops: expected 2 values (one per stage but the last; stages = 3), got 1"),
    ("selector.keep_ops=[3, 3]", "keep_ops: expected strictly decreasing counts, got 3 then 3 (after stages 0 and 1)"),
    ("selector.keep_ops=[5, 0]", "[selector] keep_ops[1]: expected an integer >= 1, got 0"),
    ("selector.skip_dropout=[0.0, 0.4]", "skip_dropout: expected 3 values (one per stage; stages = 3), got 2"),
    ("selector.skip_dropout=[0.0, 0.4, 1.0]", "[selector] skip_dropout[2]: expected a number >= 0 and < 1, got 1.0"),
    ("selector.cells=[3, 0, 5]", "[selector] cells[1]: expected an integer >= 1 and <= 100, got 0"),
    ("selector.max_skip_connects=-1", "[selector] max_skip_connects: expected an integer >= 0, got -1"),
    ("selector.skip_dropout_decay=-0.2", "[selector] skip_dropout_decay: expected a number >= 0, got -0.2"),
    ("search.warmup_epochs=2", "[search]: stage 0 has no joint epochs (2 warm-up of 2)"),
    # a per-stage space key the space rejects: named by the stage and the key
    ("search_space.reductions=[1, 3]",
     "[selector] stage 0 [search_space]: search space 'darts-cell' rejected its parameters: reductions: cell "
     "index 3 is out of range: there are 3 cells"),
])
def test_bad_keys_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(SpecError) as exc:
        nasreg.load_spec(tiny_spec(), overrides=[override])
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_the_defaults_are_the_papers_and_the_stage_spaces_are_built_with_the_spec():
    sel = ProgressiveSelector()
    assert (sel.num_stages, sel.cells, sel.keep_ops, sel.skip_dropout) == (3, [5, 11, 17], [5, 3], [0.0, 0.4, 0.7])
    assert (sel.skip_dropout_decay, sel.max_skip_connects, sel.inherit_weights) == (0.2, 2, False)
    spec = nasreg.load_spec(tiny_spec())
    from nasreg._core.spec import build_parts

    parts = build_parts(spec, spec.plugins.registries)
    assert [s.cells for s in parts.stage_spaces] == [3, 4, 5]
    assert [s.skip_dropout for s in parts.stage_spaces] == [0.0, 0.4, 0.7]
    assert parts.stage_space_keys[1] == {"cells": 4, "skip_dropout": 0.4, "skip_dropout_decay": 0.2}
    assert parts.space.cells == 8  # the spec's own space is left as the spec says


class NodesSelector(nasreg.Selector):
    """A selector whose second stage would change the cell itself."""

    num_stages = 2

    def stage_space_keys(self, stage):
        return {"nodes": 2} if stage == 1 else {}

    def next_candidates(self, result, run):
        return result.candidates

    def derive(self, result, run):
        raise AssertionError("never run")


class NodesPlugin:
    @hookimpl
    def register_selectors(self, register):
        register("nodes-changer", NodesSelector)


def test_a_stage_space_with_other_cell_edges_is_refused():
    spec = tiny_spec()
    spec["selector"] = {"name": "nodes-changer"}
    with pytest.raises(SpecError, match=r"\[selector\] stage 1 \[search_space\] nodes: the stage's space has other "
                                        r"cell edges or operations than the spec's"):
        nasreg.load_spec(spec, plugins=[NodesPlugin()])


# --------------------------------------------------------------------------- pruning and the skip limit


def stage_result(normal_alphas, candidates=None, stage=2):
    """A darts-cell (2 nodes: edges (0,2) (1,2) (0,3) (1,3) (2,3)) stage result; the reduce cell
    is the normal cell's copy."""
    edges = [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    cands = candidates or [["none", "skip_connect", "sep_conv_3x3"]] * 5
    return StageResult(stage=stage, candidates={"normal": cands, "reduce": cands},
                       edges={"normal": edges, "reduce": edges},
                       alphas={"normal": normal_alphas, "reduce": normal_alphas})


def test_prune_keeps_the_heaviest_ops_of_every_edge_in_the_stage_order():
    result = stage_result([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]],
                          stage=0)
    kept = prune(result, 2)
    assert kept["normal"] == [["none", "sep_conv_3x3"], ["skip_connect", "sep_conv_3x3"],
                              ["none", "sep_conv_3x3"],  # a tie (0.2, 0.2): the earlier op
                              ["none", "sep_conv_3x3"], ["none", "skip_connect"]]
    assert all(len(ops) == 2 for ct in kept for ops in kept[ct])


def darts_space():
    plugins = nasreg.load_plugins([])
    space = plugins.registries.search_spaces.get("darts-cell").factory(operations=OPS, nodes=2)
    return space, plugins.registries.operations


def test_the_skip_limit_strikes_the_weakest_skip_and_rederives_the_cell():
    space, ops = darts_space()
    # Every kept edge of the normal cell is a skip: (0,2) 0.7, (1,2) 0.6, (0,3) 0.5, (1,3) 0.8; (2,3) is weak.
    alphas = [[0.1, 0.7, 0.2], [0.1, 0.6, 0.3], [0.1, 0.5, 0.4], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2]]
    result = stage_result(alphas)
    derive = lambda r: space.derive(r, {"none"})  # noqa: E731
    before = derive(result)["normal"]
    assert [e.op for e in before] == ["skip_connect"] * 4
    kept, struck = limit_skip_connects(result, derive, lambda op: ops.get(op).get("kind") == "identity", 2, ["normal"])
    # Struck in order of weight: (0,3) at 0.5 first: its sep_conv (0.4) is then node 3's second edge
    # after (1,3)'s skip, edging out (2,3) (0.3); then (1,2) at 0.6: it keeps its sep_conv (0.3).
    assert [(s["node"], s["input"], s["weight"]) for s in struck] == [(3, 0, 0.5), (2, 1, 0.6)]
    assert kept["normal"] == [GenotypeEdge(2, 0, "skip_connect"), GenotypeEdge(2, 1, "sep_conv_3x3"),
                              GenotypeEdge(3, 1, "skip_connect"), GenotypeEdge(3, 0, "sep_conv_3x3")]
    assert kept["reduce"] == derive(result)["reduce"]  # the limit is the normal cell's only
    assert sum(e.op == "skip_connect" for e in kept["normal"]) == 2
    assert result.alphas["normal"][2][1] == 0.5  # the stage result itself is left as it was


def test_the_skip_limit_may_replace_an_edge_by_another_of_its_node():
    space, ops = darts_space()
    # Node 3 keeps (0,3) skip 0.5 and (2,3) skip 0.5; (1,3) (skip 0.45) is left out. No skip allowed:
    # striking (0,3) (the tie's lower input) brings (1,3) in, whose skip is struck next, then (2,3)'s.
    alphas = [[0.1, 0.2, 0.7], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.5, 0.45, 0.05], [0.1, 0.5, 0.4]]
    result = stage_result(alphas)
    kept, struck = limit_skip_connects(result, lambda r: space.derive(r, {"none"}),
                                       lambda op: ops.get(op).get("kind") == "identity", 0, ["normal"])
    assert [(s["node"], s["input"]) for s in struck] == [(3, 0), (3, 1), (3, 2)]
    # node 3 ends with its two best non-skip options: (0,3) conv 0.3 and (2,3) conv 0.4
    assert kept["normal"][2:] == [GenotypeEdge(3, 2, "sep_conv_3x3"), GenotypeEdge(3, 0, "sep_conv_3x3")]


def test_skips_that_cannot_be_struck_are_kept_with_a_warning():
    space, ops = darts_space()
    cands = [["none", "skip_connect"]] * 5  # no other non-zero op on any edge
    result = stage_result([[0.4, 0.6]] * 5, candidates=cands)
    with pytest.warns(UserWarning, match="the normal cell keeps 4 skip connections"):
        kept, struck = limit_skip_connects(result, lambda r: space.derive(r, {"none"}),
                                           lambda op: ops.get(op).get("kind") == "identity", 2, ["normal"])
    assert len(struck) == 5 and all(e.op == "skip_connect" for e in kept["normal"])


# --------------------------------------------------------------------------- skip dropout


def test_the_skip_dropout_schedule_is_pdarts():
    # 25 epochs, 10 warm-up, rate 0.7: linear in warm-up, then exp(-0.2 k) (train_search.py)
    assert skip_dropout_rate(0.7, 0.2, 0, 25, 10) == pytest.approx(0.7 * 24 / 25)
    assert skip_dropout_rate(0.7, 0.2, 9, 25, 10) == pytest.approx(0.7 * 15 / 25)
    assert skip_dropout_rate(0.7, 0.2, 10, 25, 10) == pytest.approx(0.7)
    assert skip_dropout_rate(0.7, 0.2, 24, 25, 10) == pytest.approx(0.7 * math.exp(-2.8))
    assert skip_dropout_rate(0.7, 0.0, 24, 25, 10) == 0.7  # no decay: constant
    assert skip_dropout_rate(0.0, 0.2, 3, 25, 10) == 0.0


class Mirror(torch.nn.Module):
    """An identity-kind op of another name: recognised by its metadata, not its name."""

    def forward(self, x):
        return x


class MirrorPlugin:
    @hookimpl
    def register_operations(self, register):
        register("mirror", lambda C, stride, affine: Mirror() if stride == 1 else nasreg.FactorizedReduce(C, C),
                 is_zero=False, parameter_free=True, kind="identity")


def test_skip_dropout_drops_only_identity_kind_ops_on_stride_one_edges_and_decays():
    plugins = nasreg.load_plugins([MirrorPlugin()])
    ops = plugins.registries.operations
    space = plugins.registries.search_spaces.get("darts-cell").factory(
        operations=["none", "mirror", "avg_pool_3x3", "sep_conv_3x3"], nodes=2, cells=3, channels=4,
        skip_dropout=0.5, skip_dropout_decay=0.2)
    model = space.build_supernet(space.full_candidates(), ops=ops, in_channels=1, num_classes=10)
    hooked = {id(m) for m in model._skip_dropout.hooked}
    for cell in model.cells:
        for edge in cell.edges:
            for name, module in edge.ops.items():
                assert (id(module) in hooked) == (name == "mirror" and edge.stride == 1), (cell.cell_type, name)
    assert len(hooked) == 5 + 2  # the normal cell's 5 edges, each reduce cell's one stride-1 edge
    mirror = next(m for m in model.modules() if isinstance(m, Mirror))
    x = torch.ones(2, 4, 8, 8)
    model.start_epoch(2, 4, 1)  # joint epoch 1: 0.5 * exp(-0.2)
    assert model.skip_dropout_rate == pytest.approx(0.5 * math.exp(-0.2))
    model.train()
    y = mirror(x)
    kept = y[y != 0]
    assert 0 < kept.numel() < x.numel()
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - model.skip_dropout_rate)))
    model.eval()
    assert torch.equal(mirror(x), x)
    pool = next(m for cell in model.cells for e in cell.edges for n, m in e.ops.items() if n == "avg_pool_3x3")
    model.train()
    torch.manual_seed(0)
    a = pool(x)
    torch.manual_seed(0)
    assert torch.equal(a, pool(x))  # no dropout on other ops
    # in the supernet's own forward too: the same batch, the same BN statistics, only the rate differs
    batch = torch.randn(4, 1, 8, 8)
    outs = []
    for rate in (0.0, 0.5):
        model._skip_dropout.p = rate
        torch.manual_seed(0)
        outs.append(model(batch))
    assert not torch.allclose(outs[0], outs[1])
    model._skip_dropout.p = 0.0
    torch.manual_seed(0)
    assert torch.equal(model(batch), outs[0])
    no_drop = plugins.registries.search_spaces.get("darts-cell").factory(operations=OPS, nodes=2, cells=3)
    assert no_drop.build_supernet(no_drop.full_candidates(), ops=ops, in_channels=1,
                                  num_classes=10)._skip_dropout.hooked == []


# --------------------------------------------------------------------------- a whole search


class StopInStage:
    """Asks the run to stop (as Ctrl-C does) after one epoch of a stage."""

    def __init__(self, stage: int | None):
        self.stage = stage

    @hookimpl
    def on_epoch_end(self, run, stage, epoch, metrics):
        if stage == self.stage and epoch == 0:
            os.kill(os.getpid(), signal.SIGINT)


def comparable(run_dir: Path):
    metrics = [{k: v for k, v in json.loads(line).items() if "seconds" not in k and "memory" not in k}
               for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    genotype = json.loads((run_dir / "genotype.json").read_text())
    stages = [{k: v for k, v in s.items() if "seconds" not in k}
              for s in json.loads((run_dir / "stages.json").read_text())]
    return metrics, genotype["cells"], genotype["provenance"], stages


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The shrunk search, uninterrupted, with the skip dropout rate of every epoch start."""
    rates = []
    from nasreg_darts.space import DartsSupernet

    original = DartsSupernet.start_epoch

    def record(self, epoch, epochs, warmup=0):
        original(self, epoch, epochs, warmup)
        rates.append((len(self.cells), epoch, self.skip_dropout_rate))

    DartsSupernet.start_epoch = record
    threads = torch.get_num_threads()
    old = os.environ.get("NASREG_DISABLE_PLUGINS")
    os.environ["NASREG_DISABLE_PLUGINS"] = "plots"
    try:
        out = tmp_path_factory.mktemp("pdarts") / "run"
        result = nasreg.search(tiny_spec(), out=out, preflight=False)
    finally:
        DartsSupernet.start_epoch = original
        torch.set_num_threads(threads)
        if old is None:
            os.environ.pop("NASREG_DISABLE_PLUGINS")
        else:
            os.environ["NASREG_DISABLE_PLUGINS"] = old
    return result, out, rates


@pytest.mark.slow
def test_a_shrunk_search_deepens_the_supernet_and_shrinks_the_candidates(searched):
    result, out, rates = searched
    stages = json.loads((out / "stages.json").read_text())
    assert [s["space_keys"] for s in stages] == [
        {"cells": c, "skip_dropout": p, "skip_dropout_decay": 0.2} for c, p in ((3, 0.0), (4, 0.4), (5, 0.7))]
    assert [sorted({len(ops) for ct in s["candidates"] for ops in s["candidates"][ct]}) for s in stages] == [
        [8], [5], [3]]
    registries = nasreg.load_plugins([]).registries
    for s in stages:  # each stage's supernet is its own space's: that many cells over its candidates
        space = registries.search_spaces.get("darts-cell").factory(operations=OPS, nodes=3, channels=4,
                                                                   cells=s["space_keys"]["cells"])
        net = space.build_supernet(s["candidates"], ops=registries.operations, in_channels=1, num_classes=10)
        assert net.num_weights() == s["num_weights"]
    for before, after in zip(stages, stages[1:]):  # every later set is a subset of the one before
        for ct in before["candidates"]:
            assert all(set(a) <= set(b) for a, b in zip(after["candidates"][ct], before["candidates"][ct]))
    summary = json.loads((out / "summary.json").read_text())
    assert [s["space_keys"]["cells"] for s in summary["stages"]] == [3, 4, 5]
    # The engine set the rate at every epoch start: 2 epochs, 1 warm-up: p * 1/2, then p.
    assert rates == [(3, 0, 0.0), (3, 1, 0.0), (4, 0, 0.2), (4, 1, 0.4), (5, 0, 0.35), (5, 1, 0.7)]
    genotype = result.genotype
    assert genotype.provenance["selector"] == "pdarts" and genotype.provenance["stages"] == 3
    assert genotype.provenance["cells_per_stage"] == [3, 4, 5]
    normal = genotype.cells["normal"].edges
    assert len(normal) == 6 and sum(e.op == "skip_connect" for e in normal) <= 2
    edges = [(i, j) for j in range(2, 5) for i in range(j)]  # darts-cell, 3 nodes
    last = dict(zip(edges, stages[2]["candidates"]["normal"]))
    assert all(e.op in last[(e.input, e.node)] and e.op != "none" for e in normal)
    net = nasreg.build_network(genotype, spec=tiny_spec(), cells=3, channels=4)
    net.eval()
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.slow
def test_a_stopped_search_resumes_to_the_uninterrupted_end(searched, tmp_path):
    _, reference, _ = searched
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        with pytest.raises(nasreg.Interrupted, match="interrupted after stage 1, epoch 0"):
            nasreg.search(tiny_spec(), out=out, preflight=False, plugins=[StopInStage(1)])
        assert not (out / "genotype.json").exists()
        nasreg.resume(out, preflight=False)
    finally:
        torch.set_num_threads(threads)
    assert comparable(out) == comparable(reference)


def test_a_skip_limit_cell_the_space_lacks_is_an_error_at_the_first_selection():
    sel = ProgressiveSelector(skip_limit_cells=["norml"])
    result = stage_result([[0.2, 0.3, 0.5]] * 5, stage=0)
    with pytest.raises(SpecError, match=r"\[selector\] skip_limit_cells: the search space has no 'norml' cell "
                                        r"\(its cell types: normal, reduce\)"):
        sel.next_candidates(result, run=None)
    # keep_ops 5 of an edge's 3 ops: every op stays
    assert ProgressiveSelector().next_candidates(result, run=None)["normal"] == result.candidates["normal"]
