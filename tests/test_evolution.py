"""``evolution`` (regularized evolution, Real et al. 2019): its keys, the tournament, aging (the
oldest dies, not the worst), one-decision mutations, a shrunk search end to end in this process,
in two worker processes and through a spec's ``[executor]``, and resuming a stopped search."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import nasreg
from nasreg.cli import main
from nasreg_nasnet.space import NasnetCellSpace
from nasreg_rl.evolution import EvolutionStrategy, decision_kinds, mutate, tournament

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "evolution.toml"
PNG = b"\x89PNG\r\n\x1a\n"

#: 8 children (a population of 4, then 4 cycles), two a round; each child 80 images, 3 steps.
TINY = ["run.threads=1", "run.device=cpu", "data.limit=160", "search_space.blocks=2", "search_space.cells=2",
        "strategy.population=4", "strategy.sample_size=2", "strategy.cycles=8", "strategy.children_per_round=2",
        "strategy.child_epochs=1", "strategy.child_batch_size=32", "strategy.workers=1",
        "evaluate.epochs=1", "evaluate.limit=64", "evaluate.batch_size=32", "evaluate.cells=2",
        "evaluate.channels=8"]
OPS = ["skip_connect", "sep_conv_3x3", "max_pool_3x3", "avg_pool_3x3"]


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


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, message", [
    ("strategy.sample_size=9", "[strategy]: search strategy 'evolution' rejected its parameters: sample_size: "
                               "expected at most population (8), got 9"),
    ("strategy.cycles=8", "cycles: expected more than population (8)"),
    ("strategy.population=1", "[strategy] population: expected an integer >= 2"),
    ("strategy.identity_probability=1.0", "[strategy] identity_probability: expected a number >= 0 and < 1"),
    ("strategy.children_per_round=0", "[strategy] children_per_round: expected an integer >= 1"),
    ("strategy.populaton=8", "[strategy] populaton: unknown key; did you mean 'population'?"),
])
def test_bad_keys_are_one_line_errors_naming_the_key(key, message):
    result = invoke("validate", SPEC, sets=[key])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_the_shipped_spec_validates_with_every_key_resolved():
    assert invoke("validate", SPEC).exit_code == 0
    resolved = nasreg.load_spec(SPEC).resolved()["strategy"]
    assert {k: resolved[k] for k in ("population", "sample_size", "cycles", "children_per_round")} == {
        "population": 8, "sample_size": 3, "cycles": 32, "children_per_round": 2}
    assert EvolutionStrategy().round_sizes() == [1] * 160  # defaults: P = 40 random, then 120 cycles
    assert EvolutionStrategy(population=5, sample_size=2, cycles=12, children_per_round=2).round_sizes() == \
        [2, 2, 1, 2, 2, 2, 1]  # the population's rounds, then the cycles'


# --- the parts --------------------------------------------------------------------------------------


class _Draws:
    """A generator stub whose ``integers`` gives the indices it was handed."""

    def __init__(self, indices):
        self.indices = list(indices)

    def integers(self, n, size=None):
        assert all(0 <= i < n for i in self.indices)
        return np.array(self.indices[:size])


def test_the_tournament_picks_the_best_of_the_sample_not_of_the_population():
    population = [{"index": i, "reward": r} for i, r in enumerate([0.9, 0.2, 0.5, 0.4, 0.1])]
    assert tournament(population, 3, _Draws([1, 3, 4]))["index"] == 3  # the best (0.9) was not drawn
    assert tournament(population, 3, _Draws([4, 4, 4]))["index"] == 4  # with replacement
    assert tournament(population, 2, _Draws([2, 0]))["index"] == 0
    # A real generator: the winner is the best of the S members it drew.
    rng, twin = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(20):
        drawn = twin.integers(len(population), size=2)
        assert tournament(population, 2, rng)["reward"] == max(population[i]["reward"] for i in drawn)


def nasnet(combine=("add",), blocks=3):
    return NasnetCellSpace(operations=OPS, blocks=blocks, combine=list(combine))


def test_a_mutation_changes_exactly_one_decision_to_another_valid_choice():
    space = nasnet(combine=("add", "concat"))
    decisions = space.decisions()
    kinds = decision_kinds(space, decisions)
    assert Counter(kinds) == {"input": 12, "op": 12, "combine": 6}
    rng = np.random.default_rng(0)
    parent = [int(rng.integers(n)) for _name, n in decisions]
    seen = Counter()
    for _ in range(3000):
        child, how = mutate(parent, decisions, kinds, rng)
        changed = [i for i, (a, b) in enumerate(zip(parent, child)) if a != b]
        assert len(changed) == 1
        d = changed[0]
        assert how["decision"] == decisions[d][0] and how["mutation"] == kinds[d]
        assert (how["old"], how["new"]) == (parent[d], child[d]) and 0 <= child[d] < decisions[d][1]
        seen[how["mutation"]] += 1
        parent = child
    # The kind first, uniformly (the paper: hidden-state or op mutation), then a decision of it.
    assert all(900 < seen[k] < 1100 for k in ("input", "op", "combine")), seen
    genotype = space.genotype_from_choices(parent)  # a valid cell: inputs only from earlier states
    for cell in genotype.cells.values():
        assert all(e.input < e.node for e in cell.edges)
    net = space.build_network(genotype, ops=nasreg.load_plugins().registries.operations, in_channels=1,
                              num_classes=10)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_the_identity_mutation_and_a_space_without_kinds():
    decisions = [("a", 3), ("b", 2)]
    space = SimpleNamespace()  # no decision_kinds(): every decision alike
    kinds = decision_kinds(space, decisions)
    assert kinds == ["choice", "choice"]
    rng = np.random.default_rng(1)
    outcomes = Counter(mutate([0, 1], decisions, kinds, rng, identity_probability=0.5)[1]["mutation"]
                       for _ in range(2000))
    assert set(outcomes) == {"identity", "choice"} and 850 < outcomes["identity"] < 1150
    assert mutate([2, 1], decisions, kinds, np.random.default_rng(1), identity_probability=0.0)[0] != [2, 1]


def drive(strategy: EvolutionStrategy, space, reward_of, seed=0):
    """The ChildSearch loop without training: each child's reward is ``reward_of(index)``."""
    strategy.start(SimpleNamespace(space=space, seed=seed), space.decisions())
    index, alive = 0, []
    for update, m in enumerate(strategy.round_sizes()):
        choices = strategy.propose(m)
        strategy.learn(update, choices, [reward_of(index + k) for k in range(m)])
        index += m
        alive.append([member["index"] for member in strategy.members])
    return alive


