"""Studies: arms x seeds through an executor, the report, resume after a stop, failed trials,
study-file errors, and `nasreg compare` (tiny digits searches on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import nasreg
from nasreg._core.study_report import without_timing
from nasreg.cli import main

SPEC = """
[run]
name = "tiny"
threads = 1
device = "cpu"
{plugins}
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
epochs = 1
batch_size = 32
cells = 2
channels = 4
auxiliary = false
cutout = false
drop_path = 0.0
limit = 64
"""

STUDY = """
[study]
name = "tiny-study"
seeds = [0, 1]

[[arms]]
label = "lr-a"
spec = "arm.toml"

[[arms]]
label = "lr-b"
spec = "arm.toml"
set = ["strategy.w_lr=0.05"]
"""

#: A plugin that stops the search of seed 1 (Ctrl-C, as a user would) at its first epoch's end,
#: once: the marker file records that it did.
STOPPER = """
import os, signal
from pathlib import Path
from nasreg import hookimpl

MARKER = Path({marker!r})

@hookimpl
def on_epoch_end(run, stage, epoch, metrics):
    if run.spec.run.seed == 1 and epoch == 0 and not MARKER.exists():
        MARKER.write_text("stopped")
        os.kill(os.getpid(), signal.SIGINT)
"""

ENV = {"NASREG_DISABLE_PLUGINS": "plots", "COLUMNS": "200"}


def invoke(*args):
    threads = torch.get_num_threads()
    try:
        return CliRunner().invoke(main, [str(a) for a in args], env=ENV)
    finally:
        torch.set_num_threads(threads)


def write_study(folder: Path, study: str = STUDY, plugins: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "arm.toml").write_text(SPEC.format(plugins=plugins))
    path = folder / "study.toml"
    path.write_text(study)
    return path


def report_of(study_dir: Path) -> dict:
    return json.loads((study_dir / "report.json").read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted 2-arm x 2-seed study (with the stopper plugin disarmed: its marker exists)."""
    root = tmp_path_factory.mktemp("finished")
    marker = root / "marker"
    marker.write_text("already")
    (root / "stopper.py").write_text(STOPPER.format(marker=str(marker)))
    path = write_study(root, plugins=f'plugins = ["{root / "stopper.py"}"]')
    result = invoke("study", "run", path, "--out", root / "out")
    assert result.exit_code == 0, result.output
    return root / "out", result.output


def test_a_study_runs_every_trial_into_its_own_run_directory(finished):
    study_dir, output = finished
    report = report_of(study_dir)
    assert set(report["arms"]) == {"lr-a", "lr-b"}
    for arm in ("lr-a", "lr-b"):
        entry = report["arms"][arm]
        for metric in ("search_val_acc", "test_acc"):
            stats = entry[metric]
            assert stats["n"] == 2 and len(stats["values"]) == 2 and stats["seeds"] == [0, 1]
            assert stats["mean"] == pytest.approx(sum(stats["values"]) / 2)
            assert len(stats["ci95"]) == 2
        for seed in (0, 1):
            trial = study_dir / arm / f"seed-{seed}"
            summary = json.loads((trial / "summary.json").read_text())
            assert summary["seed"] == seed and summary["status"] == "finished"
            assert (trial / "eval" / "results.json").is_file()
            value = entry["search_val_acc"]["values"][seed]
            assert value == pytest.approx(summary["final_val_acc"])
    assert [(c["a"], c["b"]) for c in report["comparisons"]] == [("lr-a", "lr-b"), ("lr-a", "lr-b")]
    assert (study_dir / "report.md").is_file() and (study_dir / "specs" / "lr-b.toml").is_file()
    assert "lr-a seed 0: finished" in output and "lr-b" in output
    # each trial is an ordinary run directory
    shown = invoke("show", study_dir / "lr-b" / "seed-1")
    assert shown.exit_code == 0 and "seed-1: finished" in shown.output
    # the arm's overrides reached its trials, and the seeds differ
    spec_b = (study_dir / "lr-b" / "seed-0" / "spec.toml").read_text()
    assert "w_lr = 0.05" in spec_b
    assert nasreg.study_report(study_dir).report == report_of(study_dir)


def test_a_stopped_study_resumes_to_the_same_report(tmp_path, finished):
    marker = tmp_path / "marker"
    (tmp_path / "stopper.py").write_text(STOPPER.format(marker=str(marker)))
    path = write_study(tmp_path, plugins=f'plugins = ["{tmp_path / "stopper.py"}"]')
    out = tmp_path / "out"
    stopped = invoke("study", "run", path, "--out", out)
    assert stopped.exit_code == 130, stopped.output
    assert marker.is_file()
    state = {t["run_dir"]: t["status"] for t in nasreg.study_report(out).trials}
    assert state["lr-a/seed-0"] == "finished" and state["lr-a/seed-1"] == "interrupted"
    assert state["lr-b/seed-0"] == "pending"  # nothing new starts after a stop
    assert (out / "lr-a" / "seed-1" / "checkpoint.pt").is_file()
    resumed = invoke("study", "resume", out)
    assert resumed.exit_code == 0, resumed.output
    assert "1 already finished" in resumed.output
    reference, _ = finished
    mine, theirs = without_timing(report_of(out)), without_timing(report_of(reference))
    for report in (mine, theirs):  # the arms' spec files are each study's own
        for arm in report["arms"].values():
            arm.pop("spec", None)
    assert mine == theirs


