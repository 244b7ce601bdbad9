"""``enas`` (ENAS, Pham et al. 2018): its keys, darts-cell's decisions, a sampled child computing only
its ops in the shared supernet, the controller's REINFORCE step with ENAS's logit shaping, a tiny
search end to end (finalists through the local executor, a genotype nasreg builds) and resume."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

import nasreg
from nasreg.cli import main
from nasreg_darts.cellspace import DartsCellSpace
from nasreg_rl.controller import Controller, reinforce_update
from nasreg_rl.enas import EnasStrategy, child_active_ops

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "enas.toml"
REGS = nasreg.load_plugins().registries
OPS = ["sep_conv_3x3", "avg_pool_3x3", "skip_connect"]

#: 2 epochs of 3 shared-weight steps (48 train images), 2 controller updates of 2 children each,
#: 4 final samples, 2 finalists of 1 epoch: a few seconds.
TINY = ["run.threads=1", "run.device=cpu", "data.limit=96", "data.batch_size=16", "strategy.epochs=2",
        "strategy.controller_steps=2", "strategy.controller_aggregate=2", "strategy.final_samples=4",
        "strategy.finalists=2", "strategy.child_epochs=1", "strategy.child_batch_size=16",
        "search_space.cells=3", "search_space.nodes=2", "search_space.channels=4",
        "search_space.operations=[\"sep_conv_3x3\", \"avg_pool_3x3\", \"skip_connect\"]",
        "evaluate.epochs=1", "evaluate.limit=32", "evaluate.batch_size=16", "evaluate.cells=3",
        "evaluate.channels=4"]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def invoke(*args, sets=()):
    argv = [str(a) for a in args]
    for s in sets:
        argv += ["--set", s]
    return CliRunner().invoke(main, argv, env={"COLUMNS": "200"})


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_spec_keys_are_checked_and_the_shipped_spec_validates():
    assert invoke("validate", SPEC).exit_code == 0
    line = one_line_error(invoke("validate", SPEC, sets=["strategy.temperatur=2"]))
    assert "[strategy] temperatur: unknown key; did you mean 'temperature'?" in line
    line = one_line_error(invoke("validate", SPEC, sets=["strategy.baseline_decay=1.0"]))
    assert "[strategy] baseline_decay: expected a number >= 0 and < 1, got 1.0" in line
    line = one_line_error(invoke("validate", SPEC, sets=["strategy.finalists=0"]))
    assert "[strategy] finalists: expected an integer >= 1" in line
    line = one_line_error(invoke("validate", SPEC, sets=["strategy.finalists=11"]))
    assert "finalists: 11 finalists cannot come from 10 final_samples" in line


def test_darts_cell_decisions_two_distinct_inputs_and_a_non_zero_op_per_node():
    space = DartsCellSpace(["none", *OPS], nodes=3)
    decisions = space.decisions()
    # per cell type: node 2 (input 1 of 2, ops), node 3 (3, 2, ops), node 4 (4, 3, ops); node 2's
    # second input has one choice and is no decision; "none" is no choice.
    assert [n for _name, n in decisions] == [2, 3, 3, 3, 2, 3, 3, 4, 3, 3, 3] * 2
    assert space.sampled_operations == OPS
    assert space.search_space_size() == math.prod(n for _name, n in decisions)
    last = [n - 1 for _name, n in decisions]
    genotype = space.genotype_from_choices(last)
    for ct in ("normal", "reduce"):
        edges = genotype.cells[ct].edges
        assert [(e.node, e.input, e.op) for e in edges] == [
            (2, 1, "skip_connect"), (2, 0, "skip_connect"), (3, 2, "skip_connect"), (3, 1, "skip_connect"),
            (4, 3, "skip_connect"), (4, 2, "skip_connect")]
    genotype = space.genotype_from_choices([0] * len(decisions))
    assert [(e.node, e.input) for e in genotype.cells["normal"].edges] == [(2, 0), (2, 1), (3, 0), (3, 1),
                                                                          (4, 0), (4, 1)]
    assert all(e.op == "sep_conv_3x3" for e in genotype.cells["normal"].edges)
    with pytest.raises(ValueError, match="expected 22 choices"):
        space.genotype_from_choices([0])
    with pytest.raises(ValueError, match="choice 2 is out of range"):
        space.genotype_from_choices([2] + [0] * 21)


def _strategy(space, **keys):
    strategy = EnasStrategy(**keys)
    run = SimpleNamespace(space=space, spec=SimpleNamespace(search_space=SimpleNamespace(name="darts-cell"), path="x"),
                          registries=REGS, device=torch.device("cpu"), seed=0)
    bundle = SimpleNamespace(in_channels=1, num_classes=10)
    strategy.space = space
    torch.manual_seed(0)
    strategy.build(run, bundle)
    return strategy


def test_a_sampled_child_computes_only_its_ops(monkeypatch):
    space = DartsCellSpace(["none", *OPS], nodes=3, cells=3, channels=4)
    strategy = _strategy(space)
    model = strategy.model
    where = {id(module): (cell.cell_type, k, name) for cell in model.cells
             for k, edge in enumerate(cell.edges) for name, module in edge.ops.items()}
    calls: list[tuple[str, int, str]] = []
    op_term = nasreg.MixedOp.op_term  # every op of a mixed op is computed through it

    def counting(module, x, scale, x_relu):
        calls.append(where[id(module)])
        return op_term(module, x, scale, x_relu)

    monkeypatch.setattr(nasreg.MixedOp, "op_term", staticmethod(counting))
    choices = strategy.sample(1)[0]
    genotype = strategy.use_child(choices)
    active = child_active_ops(space, strategy.candidates, genotype)
    out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    edges = space.edges()
    expected = {(ct, edges[ct].index((e.input, e.node)), e.op) for ct, cg in genotype.cells.items() for e in cg.edges}
    assert set(calls) == expected
    n_normal = sum(cell.cell_type == "normal" for cell in model.cells)  # cells 0 (normal), 1 and 2 (reduce)
    assert len(calls) == len(model.cells) * 6  # 2 ops x 3 nodes per cell, nothing else
    assert n_normal == 1
    assert sum(len(a) for a in active["normal"]) == 6 and sum(not a for a in active["normal"]) == 3
    # Only the child's ops get gradients.
    out.sum().backward()
    cell = model.cells[0]
    for k, edge in enumerate(cell.edges):
        for name, module in edge.ops.items():
            grads = [p.grad for p in module.parameters()]
            used = (cell.cell_type, k, name) in expected
            if grads:
                assert any(g is not None and bool(g.abs().sum() > 0) for g in grads) == used, (k, name)


def test_the_controller_logits_are_shaped_and_reinforce_moves_toward_the_rewarded_choice():
    torch.manual_seed(0)
    c = Controller([4, 4], hidden_size=16, temperature=5.0, tanh_constant=[2.5, 1.0])
    with torch.no_grad():
        c.heads[0].bias.copy_(torch.tensor([100.0, 0, 0, 0]))  # a runaway logit, bounded by the tanh
    p = c.step_probabilities([0, 0])
    # tanh(100 / 5) = 1: the logit is 2.5, the others near 0 (small initial weights), not 20 vs 0
    assert p[0][0] == pytest.approx(math.exp(2.5) / (math.exp(2.5) + 3), abs=0.02)
    assert max(p[1]) <= math.exp(1.0) / (math.exp(1.0) + 3 * math.exp(-1.0)) + 1e-6

    torch.manual_seed(1)
    c = Controller([3, 3], hidden_size=16, temperature=5.0, tanh_constant=2.5)
    opt = torch.optim.Adam(c.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    before = c.step_probabilities([2, 0])[0][2]
    baseline = None
    for _ in range(30):
        actions = c.sample(8, g)
        rewards = [1.0 if int(a[0]) == 2 else 0.0 for a in actions]
        baseline = reinforce_update(c, opt, actions, rewards, baseline, decay=0.9)["baseline"]
    after = c.step_probabilities([2, 0])[0][2]
    assert before == pytest.approx(1 / 3, abs=0.05) and after > 0.8


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_a_tiny_search_end_to_end_with_finalists_through_the_executor(tmp_path):
    run_dir = tmp_path / "run"
    result = invoke("run", SPEC, "--out", run_dir, "-q", sets=TINY)
    assert result.exit_code == 0, result.output
    epochs = [json.loads(line) for line in (run_dir / "enas.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert all(0 <= e["train_acc"] <= 1 and 0 <= e["mean_reward"] <= 1 for e in epochs)
    assert epochs[1]["lr"] < epochs[0]["lr"] == pytest.approx(0.05)
    controller = json.loads((run_dir / "controller.json").read_text())
    assert len(controller["updates"]) == 4 and controller["temperature"] == 5.0
    samples = json.loads((run_dir / "samples.json").read_text())["samples"]
    assert len(samples) == 4 and [s["reward"] for s in samples] == sorted((s["reward"] for s in samples), reverse=True)
    finalists = [json.loads(line) for line in (run_dir / "finalists.jsonl").read_text().splitlines()]
    assert [f["index"] for f in finalists] == [0, 1]
    assert all(f["params"] > 0 and f["seconds"] > 0 and 0 <= f["reward"] <= 1 for f in finalists)
    assert finalists[0]["shared_reward"] == samples[0]["reward"]
    summary = summary_of(run_dir)
    genotype = nasreg.load_genotype(run_dir / "genotype.json")
    best = max(finalists, key=lambda f: (f["reward"], f["shared_reward"], -f["index"]))
    assert genotype.provenance["strategy"] == "enas" and genotype.provenance["finalist"] == best["index"]
    assert summary["final_val_acc"] == best["reward"] and len(summary["finalists"]) == 2
    assert nasreg.Genotype.from_dict(best["genotype"]).cells == genotype.cells
    # The finalists' network: the supernet's size (3 cells, 4 channels); the genotype builds.
    net = nasreg.build_network(genotype, spec=run_dir / "spec.toml", cells=3, channels=4)
    assert sum(p.numel() for p in net.parameters()) == best["params"]
    assert net.eval()(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert json.loads((run_dir / "eval" / "results.json").read_text())["test_acc"] is not None


class _StopAfterFirstEpoch(nasreg.Reporter):
    def epoch_end(self, metrics):
        raise KeyboardInterrupt


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.slow
def test_resume_after_an_interruption_equals_the_uninterrupted_run(tmp_path):
    sets = [s for s in TINY if not s.startswith("evaluate")]
    full = tmp_path / "full"
    nasreg.search(SPEC, overrides=sets, out=full, evaluate=False)
    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        nasreg.search(SPEC, overrides=sets, out=stopped, evaluate=False, progress=_StopAfterFirstEpoch())
    assert len((stopped / "enas.jsonl").read_text().splitlines()) == 1 and not (stopped / "genotype.json").exists()
    nasreg.resume(stopped, evaluate=False)

    def lines(run_dir, name):
        return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]

    assert _strip(lines(stopped, "enas.jsonl")) == _strip(lines(full, "enas.jsonl"))
    assert [(f["choices"], f["reward"]) for f in lines(stopped, "finalists.jsonl")] == \
        [(f["choices"], f["reward"]) for f in lines(full, "finalists.jsonl")]
    assert json.loads((stopped / "samples.json").read_text()) == json.loads((full / "samples.json").read_text())
    assert json.loads((stopped / "controller.json").read_text())["updates"] == \
        json.loads((full / "controller.json").read_text())["updates"]
    assert nasreg.load_genotype(stopped / "genotype.json").cells == nasreg.load_genotype(full / "genotype.json").cells
