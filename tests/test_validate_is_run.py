"""``nasreg validate`` makes every check ``nasreg run`` makes before its first step (issue 13, class 6).

A spec validate accepts is never rejected by run for its keys, and a degenerate setting either
gets one line naming the keys from both commands or runs to the end:

* refused by both, with the same line, nothing written: the DARTS space's partial channels
  larger than (or not dividing) the channels, a reduction index beyond the cells or listed twice,
  a supernet strategy without a selector or on a space without a supernet, ``[data] limit = 1``,
  batches of one image (``batch_size = 1``, or a split of one image) on a supernet whose
  BatchNorm layers see 1x1 feature maps;
* refused by run before it writes anything: a dataset of fewer than two images;
* run to the end: a last batch of one image (dropped), batch size 1 on maps of 2x2 and more,
  learning rates beyond float32 (the divergence message, or a finished run).

The searches are tiny (64 digits, 2 cells of 4 channels, one epoch: about a second each).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli_checks import SPEC, check_line, snapshot, user  # noqa: F401
from nasreg.cli import main

DARTS = """\
[run]
name = "tiny"
seed = 0
device = "cpu"
threads = 1

[data]
dataset = "digits"
batch_size = 32
limit = 64

[search_space]
name = "darts-cell"
operations = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]
nodes = 2
cells = 2
channels = 4
reductions = [1]

[search]
epochs = 1

[strategy]
name = "darts"

