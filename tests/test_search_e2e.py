"""End-to-end searches through the CLI: the shipped specs, shrunk with --set to run on CPU in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nasreg.cli import main
from nasreg._core.genotype import Genotype
from nasreg._core.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.dataset=digits", "data.limit=160", "data.batch_size=32", "data.num_workers=0",
        "search_space.cells=3", "search_space.channels=4", "run.threads=1"]
#: The quickstart's [evaluate] (training the cell found after the search), shrunk likewise.
TINY_EVAL = ["evaluate.epochs=1", "evaluate.cells=2", "evaluate.channels=4", "evaluate.limit=64"]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_cli(spec: str, out: Path, *overrides: str):
    args = ["run", str(ROOT / "specs" / spec), "--out", str(out), "-q"]
    for o in [*TINY, *overrides]:
        args += ["--set", o]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result


def test_dgdarts_paper_spec_shrunk_runs_both_stages(tmp_path):
    out = tmp_path / "dg"
    result = run_cli("dgdarts.toml", out, "search.epochs=3", "search.warmup_epochs=1")
    for name in ("spec.toml", "metrics.jsonl", "genotype.json", "checkpoint.pt", "clusters.json",
                 "gradients.json", "stages.json", "summary.json"):
        assert (out / name).is_file(), name
    stages = json.loads((out / "stages.json").read_text())
    assert len(stages) == 2
    # Stage 1 is a smaller supernet: fewer candidate ops and fewer weights.
    assert stages[1]["num_candidate_ops"] < stages[0]["num_candidate_ops"]
    assert stages[1]["num_weights"] < stages[0]["num_weights"]
    # Its candidate sets are the ones clusters.json chose.
    clusters = json.loads((out / "clusters.json").read_text())
    chosen = clusters["transitions"][0]["cells"]["normal"][0]["chosen"]
    assert stages[1]["candidates"]["normal"][0] == chosen
    # Gradients were recorded for the 2 joint epochs of each stage.
    grads = json.loads((out / "gradients.json").read_text())
    assert all(len(traj) == 2 for traj in grads["stages"][0]["grad_history"]["normal"][0])
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(m["stage"], m["epoch"], m["joint"]) for m in metrics] == [
        (0, 0, False), (0, 1, True), (0, 2, True), (1, 0, False), (1, 1, True), (1, 2, True)]
    genotype = Genotype.load(out / "genotype.json", load_plugins().registries)
    assert genotype.provenance["selector"] == "dg-darts"
    assert all(len(c.edges) == 8 for c in genotype.cells.values())
    assert "final validation accuracy" in result.output


def test_darts_paper_spec_second_order_runs(tmp_path):
    out = tmp_path / "darts"
    run_cli("darts.toml", out, "search.epochs=1", "strategy.order=2")
    spec_text = (out / "spec.toml").read_text()
    assert "order = 2" in spec_text
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["stages"]) == 1
    genotype = Genotype.load(out / "genotype.json", load_plugins().registries)
    assert genotype.provenance["selector"] == "argmax"


def test_quickstart_spec_runs_and_resolved_spec_reruns(tmp_path):
    out = tmp_path / "qs"
    run_cli("quickstart.toml", out, "search.epochs=2", "search.warmup_epochs=1", *TINY_EVAL)
    assert (out / "eval" / "results.json").is_file()
    # The resolved spec in the run directory is itself a valid spec.
    result = CliRunner().invoke(main, ["validate", str(out / "spec.toml")])
    assert result.exit_code == 0, result.output


def test_same_seed_same_genotype_and_metrics(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        run_cli("quickstart.toml", out, "search.epochs=2", "search.warmup_epochs=1", *TINY_EVAL)
    ga = json.loads((a / "genotype.json").read_text())["cells"]
    gb = json.loads((b / "genotype.json").read_text())["cells"]
    assert ga == gb
    strip = lambda path: [{k: v for k, v in json.loads(l).items() if "seconds" not in k and "memory" not in k}
                          for l in path.read_text().splitlines()]
    assert strip(a / "metrics.jsonl") == strip(b / "metrics.jsonl")
