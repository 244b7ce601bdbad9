"""A refused or failed command leaves things as they were (issue 13, class 4).

* A search that fails writes no genotype, and its ``summary.json`` says that it failed and why;
  ``resume`` retries such a run from its last checkpoint. A space of zero operations only (which
  could only derive a genotype nasreg cannot read back) is refused before it runs.
* A refused ``resume`` (a finished run; an evaluation under torchrun) changes no byte of the
  run directory, ``eval/`` included.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli_checks import SPEC, check_line, snapshot
from nasreg.cli import main

ZERO_ONLY = SPEC.replace('operations = ["toy_zero", "toy_skip", "toy_conv"]', 'operations = ["toy_zero"]')
TINY_DARTS = """
[run]
name = "tiny"
threads = 1
[data]
dataset = "digits"
limit = 96
batch_size = 32
[search_space]
name = "darts-cell"
operations = ["none", "skip_connect", "sep_conv_3x3"]
cells = 3
channels = 4
nodes = 2
[search]
epochs = 2
warmup_epochs = 1
[strategy]
name = "darts"
[selector]
name = "argmax"
[evaluate]
epochs = 2
batch_size = 32
lr = 0.05
cells = 3
channels = 4
auxiliary = false
"""


def _run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_space_of_zero_operations_only_is_refused_before_it_runs(tmp_path):
    """(It used to search, then write a genotype.json without edges that nasreg cannot load.)"""
    spec = tmp_path / "zero.toml"
    spec.write_text(ZERO_ONLY)
    for command in ("validate", "run"):
        before = snapshot(tmp_path)
        result = _run(command, spec, *(["--out", tmp_path / "run"] if command == "run" else []))
        check_line(result.exit_code, result.stderr, result.output,
                   ("[search_space] operations: every candidate of the 'normal' cell is a zero operation (toy_zero)",))
        assert snapshot(tmp_path) == before


@pytest.fixture
def failed_run(tmp_path) -> Path:
    """A search that diverged in its first epoch (the checkpoint of epoch 0 written)."""
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_DARTS.replace('name = "darts"', 'name = "darts"\nw_lr = 1e30'))
    result = _run("run", spec, "--out", tmp_path / "run", "-q", "--no-preflight")
    check_line(result.exit_code, result.stderr, result.output, ("training diverged",))
    return tmp_path / "run"


def test_a_failed_search_writes_no_genotype_and_says_why_in_its_summary(failed_run):
    assert not (failed_run / "genotype.json").exists()
    summary = json.loads((failed_run / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"].startswith("training diverged") and "\n" not in summary["error"]
    assert summary["spec_hash"] and "genotype" not in summary


def test_a_failed_search_is_resumed_and_fails_the_same_way(failed_run):
    result = _run("resume", failed_run, "-q", "--no-preflight")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1].startswith("error: training diverged")
    assert not (failed_run / "genotype.json").exists()
    assert json.loads((failed_run / "summary.json").read_text())["status"] == "failed"


def test_a_successful_summary_says_finished(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    assert _run("run", spec, "--out", tmp_path / "run", "-q").exit_code == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """A tiny DARTS search with its evaluation, finished."""
    root = tmp_path_factory.mktemp("evaluated")
    (root / "spec.toml").write_text(TINY_DARTS)
    result = _run("run", root / "spec.toml", "--out", root / "run", "-q", "--no-preflight")
    assert result.exit_code == 0, result.output
    assert (root / "run" / "eval" / "results.json").is_file()
    return root / "run"


def test_resume_of_a_finished_run_is_refused_untouched(evaluated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated, run)
    before = snapshot(tmp_path)
    result = _run("resume", run)
    check_line(result.exit_code, result.stderr, result.output, ("this run has finished; nothing to resume",))
    assert snapshot(tmp_path) == before


def test_a_refused_evaluation_resume_keeps_the_evaluations_files(evaluated, tmp_path, monkeypatch):
    """The search finished, its evaluation did not (no results.json); resumed under torchrun,
    which the evaluation cannot use: refused, and eval/checkpoint.pt and eval/metrics.jsonl kept."""
    run = tmp_path / "run"
    shutil.copytree(evaluated, run)
    (run / "eval" / "results.json").unlink()
    before = snapshot(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = _run("resume", run)
    check_line(result.exit_code, result.stderr, result.output, ("its evaluation runs in one process",))
    assert snapshot(tmp_path) == before


def test_a_refused_evaluation_resume_with_an_edited_spec_keeps_the_evaluations_files(evaluated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated, run)
    (run / "eval" / "results.json").unlink()
    spec = run / "spec.toml"
    spec.write_text(spec.read_text().replace("seed = 0", "seed = 5"))
    before = snapshot(tmp_path)
    result = _run("resume", run)
    check_line(result.exit_code, result.stderr, result.output, ("seed",))
    assert snapshot(tmp_path) == before