[selector]
name = "argmax"
"""

#: Three reduction cells on 8x8 digits: the last cells' feature maps are 1x1.
ONE_PIXEL = ("search_space.cells=3", "search_space.reductions=[0, 1, 2]")


def sets(*overrides: str) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def both_refuse(user, text: str, overrides: tuple[str, ...], expect: tuple[str, ...]) -> str:  # noqa: F811
    """validate and run give the same one line (exit 2, no traceback, nothing written)."""
    path = user.spec(text)
    checked = user.fails("validate", path, *sets(*overrides), expect=expect)
    ran = user.fails("run", path, *sets(*overrides), "-q", expect=expect)
    assert checked == ran
    assert not (user.root / "runs").exists()
    return checked


REFUSED = {
    "partial channels larger than the channels": (
        DARTS, ("search_space.partial_channels=32",),
        ("[search_space]", "partial_channels", "channels (4)", "(32)")),
    "partial channels not dividing the channels": (
        DARTS, ("search_space.partial_channels=3",), ("[search_space]", "partial_channels", "(3)")),
    "reduction index beyond the cells": (
        DARTS, ("search_space.reductions=[5]",), ("[search_space]", "reductions", "cell index 5", "2 cells")),
    "reduction index equal to the cell count": (
        DARTS, ("search_space.reductions=[0, 2]",), ("reductions", "cell index 2")),
    "reduction index listed twice": (
        DARTS, ("search_space.reductions=[1, 1]",), ("reductions", "duplicate cell index 1")),
    "partial channels and too many cells together": (
        DARTS, ("search_space.partial_channels=8", "search_space.channels=12"), ("partial_channels", "(12)", "(8)")),
    "a supernet strategy without a selector": (
        DARTS.replace('[selector]\nname = "argmax"\n', ""), (), ("[selector] name: missing required key", "'darts'")),
    "a supernet strategy on a space without a supernet": (
        DARTS.replace('name = "darts-cell"', 'name = "nasnet-cell"').replace("nodes = 2\n", "blocks = 2\n")
        .replace("reductions = [1]\n", "")
        .replace('"none", "max_pool_3x3", "skip_connect", ', '"max_pool_3x3", '),
        (), ("[strategy] name", "'nasnet-cell' has none")),
    "a limit of one image (toy)": (SPEC, ("data.limit=1",), ("[data] limit", "1 image cannot be split")),
    "a limit of one image (darts)": (DARTS, ("data.limit=1",), ("[data] limit", "1 image cannot be split")),
    "batch size 1 on 1x1 feature maps": (
        DARTS, ("data.batch_size=1", "data.limit=8", *ONE_PIXEL),
        ("[data] batch_size", "a batch of one image", "per channel", "1, 1]")),
    "two images: splits of one on 1x1 feature maps": (
        DARTS, ("data.limit=2", *ONE_PIXEL), ("[data] limit, train_portion", "1 training and 1 validation")),
    "three images: a validation split of one on 1x1 feature maps": (
        DARTS, ("data.limit=3", *ONE_PIXEL), ("[data] limit, train_portion", "2 training and 1 validation")),
    "a train portion leaving one training image on 1x1 feature maps": (
        DARTS, ("data.limit=40", "data.train_portion=0.001", *ONE_PIXEL),
        ("[data] limit, train_portion", "1 training and 39 validation")),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_validate_and_run_refuse_with_the_same_line(user, case):  # noqa: F811
    text, overrides, expect = REFUSED[case]
    both_refuse(user, text, overrides, expect)


def test_validate_builds_every_shipped_space_without_torch_being_needed_for_the_checks(user):  # noqa: F811
    """The space is built when a spec is validated: a bad key of nas-layers (a sampling space) is
    refused by validate, as run refuses it."""
    text = DARTS.replace('name = "darts-cell"', 'name = "nas-layers"').replace('name = "darts"\n', 'name = "random"\n', 1)
    text = text.replace('operations = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]\nnodes = 2\ncells = 2\n'
                        'channels = 4\nreductions = [1]\n', "layers = 2\nfilter_heights = [3, 3]\n")
    text = text.replace('[selector]\nname = "argmax"\n', "").replace("[search]\nepochs = 1\n", "")
    both_refuse(user, text, (), ("[search_space]", "filter_heights", "3", "listed twice"))


def run_ok(tmp_path, text: str, *overrides: str) -> dict:
    """Validate, then run the spec to its end; the summary."""
    path = tmp_path / "spec.toml"
    path.write_text(text)
    runner = CliRunner()
    checked = runner.invoke(main, ["validate", str(path), *sets(*overrides)])
    assert checked.exit_code == 0, checked.output
    out = tmp_path / "out"
    result = runner.invoke(main, ["run", str(path), "--out", str(out), "-q", *sets(*overrides)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return json.loads((out / "summary.json").read_text())


def metrics(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]


def test_a_last_batch_of_one_image_is_dropped_and_the_run_finishes(tmp_path):
    """66 images: 33 + 33, a last batch of one image on 1x1 maps in both splits (it crashed)."""
    summary = run_ok(tmp_path, DARTS, "data.limit=66", *ONE_PIXEL)
    assert summary["genotype"]["space"] == "darts-cell"
    assert metrics(tmp_path)[0]["val_loss"] == metrics(tmp_path)[0]["val_loss"]  # finite, not NaN


def test_batch_size_one_on_maps_of_two_pixels_or_more_runs(tmp_path):
    """Batch size 1 is fine where BatchNorm sees more than one value per channel (2x2 maps)."""
    summary = run_ok(tmp_path, DARTS, "data.batch_size=1", "data.limit=8")
    assert len(metrics(tmp_path)) == 1 and summary["final_val_acc"] is not None


@pytest.mark.parametrize("overrides", [("strategy.alpha_lr=1e300",), ("strategy.order=2", "strategy.alpha_lr=1e300"),
                                       ("strategy.alpha_lr=1e39", "strategy.alpha_betas=[0.999999, 0.9]")])
def test_an_architecture_rate_beyond_float32_runs(tmp_path, overrides):
    """Adam's bias-corrected first step overflowed torch's float conversion (a traceback)."""
    run_ok(tmp_path, DARTS, *overrides)


@pytest.mark.parametrize("overrides", [("strategy.w_lr=1e300",), ("strategy.w_lr=1e300", "data.limit=64", "strategy.order=2"),
                                       ("strategy.w_lr=1e39", "strategy.w_weight_decay=1e300")])
def test_a_weight_rate_beyond_float32_is_the_divergence_message(user, overrides):  # noqa: F811
    path = user.spec(DARTS)
    checked = CliRunner().invoke(main, ["validate", str(path), *sets(*overrides)])
    assert checked.exit_code == 0, checked.output
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(user.root / "out"), "-q", *sets(*overrides)])
    check_line(result.exit_code, result.stderr, result.output, ("training diverged", "try a lower [strategy] w_lr"))


ONE_IMAGE_PLUGIN = """\
import torch
from torch.utils.data import TensorDataset

import nasreg


@nasreg.hookimpl
def register_datasets(register):
    register("one-image", lambda: nasreg.DatasetBundle(
        train=TensorDataset(torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long)),
        num_classes=2, in_channels=1, image_size=8))
"""


def test_a_dataset_of_one_image_is_one_line_before_anything_is_written(user):  # noqa: F811
    """The dataset's size is known once it is built: run refuses it before the run directory."""
    (user.root / "one.py").write_text(ONE_IMAGE_PLUGIN)
    text = DARTS.replace('[run]\n', '[run]\nplugins = ["one.py"]\n').replace('"digits"', '"one-image"')
    path = user.spec(text.replace("limit = 64", "limit = 0"))
    user.fails("run", path, "-q", expect=("[data] dataset", "'one-image' has 1 image(s)", "at least 2"))
    assert not (user.root / "runs").exists()
