"""Degenerate sizes of a training from scratch (``nasreg train``, ``[evaluate]`` after a search).

A training batch of one image cannot be trained by a batch norm that then sees a single value
per channel (a 1x1 feature map: the auxiliary head's on 8x8 digits). A last batch of one image is
dropped; ``batch_size = 1`` or a single training image with such a network is refused on one
line (exit 2, no traceback) before any file of the training is written, naming the key; the same
sizes on a network without such a layer train normally.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli_checks import check_line, snapshot
from nasreg.cli import main

ROOT = Path(__file__).resolve().parents[1]
DARTS_V2 = ROOT / "genotypes" / "darts_v2.json"
#: A 3-cell network on digits: with the auxiliary head, its last batch norm works on 1x1 maps.
TINY = ["evaluate.data.dataset=digits", "evaluate.epochs=1", "evaluate.cells=3", "evaluate.channels=4",
        "evaluate.cutout=false", "evaluate.batch_size=8", "evaluate.drop_path=0.0", "run.device=cpu",
        "run.threads=1"]
SEARCH = """
[run]
name = "sizes"
threads = 1
device = "cpu"
[data]
dataset = "digits"
limit = 32
batch_size = 16
[search_space]
name = "darts-cell"
operations = ["none", "skip_connect", "sep_conv_3x3"]
cells = 3
channels = 4
nodes = 2
[search]
epochs = 1
warmup_epochs = 0
[strategy]
name = "darts"
[selector]
name = "argmax"
[evaluate]
epochs = 1
cells = 3
channels = 4
auxiliary = true
cutout = false
"""


@pytest.fixture(autouse=True)
def _keep_threads(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NASREG_DISABLE_PLUGINS", "plots")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def train(*sets: str, out: str = "out"):
    argv = ["train", str(DARTS_V2), "--out", out, "-q"]
    for s in (*TINY, *sets):
        argv += ["--set", s]
    return CliRunner().invoke(main, argv, env={"COLUMNS": "200"})


def nothing_written(folder: Path) -> bool:
    """No file under ``folder`` (it may exist: the run directory is made, and locked, first)."""
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


@pytest.mark.parametrize("sets,fragments", [
    (["evaluate.limit=1", "evaluate.auxiliary=true"], ("[evaluate] limit: 1 training image", "auxiliary = false")),
    (["evaluate.batch_size=1", "evaluate.limit=16", "evaluate.auxiliary=true"],
     ("[evaluate] batch_size: 1 image per training batch", "use a batch_size >= 2")),
    (["evaluate.batch_size=1", "evaluate.limit=1", "evaluate.auxiliary=true"], ("[evaluate] batch_size: 1",)),
], ids=["one-image", "batch-of-one", "both"])
def test_one_image_batches_the_network_cannot_train_are_refused_before_anything_is_written(tmp_path, sets, fragments):
    result = train(*sets)
    check_line(result.exit_code, result.stderr, result.output, (*fragments, "1x1 feature map"))
    assert nothing_written(tmp_path / "out")


@pytest.mark.parametrize("sets", [
    ["evaluate.limit=9", "evaluate.auxiliary=true"],            # a last batch of one image: dropped
    ["evaluate.limit=17", "evaluate.auxiliary=true"],
    ["evaluate.limit=2", "evaluate.batch_size=2", "evaluate.auxiliary=true"],
    ["evaluate.batch_size=1", "evaluate.limit=6", "evaluate.auxiliary=false"],  # no 1x1 batch norm
    ["evaluate.limit=1", "evaluate.auxiliary=false"],
], ids=["9-by-8", "17-by-8", "2-by-2", "batch-of-one-no-aux", "one-image-no-aux"])
def test_the_same_sizes_train_when_the_network_can(tmp_path, sets):
    result = train(*sets)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["test_acc"] is not None and len((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("sets,fragment", [
    (["evaluate.limit=1"], "[evaluate] limit: 1 training image"),
    (["evaluate.batch_size=1", "evaluate.limit=4"], "[evaluate] batch_size: 1 image per training batch"),
], ids=["one-image", "batch-of-one"])
def test_after_a_search_the_evaluation_is_refused_before_eval_is_made(tmp_path, sets, fragment):
    (tmp_path / "spec.toml").write_text(SEARCH)
    argv = ["run", "spec.toml", "--out", "run", "-q", "--no-preflight"]
    for s in sets:
        argv += ["--set", s]
    result = CliRunner().invoke(main, argv, env={"COLUMNS": "200"})
    check_line(result.exit_code, result.stderr, result.output, (fragment,))
    assert (tmp_path / "run" / "summary.json").is_file() and not (tmp_path / "run" / "eval").exists()
    # resume refuses it the same way, touching nothing
    before = snapshot(tmp_path)
    again = CliRunner().invoke(main, ["resume", "run", "-q"], env={"COLUMNS": "200"})
    check_line(again.exit_code, again.stderr, again.output, (fragment,))
    assert snapshot(tmp_path) == before
