"""`nasreg train`, `[evaluate]` after `nasreg run`, and `nasreg show`, through click's CliRunner.

User errors are one line and exit 2, as everywhere else in the command line (tests/test_cli.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nasreg.cli import main

ROOT = Path(__file__).resolve().parents[1]
GENOTYPES = ROOT / "genotypes"
DARTS_V2 = GENOTYPES / "darts_v2.json"
#: DARTS_V2, 20 cells, 36 channels, CIFAR-10, without the auxiliary head (DARTS: "3.3M").
DARTS_V2_PARAMS = 3_349_342
TINY_TRAIN = ["evaluate.data.dataset=digits", "evaluate.epochs=1", "evaluate.cells=2", "evaluate.channels=4",
              "evaluate.cutout=false", "evaluate.limit=128", "evaluate.batch_size=32", "run.device=cpu",
              "run.threads=1"]
TINY_SEARCH = ["data.limit=160", "data.batch_size=32", "search_space.cells=3", "search_space.channels=4",
               "search.epochs=2", "search.warmup_epochs=1", "run.threads=1", "run.device=cpu",
               "evaluate.epochs=1", "evaluate.cells=2", "evaluate.channels=4", "evaluate.limit=128"]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def invoke(*args: str | Path, sets: list[str] = ()):
    argv = [str(a) for a in args]
    for s in sets:
        argv += ["--set", s]
    return CliRunner().invoke(main, argv, env={"COLUMNS": "200"})


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- nasreg train --dry-run --------------------------------------------------------------------


def test_dry_run_darts_v2_has_the_published_parameter_count():
    result = invoke("train", DARTS_V2, "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "(cells = 20, channels = 36, auxiliary = true): input 3x32x32, 10 classes (cifar10)" in out
    params = int(re.search(r"parameters without auxiliary head: ([\d,]+)", out)[1].replace(",", ""))
    with_aux = int(re.search(r"parameters with auxiliary head: ([\d,]+)", out)[1].replace(",", ""))
    assert params == DARTS_V2_PARAMS
    assert round(params / 1e6, 1) == 3.3  # the published 3.3M
    assert with_aux > params
    flops = int(re.search(r"FLOPs per image \(one forward pass\): ([\d,]+)", out)[1].replace(",", ""))
    assert 0.9e9 < flops < 1.2e9  # about 528M multiply-adds


@pytest.mark.parametrize("name", ["darts_v1", "nasnet_a", "amoebanet_a"])
def test_dry_run_every_shipped_genotype(name, tmp_path):
    result = invoke("train", GENOTYPES / f"{name}.json", "--dry-run", "--out", tmp_path / "x")
    assert result.exit_code == 0, result.output
    assert "parameters without auxiliary head" in result.stdout
    assert not (tmp_path / "x").exists()


def test_dry_run_takes_the_spec_and_set():
    result = invoke("train", DARTS_V2, "--dry-run", "--spec", ROOT / "specs" / "eval-dgdarts.toml",
                    sets=["evaluate.cells=8", "evaluate.channels=16"])
    assert result.exit_code == 0, result.output
    assert "(cells = 8, channels = 16, auxiliary = true)" in result.stdout


# --- nasreg train ------------------------------------------------------------------------------


def test_train_on_digits_writes_results_and_metrics(tmp_path):
    out = tmp_path / "train"
    result = invoke("train", DARTS_V2, "--out", out, "-q", sets=TINY_TRAIN)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.stdout
    results = json.loads((out / "results.json").read_text())
    for key in ("test_acc", "test_error", "params", "params_with_auxiliary", "flops", "macs", "wall_seconds",
                "peak_memory_mb", "genotype"):
        assert results[key] is not None, key
    assert 0.0 <= results["test_acc"] <= 1.0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and {"test_acc", "test_error", "train_loss", "lr"} <= set(metrics[0])
    assert (out / "curves.png").is_file() and (out / "spec.toml").is_file()
    # The run directory is refused a second time, as for searches.
    again = invoke("train", DARTS_V2, "--out", out, "-q", sets=TINY_TRAIN)
    assert_one_line_error(again, "already exists")


def test_train_default_run_directory_is_named_after_the_genotype(tmp_path):
    result = invoke("train", DARTS_V2, "-q", sets=[*TINY_TRAIN, f"run.out_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "train-darts_v2" / "results.json").is_file()


@pytest.mark.parametrize("content,fragments", [
    (None, ["no such file"]),
    ("{not json", ["not valid JSON"]),
    ('{"format": "other"}', ["not a nasreg genotype"]),
])
def test_bad_genotype_file_is_one_line(tmp_path, content, fragments):
    path = tmp_path / "g.json"
    if content is not None:
        path.write_text(content)
    assert_one_line_error(invoke("train", path, "--dry-run"), str(path), *fragments)


def test_genotype_with_an_unknown_op_is_one_line(tmp_path):
    data = json.loads(DARTS_V2.read_text())
    data["cells"]["reduce"]["edges"][3]["op"] = "sep_conv_9x9"
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    assert_one_line_error(invoke("train", path, "--dry-run"), str(path), "cells.reduce.edges[3]",
                          "unknown operation 'sep_conv_9x9'")


def test_genotype_with_a_missing_node_is_one_line(tmp_path):
    data = json.loads(DARTS_V2.read_text())
    data["cells"]["normal"]["edges"] = [e for e in data["cells"]["normal"]["edges"] if e["node"] != 3]
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    assert_one_line_error(invoke("train", path, "--dry-run"), str(path), "node 3 has no incoming edge")


def test_train_spec_errors_are_one_line(tmp_path):
    assert_one_line_error(invoke("train", DARTS_V2, "--dry-run", sets=["evaluate.epoch=3"]),
                          "[evaluate] epoch: unknown key; did you mean 'epochs'?")
    assert_one_line_error(invoke("train", DARTS_V2, "--dry-run", "--spec", tmp_path / "none.toml"),
                          "none.toml: no such file")
    result = invoke("train", DARTS_V2, sets=["evaluate.data.dataset=digits", "evaluate.autoaugment=true"])
    assert_one_line_error(result, "autoaugment: dataset 'digits' has no 'autoaugment' key")
    # Training CIFAR-10 without its files: one line saying where it looked.
    result = invoke("train", DARTS_V2, "--out", tmp_path / "o", sets=[f"evaluate.data.root={tmp_path}"])
    assert_one_line_error(result, "CIFAR-10 not found")
    assert not (tmp_path / "o").exists()  # checked before the run directory is made


# --- [evaluate] after a search -------------------------------------------------------------------


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The quickstart search, shrunk, with its [evaluate] section shrunk too."""
    out = tmp_path_factory.mktemp("qs") / "run"
    threads = torch.get_num_threads()
    try:
        result = invoke("run", ROOT / "specs" / "quickstart.toml", "--out", out, "-q", sets=TINY_SEARCH)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out, result


