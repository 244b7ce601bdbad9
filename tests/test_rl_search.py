"""``reinforce`` and ``random`` end to end on digits through the command line (tiny budgets), the
genotypes they write trained by ``nasreg train``, resuming from ``children.jsonl``, and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nasreg.cli import main
from nasreg._core.genotype import Genotype
from nasreg._core.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
PNG = b"\x89PNG\r\n\x1a\n"
REGS = load_plugins().registries

#: Each child: 80 training images, 3 steps; 2 updates of 2 children.
TINY = ["run.threads=1", "run.device=cpu", "data.limit=160", "strategy.updates=2",
        "strategy.children_per_update=2", "strategy.child_epochs=1", "strategy.child_batch_size=32",
        "strategy.workers=1", "evaluate.epochs=1", "evaluate.limit=64", "evaluate.batch_size=32"]
NASNET_TINY = [*TINY, "search_space.blocks=2", "search_space.channels=8", "evaluate.channels=8"]
LAYERS_TINY = [*TINY, "search_space.layers=3"]
TRAIN_TINY = ["evaluate.epochs=1", "evaluate.limit=64", "evaluate.batch_size=32", "evaluate.cells=5",
              "evaluate.channels=8", "run.threads=1", "run.device=cpu"]


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


def children(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "children.jsonl").read_text().splitlines()]


def check_run_dir(run_dir: Path, strategy: str, space: str, n_children: int) -> Genotype:
    """The files every sampling run writes, consistent with each other."""
    kids = children(run_dir)
    assert [c["index"] for c in kids] == list(range(n_children))
    for c in kids:
        assert 0.0 <= c["reward"] <= 1.0 and c["params"] > 0 and c["seconds"] > 0 and not c["diverged"]
        assert Genotype.from_dict(c["genotype"]).space == space
    summary = json.loads((run_dir / "summary.json").read_text())
    genotype = Genotype.load(run_dir / "genotype.json", REGS)
    best = max(kids, key=lambda c: c["reward"])
    prov = genotype.provenance
    assert prov["strategy"] == strategy and prov["seed"] == 0 and prov["spec_hash"] == summary["spec_hash"]
    assert prov["reward"] == best["reward"] == summary["best_reward"] == summary["final_val_acc"]
    assert Genotype.from_dict(kids[prov["child"]]["genotype"]).cells == genotype.cells
    assert summary["strategy"] == strategy and summary["children"] == n_children
    rewards = json.loads((run_dir / "rewards.json").read_text())
    assert [c["reward"] for c in rewards["children"]] == [c["reward"] for c in kids]
    assert [u["update"] for u in rewards["updates"]] == list(range(n_children // 2))
    assert rewards["updates"][-1]["best_so_far"] == best["reward"]
    assert (run_dir / "rewards.png").read_bytes().startswith(PNG)
    return genotype


def test_reinforce_on_nasnet_cells_end_to_end_and_its_genotype_trains(tmp_path):
    run_dir = tmp_path / "run"
    result = invoke("run", SPECS / "nasnet.toml", "--out", run_dir, "-q", sets=NASNET_TINY)
    assert result.exit_code == 0, result.output
    genotype = check_run_dir(run_dir, "reinforce", "nasnet-cell", 4)
    assert set(genotype.cells) == {"normal", "reduce"}
    summary = json.loads((run_dir / "summary.json").read_text())
    # The summary says what a sampling search did (no empty stage table).
    assert f"reinforce: 4 children trained, best reward {summary['best_reward']:.4f}" in result.output
    assert "candidate ops" not in result.output
    controller = json.loads((run_dir / "controller.json").read_text())
    assert len(controller["decisions"]) == 2 * 5 * 2  # 2 cells x 5 decisions x 2 blocks
    assert [u["update"] for u in controller["updates"]] == [0, 1]
    first = controller["updates"][0]
    assert first["baseline_used"] == pytest.approx(sum(c["reward"] for c in children(run_dir)[:2]) / 2)
    assert len(controller["most_likely"]["choices"]) == 20
    weights = torch.load(run_dir / "controller.pt", weights_only=True)
    assert "lstm.weight_ih" in weights
    assert json.loads((run_dir / "eval" / "results.json").read_text())["test_acc"] is not None  # [evaluate]

    out = tmp_path / "train"
    result = invoke("train", run_dir / "genotype.json", "--spec", SPECS / "nasnet.toml", "--out", out, "-q",
                    sets=TRAIN_TINY)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 1 and 0.0 <= results["test_acc"] <= 1.0 and results["network"]["cells"] == 5


def test_reinforce_on_nas_layers_in_two_worker_processes_matches_in_process(tmp_path):
    in_process, pooled = tmp_path / "one", tmp_path / "two"
    result = invoke("run", SPECS / "nas-rl.toml", "--out", in_process, "-q", sets=LAYERS_TINY)
    assert result.exit_code == 0, result.output
    result = invoke("run", SPECS / "nas-rl.toml", "--out", pooled, "-q",
                    sets=[*LAYERS_TINY, "strategy.workers=2", "strategy.child_threads=1"])  # as in-process
    assert result.exit_code == 0, result.output
    genotype = check_run_dir(pooled, "reinforce", "nas-layers", 4)
    assert set(genotype.cells) == {"layers"}
    # Children are seeded by index: the same rewards wherever they are trained, hence the same search.
    assert [(c["choices"], c["reward"]) for c in children(pooled)] == \
        [(c["choices"], c["reward"]) for c in children(in_process)]
    assert Genotype.load(pooled / "genotype.json").cells == Genotype.load(in_process / "genotype.json").cells

    # Without --spec: nas-layers supplies no recipe and no network keys, so the recipe is the --set's.
    out = tmp_path / "train"
    layers_train = [k for k in TRAIN_TINY if not k.startswith(("evaluate.cells", "evaluate.channels"))]
    refused = invoke("train", pooled / "genotype.json", "--out", out, "-q",
                     sets=[*TRAIN_TINY, "evaluate.lr=0.025", "evaluate.data.dataset=digits"])
    assert refused.exit_code == 2 and "[evaluate] cells: unknown key (search space 'nas-layers' declares no " \
        "evaluation-network keys" in refused.output
    result = invoke("train", pooled / "genotype.json", "--out", out, "-q",
                    sets=[*layers_train, "evaluate.lr=0.025", "evaluate.data.dataset=digits"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "results.json").read_text())["params"] == children(pooled)[
        genotype.provenance["child"]]["params"]


def test_random_search_end_to_end_and_its_genotype_trains(tmp_path):
    run_dir = tmp_path / "run"
    result = invoke("run", SPECS / "random.toml", "--out", run_dir, "-q", sets=NASNET_TINY)
    assert result.exit_code == 0, result.output
    check_run_dir(run_dir, "random", "nasnet-cell", 4)
    assert not (run_dir / "controller.json").exists()
    kids = children(run_dir)
    assert len({tuple(c["choices"]) for c in kids}) == 4
    updates = json.loads((run_dir / "rewards.json").read_text())["updates"]
    m0 = (kids[0]["reward"] + kids[1]["reward"]) / 2
    m1 = (kids[2]["reward"] + kids[3]["reward"]) / 2
    assert updates[0]["moving_average"] == pytest.approx(m0)
    assert updates[1]["moving_average"] == pytest.approx(0.9 * m0 + 0.1 * m1)  # average_decay = 0.9

    out = tmp_path / "train"
    result = invoke("train", run_dir / "genotype.json", "--spec", SPECS / "random.toml", "--out", out, "-q",
                    sets=TRAIN_TINY)
    assert result.exit_code == 0, result.output
    assert (out / "results.json").is_file()


def test_resume_replays_the_children_already_trained(tmp_path):
    full = tmp_path / "full"
    sets = [*LAYERS_TINY, "strategy.updates=3"]
    result = invoke("run", SPECS / "nas-rl.toml", "--out", full, "-q", sets=sets)
    assert result.exit_code == 0, result.output
    # A run stopped after three children: its spec and the first three lines of its journal.
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    shutil.copy(full / "spec.toml", stopped / "spec.toml")
    lines = (full / "children.jsonl").read_text().splitlines(keepends=True)
    (stopped / "children.jsonl").write_text("".join(lines[:3]))
    result = invoke("resume", stopped, "-q")
    assert result.exit_code == 0, result.output
    before, after = children(full), children(stopped)
    assert [(c["choices"], c["reward"]) for c in after] == [(c["choices"], c["reward"]) for c in before]
    assert [c["seconds"] for c in after[:3]] == [c["seconds"] for c in before[:3]]  # not trained again
    assert Genotype.load(stopped / "genotype.json").cells == Genotype.load(full / "genotype.json").cells
    assert json.loads((stopped / "controller.json").read_text())["updates"][-1]["loss"] == pytest.approx(
        json.loads((full / "controller.json").read_text())["updates"][-1]["loss"])


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_spec_errors_name_the_key():
    line = one_line_error(invoke("validate", SPECS / "nasnet.toml", sets=["strategy.hidden_sise=8"]))
    assert "[strategy] hidden_sise: unknown key; did you mean 'hidden_size'?" in line
    line = one_line_error(invoke("validate", SPECS / "nas-rl.toml", sets=["strategy.baseline_decay=1.0"]))
    assert "[strategy] baseline_decay: expected a number >= 0 and < 1, got 1.0" in line
    line = one_line_error(invoke("validate", SPECS / "nas-rl.toml", sets=["search_space.filters=[24, 100]"]))
    assert "[search_space] filters[1]: expected one of 24, 36, 48, 64, got 100" in line
    for spec in ("nasnet.toml", "nas-rl.toml", "random.toml"):
        assert invoke("validate", SPECS / spec).exit_code == 0


def test_a_gradient_strategy_on_a_sampling_space_and_the_reverse_fail_on_one_line(tmp_path, write_spec):
    line = one_line_error(invoke("run", SPECS / "nasnet.toml", "--out", tmp_path / "a", "-q",
                                 sets=[*NASNET_TINY[:3], "strategy={name = \"darts\"}", "selector.name=argmax",
                                       "search.epochs=1"]))
    assert "[strategy] name: 'darts' trains a supernet, but search space 'nasnet-cell' has none" in line
    spec = write_spec("""\
        [run]
        threads = 1
        device = "cpu"
        [data]
        dataset = "toy-data"
        [search_space]
        name = "toy-space"
        operations = ["toy_skip", "toy_conv"]
        [strategy]
        name = "random"
        """)
    toycore = ROOT / "tests" / "fixtures" / "toycore" / "nasreg_toycore.py"
    line = one_line_error(invoke("run", spec, "--out", tmp_path / "b", "-q", "--plugin", toycore))
    assert "[search_space] name: search space 'toy-space' lists no discrete decisions" in line
    assert str(spec) in line
