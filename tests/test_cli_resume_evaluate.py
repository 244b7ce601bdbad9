"""`nasreg resume` and a spec's [evaluate] section: the evaluation runs after a resumed search, and
a run whose search finished but whose evaluation was stopped continues the evaluation from its checkpoint.

Runs are stopped in-process, through the mechanisms a user's Ctrl-C goes through: the search's
stop request (set before the first step: it stops after step 1 and writes a checkpoint, exit 130),
and a KeyboardInterrupt during the evaluation's second epoch (what Ctrl-C raises there: exit 130,
the first epoch's metrics line and checkpoint written, no results.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import nasreg._core.evaluate as evaluate_mod
import nasreg._core.preflight as pf
import nasreg._core.search as search_mod
from nasreg.cli import main

SPEC = """
[run]
name = "tiny"
threads = 1
device = "cpu"
[data]
dataset = "digits"
limit = 64
batch_size = 8
[search_space]
name = "darts-cell"
operations = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]
cells = 3
channels = 4
nodes = 2
[search]
epochs = 2
warmup_epochs = 0
[strategy]
name = "darts"
[selector]
name = "argmax"
[evaluate]
epochs = 2
batch_size = 32
cells = 2
channels = 4
auxiliary = false
cutout = false
drop_path = 0.0
limit = 64
"""
ENV = {"NASREG_DISABLE_PLUGINS": "plots", "COLUMNS": "500"}


def invoke(*args):
    threads = torch.get_num_threads()
    try:
        return CliRunner().invoke(main, [str(a) for a in args], env=ENV)
    finally:
        torch.set_num_threads(threads)


def eval_metrics(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k and "memory" not in k}
            for line in (run_dir / "eval" / "metrics.jsonl").read_text().splitlines()]


def snapshot(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*")}


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def resumed_search(spec_file, tmp_path_factory):
    """A search stopped after its first step, then resumed (after a refused resume, see below)."""
    out = tmp_path_factory.mktemp("search") / "run"
    enter = search_mod._StopRequests.__enter__

    def stop_at_once(self):
        enter(self)
        self.requested = True  # as if Ctrl-C came during the first step
        return self

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(search_mod._StopRequests, "__enter__", stop_at_once)
        stopped = invoke("run", spec_file, "--out", out, "-q")
    assert stopped.exit_code == 130, (stopped.output, repr(stopped.exception), __import__("traceback").format_exception(stopped.exception) if stopped.exception else "")
    assert (out / "checkpoint.pt").is_file() and not (out / "summary.json").exists()
    assert not (out / "eval").exists()
    before = snapshot(out)
    # the pre-flight check of resume: refused on one line before anything in the run is touched
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pf, "free_memory_bytes", lambda device: 2**20)
        refused = invoke("resume", out, "-q")
    assert_after = snapshot(out)
    result = invoke("resume", out)
    return out, stopped, refused, before, assert_after, result


@pytest.fixture(scope="module")
def resumed_evaluation(spec_file, tmp_path_factory):
    """A search that finished, its evaluation stopped in its second epoch, then resumed."""
    out = tmp_path_factory.mktemp("eval") / "run"
    save = evaluate_mod._save_checkpoint

    def interrupt_after_first_epoch(run_dir, epoch, *args):
        save(run_dir, epoch, *args)
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate_mod, "_save_checkpoint", interrupt_after_first_epoch)
        stopped = invoke("run", spec_file, "--out", out, "-q")
    assert stopped.exit_code == 130, (stopped.output, repr(stopped.exception), __import__("traceback").format_exception(stopped.exception) if stopped.exception else "")
    assert (out / "summary.json").is_file()
    assert len((out / "eval" / "metrics.jsonl").read_text().splitlines()) == 1
    assert (out / "eval" / "checkpoint.pt").is_file() and not (out / "eval" / "results.json").exists()
    search_files = {k: v for k, v in snapshot(out).items() if not k.startswith("eval")}
    result = invoke("resume", out)
    return out, search_files, result


def test_resume_runs_the_evaluation_after_the_resumed_search(resumed_search):
    out, _stopped, _refused, _before, _after, result = resumed_search
    assert result.exit_code == 0, result.output
    assert "final validation accuracy" in result.stdout
    assert "evaluation: training the genotype found into" in result.stdout
    assert "test accuracy: " in result.stdout
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["epochs"] == 2 and results["test_acc"] is not None
    assert results["search_cost"]["run_dir"] == str(out)
    assert results["genotype"] == json.loads((out / "genotype.json").read_text())
    assert len(eval_metrics(out)) == 2


def test_resume_prints_the_estimate_and_checks_it_before_touching_the_run(resumed_search):
    out, _stopped, refused, before, after, result = resumed_search
    assert refused.exit_code == 2, refused.output
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in refused.output
    assert "but only 1 MB is free; use a smaller [data] batch_size" in lines[0]
    assert after == before  # nothing written, the checkpoint intact
    assert result.stdout.count("pre-flight: ") == 1


def test_a_stopped_evaluation_runs_again_on_resume(resumed_evaluation):
    out, search_files, result = resumed_evaluation
    assert result.exit_code == 0, result.output
    # a notice, on stderr (as every progress notice: stdout holds the figures)
    assert "the search has finished; its evaluation has not: continuing the evaluation from its checkpoint" in result.stderr
    assert "test accuracy: " in result.stdout
    assert "pre-flight" not in result.stdout  # no search ran
    # the search was left alone; the evaluation continued from its checkpoint (epoch 0 kept, epoch 1 trained)
    assert {k: v for k, v in snapshot(out).items() if not k.startswith("eval")} == search_files
    assert [m["epoch"] for m in eval_metrics(out)] == [0, 1]
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["search_cost"]["run_dir"] == str(out)


def test_both_resumed_runs_end_like_an_uninterrupted_one(resumed_search, resumed_evaluation):
    # The search resumes exactly and the evaluation is seeded: same genotype, same evaluation.
    a, b = resumed_search[0], resumed_evaluation[0]
    assert json.loads((a / "genotype.json").read_text())["cells"] == json.loads((b / "genotype.json").read_text())["cells"]
    assert eval_metrics(a) == eval_metrics(b)


def test_a_finished_evaluation_leaves_nothing_to_resume(resumed_evaluation):
    out = resumed_evaluation[0]
    before = snapshot(out)
    result = invoke("resume", out)
    assert result.exit_code == 2
    assert "this run has finished; nothing to resume" in result.stderr and "Traceback" not in result.output
    assert snapshot(out) == before


def test_a_finished_search_without_evaluate_leaves_nothing_to_resume(resumed_evaluation, tmp_path):
    # the same finished search, its spec without [evaluate]
    out = tmp_path / "run"
    src = resumed_evaluation[0]
    out.mkdir()
    for name in ("summary.json", "genotype.json"):
        (out / name).write_bytes((src / name).read_bytes())
    text = (src / "spec.toml").read_text()
    (out / "spec.toml").write_text(text[:text.index("[evaluate]")])
    result = invoke("resume", out)
    assert result.exit_code == 2, result.output
    assert "this run has finished; nothing to resume" in result.stderr