def test_evaluate_runs_after_the_search(searched):
    out, result = searched
    assert "final validation accuracy" in result.stdout and "test accuracy" in result.stdout
    for name in ("spec.toml", "metrics.jsonl", "genotype.json", "checkpoint.pt", "results.json", "curves.png"):
        assert (out / "eval" / name).is_file(), name
    results = json.loads((out / "eval" / "results.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert results["genotype"]["cells"] == summary["genotype"]["cells"]
    assert results["search_cost"]["wall_seconds"] == pytest.approx(summary["wall_seconds"])
    assert results["search_cost"]["gpu_days"] is None  # a CPU search
    assert results["network"] == {"cells": 2, "channels": 4, "auxiliary": False} and results["dataset"] == "digits"
    spec = (out / "spec.toml").read_text()
    assert "[evaluate]" in spec and "[evaluate.data]" in spec


def test_show_a_search_run_with_its_evaluation(searched):
    out, _ = searched
    result = invoke("show", out)
    assert result.exit_code == 0, result.output
    text = result.stdout
    for fragment in (f"search run {out}: finished", "[search_space]", "[evaluate]", "genotype (darts-cell)",
                     "normal:", "stages", "metrics (last", "summary", "final_val_acc", "evaluation (eval/)",
                     "results", "test_acc", "search_cost"):
        assert fragment in text, fragment


def test_show_a_training_run(tmp_path):
    out = tmp_path / "train"
    assert invoke("train", DARTS_V2, "--out", out, "-q", sets=TINY_TRAIN).exit_code == 0
    result = invoke("show", out, "--last", "0")
    assert result.exit_code == 0, result.output
    for fragment in (f"train run {out}: finished", "[evaluate]", "[evaluate.data]", "genotype (darts-cell)",
                     "metrics (last 1 of 1 epochs)", "test acc", "params_with_auxiliary"):
        assert fragment in result.stdout, fragment


def test_show_an_unfinished_run_with_a_torn_metrics_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.toml").write_text('[run]\nname = "x"\n[search_space]\nname = "darts-cell"\n')
    (run / "metrics.jsonl").write_text('{"stage": 0, "epoch": 0, "val_acc": 0.5}\n{"stage": 0, "ep')
    result = invoke("show", run)
    assert result.exit_code == 0, result.output
    assert "search run" in result.stdout and "unfinished" in result.stdout
    assert "1 unreadable line(s)" in result.stdout


def test_show_errors_are_one_line(tmp_path):
    assert_one_line_error(invoke("show", tmp_path / "nope"), "nope: no such directory")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(invoke("show", tmp_path / "file"), "not a directory")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("show", tmp_path / "empty"), "not a nasreg run directory")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{trunc")
    assert_one_line_error(invoke("show", bad), "results.json: not valid JSON")


def test_help_lists_train_and_show():
    result = invoke("--help")
    assert "train" in result.output and "show" in result.output
    assert "--dry-run" in invoke("train", "--help").output


def test_the_training_progress_display(tmp_path):
    """Without -q the rich display shows the training bars (on stderr) and closes cleanly."""
    result = invoke("train", DARTS_V2, "--out", tmp_path / "t", sets=TINY_TRAIN)
    assert result.exit_code == 0, result.output
    assert "training: 1 epochs x 4 steps" in result.stderr and "test acc" in result.stderr