def test_a_trial_with_a_bad_override_is_reported_and_the_rest_finish(tmp_path):
    study = STUDY.replace('set = ["strategy.w_lr=0.05"]', 'set = ["search.epochs=-3"]')
    path = write_study(tmp_path, study)
    result = invoke("study", "run", path, "--out", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert "search.epochs" in result.output or "[search] epochs" in result.output
    assert "2 of 4 trials failed" in result.output
    report = report_of(tmp_path / "out")
    assert report["arms"]["lr-a"]["search_val_acc"]["n"] == 2
    failed = report["arms"]["lr-b"]["failed"]
    assert [f["seed"] for f in failed] == [0, 1] and all("epochs" in f["error"] for f in failed)
    assert "Traceback" not in result.output


@pytest.mark.parametrize("study, fragment", [
    (STUDY + "\n[search]\nepochs = 2\n", "unknown table [search]"),
    (STUDY.replace('spec = "arm.toml"\n\n[[arms]]', 'spec = "missing.toml"\n\n[[arms]]'), "arms[0] spec"),
    (STUDY.replace('label = "lr-b"', 'label = "LR-A"'), "arms[1] label"),
    (STUDY.replace('label = "lr-b"', 'label = "../x"'), "arms[1] label"),
    (STUDY.replace("seeds = [0, 1]", "seeds = [0, 0]"), "seeds[1]"),
    (STUDY.replace("seeds = [0, 1]", "seeds = [-1]"), "seeds"),
    (STUDY.replace("seeds = [0, 1]", 'seeds = {start = 0, count = 0}'), "count"),
    (STUDY.replace("seeds = [0, 1]", 'seeds = [0]\nset = ["run.seed=3"]'), "run.seed"),
    (STUDY + '\n[executor]\nname = "locl"\n', "[executor] name"),
    (STUDY + '\n[executor]\nname = "local"\nworkers = 0\n', "workers"),
    (STUDY.replace('set = ["strategy.w_lr=0.05"]', 'set = ["search.epochs=-3"]').replace(
        'spec = "arm.toml"\n\n[[arms]]', 'spec = "arm.toml"\nset = ["search.epochs=-1"]\n\n[[arms]]'), "epochs"),
])
def test_a_bad_study_file_is_one_line_and_writes_nothing(tmp_path, study, fragment):
    path = write_study(tmp_path, study)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("study", "run", path, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert invoke("study", "validate", path).exit_code == 2


def test_resume_of_a_finished_study_runs_nothing_and_report_rereads(finished, tmp_path):
    study_dir, _ = finished
    result = invoke("study", "report", study_dir)
    assert result.exit_code == 0 and "lr-a" in result.output
    assert invoke("study", "resume", tmp_path).exit_code == 2  # not a study directory
    taken = invoke("study", "run", study_dir.parent / "study.toml", "--out", study_dir)
    assert taken.exit_code == 2 and "nasreg study resume" in taken.output


def test_compare_groups_hand_made_runs_by_spec(finished, tmp_path):
    study_dir, _ = finished
    runs = [study_dir / arm / f"seed-{s}" for arm in ("lr-a", "lr-b") for s in (0, 1)]
    result = invoke("compare", *runs, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    report = report_of(tmp_path / "cmp")
    assert sorted(report["arms"]) == ["lr-a-seed-0", "lr-b-seed-0"]  # labelled by the first run's name
    assert all(a["search_val_acc"]["n"] == 2 for a in report["arms"].values())
    again = invoke("compare", runs[0], runs[0])
    assert again.exit_code == 2 and "same seed" in again.output


@pytest.mark.slow
def test_a_study_on_two_worker_processes(tmp_path):
    path = write_study(tmp_path, STUDY.replace("seeds = [0, 1]", "seeds = [0]")
                       + '\n[executor]\nname = "local"\nworkers = 2\nthreads = 1\n')
    result = nasreg.run_study(path, out=tmp_path / "out", overrides=["executor.workers=2"])
    assert result.complete, result.trials
    assert [t["status"] for t in result.trials] == ["finished", "finished"]
    assert result.report["arms"]["lr-b"]["search_val_acc"]["n"] == 1


EXECUTOR_PLUGIN = """
from pathlib import Path
import nasreg
from nasreg import hookimpl

LOG = Path({log!r})


class Recording(nasreg.LocalExecutor):
    name = "recording"

    def map(self, fn, tasks, **kw):
        for task in tasks:
            with LOG.open("a") as f:
                f.write(f"{{task.arm}} {{task.seed}} {{task.action}}\\n")
        return super().map(fn, tasks, **kw)


def recording(tag: str = "x"):
    return Recording(workers=1)


@hookimpl
def register_executors(register):
    register("recording", recording)
"""


def test_a_third_party_executor_registered_with_register_executors_runs_a_study(tmp_path):
    log = tmp_path / "log.txt"
    plugin = tmp_path / "recording.py"
    plugin.write_text(EXECUTOR_PLUGIN.format(log=str(log)))
    path = write_study(tmp_path, STUDY.replace("seeds = [0, 1]", "seeds = [3]")
                       + '\n[executor]\nname = "recording"\ntag = "mine"\n')
    result = invoke("study", "run", path, "--out", tmp_path / "out", "--plugin", plugin)
    assert result.exit_code == 0, result.output
    assert log.read_text().splitlines() == ["lr-a 3 start", "lr-b 3 start"]
    assert report_of(tmp_path / "out")["arms"]["lr-a"]["search_val_acc"]["seeds"] == [3]
    bad = invoke("study", "validate", path, "--plugin", plugin, "--set", "executor.tag=1")
    assert bad.exit_code == 2 and "[executor] tag" in bad.output
