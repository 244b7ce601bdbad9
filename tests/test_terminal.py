"""The terminal: plain progress lines off a terminal, the rich whole-run line and stage summaries,
the run clock's ETA, a compact list-plugins, nasreg describe, warnings as one line, and the
chance-level line after a training from scratch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

import nasreg
from nasreg import PlainReporter, RichReporter
from nasreg._core.progress import chance_level_warning
from nasreg._core.runclock import JOINT, WARMUP, Plan, RunClock, clock_text
from nasreg.cli import main

ROOT = Path(__file__).resolve().parents[1]
#: The quickstart (DG-DARTS, 2 stages of 1 warm-up + 1 joint epoch) shrunk to seconds; cells = 2
#: makes darts-cell warn (no normal cell), which must reach the user as one line.
TINY_RUN = ["data.limit=96", "data.batch_size=32", "data.num_workers=0", "run.threads=1",
            "search_space.cells=2", "search_space.channels=4",
            'search_space.operations=["none", "skip_connect", "max_pool_3x3", "sep_conv_3x3"]',
            "search.epochs=2", "search.warmup_epochs=1", "selector.min_ops=1", "selector.clusterer.n_clusters=2",
            "evaluate.epochs=1", "evaluate.cells=2", "evaluate.channels=4", "evaluate.limit=64"]
EPOCH_LINE = re.compile(r"^stage (\d)/2 epoch (\d)/2( \(warm-up\))? train loss [\d.]+ acc [\d.]+ val acc [\d.]+ "
                        r"[\d.]+ s eta run \d+:\d\d$")


def invoke(*args: str, columns: int = 100):
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": str(columns)})


# --- (1) a search with stderr in a file: plain lines ------------------------------------------------


@pytest.mark.slow  # a subprocess: about 5 s of imports, search and evaluation on an idle core
def test_a_search_logged_to_a_file_writes_one_plain_line_per_epoch(tmp_path):
    log = tmp_path / "stderr.log"
    args = [sys.executable, "-m", "nasreg", "run", str(ROOT / "specs" / "quickstart.toml"),
            "--out", str(tmp_path / "run")]
    for o in TINY_RUN:
        args += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    with log.open("w") as err:
        done = subprocess.run(args, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\x1b" not in text and "\r" not in text and "━" not in text
    lines = text.splitlines()
    epochs = [m.groups() for m in map(EPOCH_LINE.match, lines) if m]
    assert epochs == [("1", "1", " (warm-up)"), ("1", "2", None), ("2", "1", " (warm-up)"), ("2", "2", None)], text
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == len(epochs)  # one line per epoch the run recorded
    for k in (1, 2):  # one line per stage start
        assert len([x for x in lines if re.match(rf"^stage {k}/2: 2 epochs \(1 warm-up\) x \d+ steps, [\d,]+ weights$",
                                                 x)]) == 1, text
    summaries = [x for x in lines if re.match(r"^stage \d/2 done: 2 epochs \(1 warm-up\), val acc best ", x)]
    assert len(summaries) == 2 and " -> " in summaries[0] and "kept" in summaries[0]
    assert sum(x.startswith("training epoch 1/1 train loss ") for x in lines) == 1
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert f"training done: test acc {results['test_acc']:.3f}, {results['wall_seconds']:.1f} s" in lines
    # the darts-cell warning (cells = 2): one clean line, no file:line, no source line
    warned = [x for x in lines if "no normal cell" in x]
    assert len(warned) == 1 and warned[0].startswith("warning: darts-cell: ")
    assert "UserWarning" not in text and ".py:" not in text and "warnings.warn" not in text


# --- (2) the reporters ------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _drive(reporter, time: FakeTime, warmup_step: float = 1.0, joint_step: float = 3.0, after_epoch=None) -> None:
    """Two stages of 1 warm-up and 1 joint epoch of 3 steps; validation takes 0.5 s."""
    reporter.now = time
    reporter.run_plan([(1, 2, 3), (1, 2, 3)])
    for stage in range(2):
        reporter.stage_start(stage, 2, 3, 1000)
        for epoch in range(2):
            for s in range(3):
                time.t += warmup_step if epoch == 0 else joint_step
                reporter.step(s + 1, {"train_loss": 1.0})
            time.t += 0.5
            reporter.epoch_end({"stage": stage, "epoch": epoch, "joint": epoch == 1, "train_loss": 1.0,
                                "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.6 + epoch / 10, "epoch_seconds": 3.5})
            if after_epoch is not None:
                after_epoch(reporter)
        reporter.stage_end(stage)
        reporter.stage_summary({"stage": stage, "stages": 2, "epochs": 2, "warmup_epochs": 1, "num_weights": 1000,
                                "candidate_ops": 20, "kept_ops": 10 if stage == 0 else None, "seconds": 13.0})
    reporter.close()


def test_plain_reporter_lines(tmp_path):
    path = tmp_path / "log.txt"
    with path.open("w") as stream:
        _drive(PlainReporter(stream), FakeTime())
    lines = path.read_text().splitlines()
    # after the first (warm-up) epoch: the joint epoch left (3 x 2 s guessed from warm-up steps +
    # 0.5 s) and stage 2 (3 x 1 s + 0.5 s, then 3 x 2 s + 0.5 s): 16.5 s
    assert lines == [
        "stage 1/2: 2 epochs (1 warm-up) x 3 steps, 1,000 weights",
        "stage 1/2 epoch 1/2 (warm-up) train loss 1.000 acc 0.500 val acc 0.600 3.5 s eta run 0:16",
        # measured now: joint steps 3 s: stage 2 left = 3 x 1 + 0.5 + 3 x 3 + 0.5
        "stage 1/2 epoch 2/2 train loss 1.000 acc 0.500 val acc 0.700 3.5 s eta run 0:13",
        "stage 1/2 done: 2 epochs (1 warm-up), val acc best 0.700 last 0.700, candidate ops 20 -> 10 kept, 13.0 s",
        "stage 2/2: 2 epochs (1 warm-up) x 3 steps, 1,000 weights",
        "stage 2/2 epoch 1/2 (warm-up) train loss 1.000 acc 0.500 val acc 0.600 3.5 s eta run 0:10",
        "stage 2/2 epoch 2/2 train loss 1.000 acc 0.500 val acc 0.700 3.5 s eta run 0:00",
        "stage 2/2 done: 2 epochs (1 warm-up), val acc best 0.700 last 0.700, candidate ops 20, 13.0 s",
    ]


def test_rich_reporter_shows_the_whole_run_and_keeps_stage_summaries():
    console = Console(record=True, force_terminal=True, width=100)
    seen, ids = [], set()

    def run_line(reporter):  # the whole-run task after each epoch (the display redraws on a timer)
        task = next(t for t in reporter.progress.tasks if t.description == "run")
        seen.append((task.fields["info"], task.fields["eta"], task.completed, task.total))
        ids.add(task.id)  # one run line for the whole run: it is not replaced when stage 2 starts

    _drive(RichReporter(console), FakeTime(), after_epoch=run_line)
    assert seen == [("stage 1/2 epoch 2/2", "eta run 0:16", 3, 12), ("stage 1/2 epoch 2/2", "eta run 0:13", 6, 12),
                    ("stage 2/2 epoch 2/2", "eta run 0:10", 9, 12), ("stage 2/2 epoch 2/2", "eta run 0:00", 12, 12)]
    assert len(ids) == 1
    text = console.export_text()
    assert "stage 1/2: 2 epochs (1 warm-up) x 3 steps, 1,000 weights" in text
    assert re.search(r"^run +━+ 12/12 stage 2/2 epoch 2/2 +0:00:00 eta run 0:00$", text, re.M), text  # the last frame
    # printed above the live display: each summary is on screen once, on a line of its own
    for line in ("stage 1/2 done: 2 epochs (1 warm-up), val acc best 0.700 last 0.700, candidate ops 20 -> 10 kept, 13.0 s",
                 "stage 2/2 done: 2 epochs (1 warm-up), val acc best 0.700 last 0.700, candidate ops 20, 13.0 s"):
        assert text.count(line) == 1


def test_run_clock_estimates_warmup_and_joint_steps_from_their_own_times():
    time = FakeTime()
    clock = RunClock(time)
    clock.set_plan(Plan([(2, 4, 10)]))
    clock.start_stage(0, 4, 10)
    assert clock.remaining_seconds() is None and clock_text(None) == "-:--"
    for _ in range(10):
        time.t += 1.0
        clock.step_done(clock.step + 1)
    clock.epoch_done()
    assert clock.kind() == WARMUP and clock.step_seconds(WARMUP) == 1.0
    assert clock.step_seconds(JOINT) == 2.0  # guessed until measured
    assert clock.remaining_seconds() == 10 * 1.0 + 2 * 10 * 2.0
    clock.epoch_done()  # (an epoch without steps: the second warm-up epoch, skipped here)
    for _ in range(10):
        time.t += 5.0
        clock.step_done(clock.step + 1)
    assert clock.kind() == JOINT and clock.step_seconds(JOINT) == 5.0 and clock.step_seconds(WARMUP) == 1.0
    assert clock.remaining_seconds() == 10 * 5.0  # the last joint epoch
    assert clock_text(3723) == "1:02:03" and clock_text(250) == "4:10"


def test_a_resumed_run_starts_the_clock_at_its_checkpoint():
    clock = RunClock(FakeTime())
    clock.set_plan(Plan([(1, 3, 4), (1, 3, 4)]), start=(1, 2, 1))
    clock.start_stage(1, 3, 4)
    assert (clock.stage, clock.epoch, clock.step) == (1, 2, 1)
    assert clock.done_steps() == 12 + 8 + 1 and clock.total_steps() == 24


# --- (3) list-plugins --------------------------------------------------------------------------------


def test_list_plugins_fits_a_screen_and_names_every_built_in():
    result = invoke("list-plugins", columns=100)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) <= 40, result.stdout
    assert all(len(line) <= 100 for line in lines)
    flat = " ".join(x.strip() for x in lines)  # a wrapped line read back as one
    plugins = nasreg.load_plugins([])
    for info in plugins.infos.values():
        assert info.source == "built-in" and info.name in flat
    for registry in plugins.registries:
        if len(registry):
            assert registry.kind.replace("_", " ") in flat
        for entry in registry:
            name = registry.display_name(entry)
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", flat) or entry.get("kind") == "nas-layer", name
    assert "conv_{n}x{n}_{n}[_s{n}] x192 (conv_1x1_24 ... conv_7x7_64_s3)" in flat  # the nas-layers grid
    assert "conv_3x3_24" not in flat


def test_list_plugins_marks_a_third_party_plugin(testplugin_dist):
    result = invoke("list-plugins", columns=100)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(x.startswith("third-party") and "nasreg_testplugin 0.1.0 (entry point of nasreg-testplugin)" in x
               for x in lines)
    ops = " ".join(x.strip() for x in lines if x.strip())
    assert "nasreg_testplugin [third-party]: test_identity_conv" in ops


# --- (4) describe and --json keys -----------------------------------------------------------------


def test_describe_shows_keys_types_defaults():
    result = invoke("describe", "elkan", columns=200)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "clusterer of plugin elkan (built-in)" in out and "Elkan k-means" in out
    row = next(x for x in out.splitlines() if "n_clusters" in x)
    assert re.search(r"n_clusters +an integer +3 +>= 1 ", row), row
    row = next(x for x in out.splitlines() if "random_state" in x)
    assert "4294967295" in row and "run's seed" in row  # the range, the docstring's sentence
    assert invoke("describe", "clusterers/elkan", columns=200).stdout == out
    assert invoke("describe", "elkan:elkan", columns=200).stdout == out


def test_describe_a_family_member_and_an_operation():
    out = invoke("describe", "conv_3x3_24", columns=200).stdout
    assert "family: conv_{n}x{n}_{n}[_s{n}], 192 entries of plugin nasnet" in out
    assert "keys: none" in out and "NAS layer: 3x3 conv, 24 filters" in out


def test_describe_an_unknown_name_suggests_in_one_line():
    result = invoke("describe", "elkn")
    assert result.exit_code == 2
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert lines == ["error: describe: no entry named 'elkn'; did you mean 'elkan'? "
                     "(`nasreg list-plugins` shows them all)"]
    result = invoke("describe", "clusterer/nope")
    assert result.exit_code == 2 and "no entry named 'clusterer/nope'" in result.stderr
    result = invoke("describe", "colours/elkan")
    assert result.exit_code == 2 and "unknown kind 'colours'" in result.stderr


def test_describe_a_shared_name_lists_the_qualified_ones():
    acme = Path(__file__).parent / "fixtures" / "shared_names" / "acme.py"
    result = invoke("describe", "conv_7x1_1x7", "--plugin", acme)
    assert result.exit_code == 2
    assert "'acme:conv_7x1_1x7' or 'darts:conv_7x1_1x7'" in result.stderr or \
           "'darts:conv_7x1_1x7' or 'acme:conv_7x1_1x7'" in result.stderr
    assert invoke("describe", "acme:conv_7x1_1x7", "--plugin", acme).exit_code == 0


def test_list_plugins_json_has_every_entry_and_its_keys():
    data = json.loads(invoke("list-plugins", "--json").stdout)
    keys = {k["name"]: k for k in data["registries"]["clusterers"]["elkan"]["keys"]}
    assert keys["n_clusters"] == {"name": "n_clusters", "type": "an integer", "required": False, "default": 3,
                                  "range": ">= 1", "description": ""}
    assert keys["init"]["default"] == "k-means++" and keys["init"]["type"] == "one of 'k-means++', 'random'"
    space = {k["name"]: k for k in data["registries"]["search_spaces"]["darts-cell"]["keys"]}
    assert space["operations"]["required"] is True and space["operations"]["default"] is None
    ops = data["registries"]["operations"]
    assert len([n for n, e in ops.items() if e.get("family") == "conv_{n}x{n}_{n}[_s{n}]"]) == 192
    assert ops["conv_3x3_24"]["keys"] == [] and "family" not in ops["sep_conv_3x3"]


# --- (5) warnings -------------------------------------------------------------------------------------


def test_a_python_warning_is_one_clean_line():
    result = invoke("validate", ROOT / "specs" / "quickstart.toml", "--set", "search_space.cells=2")
    assert result.exit_code == 0, result.output
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert lines == ["warning: darts-cell: no normal cell among 2 cells (reductions=[0, 1]): its architecture "
                     "parameters get no gradient"]
    import warnings

    assert warnings.showwarning.__module__ != "nasreg.cli"  # restored when the command ended


# --- (6) chance level -------------------------------------------------------------------------------


@pytest.mark.parametrize("train_acc, cause", [
    (0.11, "the network did not learn"),
    (0.95, "do not match the training ones"),
    (0.2, "barely left chance"),
])
def test_chance_level_line(train_acc, cause):
    line = chance_level_warning({"test_acc": 0.1, "train_acc": train_acc, "num_classes": 10, "epochs": 2})
    assert line.startswith("warning: test accuracy 0.10 is chance level for 10 classes (chance 0.10): ")
    assert cause in line and "\n" not in line


def test_no_chance_level_line_above_the_margin():
    assert chance_level_warning({"test_acc": 0.16, "train_acc": 0.2, "num_classes": 10, "epochs": 2}) is None
    assert chance_level_warning({"test_acc": 0.14, "train_acc": 0.2, "num_classes": 10, "epochs": 2}) is not None
    assert chance_level_warning({"test_acc": None, "num_classes": 10}) is None


def test_the_reporters_say_chance_level_after_a_training(capsys):
    nasreg.QuietReporter().train_end({"test_acc": 0.5, "train_acc": 0.5, "num_classes": 2, "epochs": 1})
    assert capsys.readouterr().err.startswith("warning: test accuracy 0.50 is chance level for 2 classes")
    nasreg.Reporter().train_end({"test_acc": 0.5, "num_classes": 2})  # the API's default: silent
    assert capsys.readouterr().err == ""


class _Stream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_plain_lines_are_wanted_off_a_terminal_and_with_no_color_or_a_dumb_terminal():
    assert PlainReporter.wanted(_Stream(False), {}) is True
    assert PlainReporter.wanted(_Stream(True), {}) is False
    assert PlainReporter.wanted(_Stream(True), {"NO_COLOR": "1"}) is True
    assert PlainReporter.wanted(_Stream(True), {"TERM": "dumb"}) is True
    assert PlainReporter.wanted(object(), {}) is True  # no isatty: not a terminal