def test_the_oldest_member_dies_not_the_worst():
    # Rewards rise with age: the oldest member is always the best, the newest the worst.
    strategy = EvolutionStrategy(population=4, sample_size=4, cycles=10, identity_probability=0.0)
    alive = drive(strategy, nasnet(), lambda i: 1.0 - i / 100)
    assert alive[3] == [0, 1, 2, 3]
    for k in range(4, 10):  # child k joins, child k - 4 (the best alive) dies
        assert alive[k] == [k - 3, k - 2, k - 1, k]
    history = strategy.history
    assert [h["died"] for h in history] == [None] * 4 + list(range(6))
    assert all(h["died_at_age"] == 4 for h in history[4:])
    assert all(h["mutation"] == "random" and h["parent"] is None for h in history[:4])
    # each parent was alive when its child was born
    for h in history[4:]:
        assert h["parent"] in alive[h["index"] - 1] and h["mutation"] in ("input", "op")
    # Rounds of two: both children of a round breed from the population before the round.
    strategy = EvolutionStrategy(population=4, sample_size=1, cycles=8, children_per_round=2)
    alive = drive(strategy, nasnet(), lambda i: 0.5)
    assert alive == [[0, 1], [0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert all(h["parent"] in (0, 1, 2, 3) for h in strategy.history[4:6])


def test_the_same_seed_evolves_the_same_way_another_seed_does_not():
    rewards = np.random.default_rng(3).random(12)

    def history(seed):
        strategy = EvolutionStrategy(population=4, sample_size=2, cycles=12)
        drive(strategy, nasnet(), lambda i: rewards[i], seed=seed)
        return [(h["parent"], h["mutation"], h["decision"], h["choices"]) for h in strategy.history]

    assert history(0) == history(0)
    assert history(0) != history(1)


# --- end to end ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The shrunk search, children trained in this process (the local executor, one worker)."""
    run_dir = tmp_path_factory.mktemp("evolution") / "run"
    result = invoke("run", SPEC, "--out", run_dir, "-q", sets=TINY)
    assert result.exit_code == 0, result.output
    return run_dir


def test_a_shrunk_search_end_to_end_writes_a_genotype_that_builds(full_run):
    kids = jsonl(full_run / "children.jsonl")
    history = jsonl(full_run / "evolution.jsonl")
    assert [c["index"] for c in kids] == [h["index"] for h in history] == list(range(8))
    assert [c["choices"] for c in kids] == [h["choices"] for h in history]
    assert [c["reward"] for c in kids] == [h["reward"] for h in history]
    assert all(0.0 <= c["reward"] <= 1.0 and not c["diverged"] for c in kids)
    for h in history[4:]:  # a mutated child differs from its parent in at most one decision
        parent = kids[h["parent"]]["choices"]
        assert sum(a != b for a, b in zip(parent, h["choices"])) == (0 if h["mutation"] == "identity" else 1)
    genotype = nasreg.load_genotype(full_run / "genotype.json")
    best = max(kids, key=lambda c: c["reward"])
    summary = json.loads((full_run / "summary.json").read_text())
    assert genotype.provenance["strategy"] == "evolution" and genotype.provenance["child"] == best["index"]
    assert summary["best_reward"] == best["reward"] and summary["children"] == 8 and summary["updates"] == 4
    net = nasreg.build_network(genotype, spec=full_run / "spec.toml")
    net.eval()
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    state = json.loads((full_run / "evolution.json").read_text())
    assert [m["index"] for m in state["population"]] == [4, 5, 6, 7]
    assert [m["age"] for m in state["population"]] == [3, 2, 1, 0]
    assert {d["kind"] for d in state["decisions"]} == {"input", "op"}  # combine = ["add"]: no decision
    rewards = json.loads((full_run / "rewards.json").read_text())
    last = rewards["updates"][-1]
    assert last["moving_average"] == pytest.approx(np.mean([kids[i]["reward"] for i in (4, 5, 6, 7)]))
    assert (full_run / "rewards.png").read_bytes().startswith(PNG)
    assert (full_run / "eval" / "results.json").is_file()  # [evaluate] ran


@pytest.mark.slow
def test_two_worker_processes_evolve_as_this_process_does(full_run, tmp_path):
    pooled = tmp_path / "pooled"
    result = invoke("run", SPEC, "--out", pooled, "-q", sets=[*TINY, "strategy.workers=2", "strategy.child_threads=1"])
    assert result.exit_code == 0, result.output
    assert [(c["choices"], c["reward"]) for c in jsonl(pooled / "children.jsonl")] == \
        [(c["choices"], c["reward"]) for c in jsonl(full_run / "children.jsonl")]
    assert nasreg.load_genotype(pooled / "genotype.json").cells == nasreg.load_genotype(full_run / "genotype.json").cells


RECORDING = '''\
import nasreg


class Recording(nasreg.Executor):
    """Runs every child in this process, writing its index to ``log`` first."""

    name = "recording"

    def __init__(self, log: str = ""):
        self.log = log

    def map(self, fn, tasks, *, setup=None, payload=None, payload_key=None, **_):
        for i, task in enumerate(tasks):
            with open(self.log, "a") as f:
                f.write(f"{task.child.index}\\n")
            yield nasreg.Outcome(i, value=self.run_task(fn, setup, payload, payload_key, task))


@nasreg.hookimpl
def register_executors(register):
    register("recording", Recording)
'''


@pytest.mark.slow
def test_children_train_through_the_specs_executor(full_run, tmp_path):
    plugin = tmp_path / "recording_executor.py"
    plugin.write_text(RECORDING)
    log = tmp_path / "children.log"
    spec = tmp_path / "evolution.toml"
    spec.write_text(SPEC.read_text().replace("workers = 2 ", "workers = 1 ")
                    + f'\n[executor]\nname = "recording"\nlog = "{log}"\n')
    out = tmp_path / "run"
    result = invoke("run", spec, "--plugin", plugin, "--out", out, "-q", sets=[*TINY, "evaluate.epochs=1"])
    assert result.exit_code == 0, result.output
    assert log.read_text().split() == [str(i) for i in range(8)]  # every child, through the executor
    assert [(c["choices"], c["reward"]) for c in jsonl(out / "children.jsonl")] == \
        [(c["choices"], c["reward"]) for c in jsonl(full_run / "children.jsonl")]


def test_a_stopped_search_resumed_equals_the_uninterrupted_one(full_run, tmp_path):
    # Stopped after six children (the first round of cycles done): its spec and journal so far.
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    shutil.copy(full_run / "spec.toml", stopped / "spec.toml")
    lines = (full_run / "children.jsonl").read_text().splitlines(keepends=True)
    (stopped / "children.jsonl").write_text("".join(lines[:6]) + lines[6][:40])  # the seventh cut by a kill
    result = invoke("resume", stopped, "-q")
    assert result.exit_code == 0, result.output
    before, after = jsonl(full_run / "children.jsonl"), jsonl(stopped / "children.jsonl")
    assert [(c["choices"], c["reward"]) for c in after] == [(c["choices"], c["reward"]) for c in before]
    assert [c["seconds"] for c in after[:6]] == [c["seconds"] for c in before[:6]]  # not trained again
    assert (stopped / "evolution.jsonl").read_text() == (full_run / "evolution.jsonl").read_text()
    assert json.loads((stopped / "evolution.json").read_text()) == json.loads((full_run / "evolution.json").read_text())
    assert nasreg.load_genotype(stopped / "genotype.json").cells == nasreg.load_genotype(full_run / "genotype.json").cells
