"""`nasreg resume` refuses what does not belong together, before it changes anything.

A search checkpoint records the spec it was written under (digest and resolved spec), the stage
plan and the steps per epoch. Each case below damages one thing in a stopped run directory (the
toy spec in two stages, stopped after its first step: a mid-epoch checkpoint) and runs ``nasreg
resume`` through the CLI: exit status 2, one ``error:`` line naming what differs, no traceback,
and every file of the test folder unchanged (bytes and mtimes). The classes:

* ``spec.toml`` edited after the run (seed, operations, channels, epochs, batch size, the
  strategy's and the selector's keys, several at once);
* a checkpoint copied from another spec's run (also one without a digest: its shapes differ);
* keys missing from the checkpoint;
* a position outside the spec's plan (stage, epoch, step; negative, beyond) and a plan or data
  that changed since;
* wrong types (a string epoch, a float stage, a boolean, a list of candidates, a non-tensor weight,
  RNG and data-order states that cannot be restored);
* state that does not fit what the spec builds (weights, strategy state, recorded gradients);
* a finished search whose evaluation did not run, its ``spec.toml`` edited (``summary.json``'s
  ``spec_hash``).

Controls: the untouched directory, and one whose checkpoint predates digests, resume and finish.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import nasreg
import nasreg._core.search as search_mod
from nasreg._core import checkpoint
from nasreg.cli import main

from cli_checks import SPEC, snapshot, user  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread_module")

ENV = {"NASREG_DISABLE_PLUGINS": "plots"}
#: The toy spec in two stages of two epochs (2 steps each); the directory is stopped after step 1.
TWO_STAGES = SPEC.replace('name = "toy-select"', 'name = "toy-select"\nstages = 2')


def invoke(*args):
    threads = torch.get_num_threads()
    try:
        return CliRunner().invoke(main, [str(a) for a in args], env=ENV)
    finally:
        torch.set_num_threads(threads)


def stopped_run(folder: Path, spec_text: str = TWO_STAGES) -> Path:
    """A run of ``spec_text`` stopped after its first step (exit 130, a mid-epoch checkpoint)."""
    spec = folder / "spec.toml"
    spec.write_text(spec_text)
    out = folder / "run"
    enter = search_mod._StopRequests.__enter__

    def stop_at_once(self):
        enter(self)
        self.requested = True  # as if Ctrl-C came during the first step
        return self

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(search_mod._StopRequests, "__enter__", stop_at_once)
        result = invoke("run", spec, "--out", out, "-q")
    assert result.exit_code == 130, result.output
    assert (out / "checkpoint.pt").is_file() and not (out / "summary.json").exists()
    return out


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    return stopped_run(tmp_path_factory.mktemp("stopped"))


@pytest.fixture(scope="module")
def other_spec_run(tmp_path_factory) -> Path:
    """The same search with 8 channels and seed 2, stopped at the same point."""
    text = TWO_STAGES.replace("seed = 1", "seed = 2").replace("nodes = 2", "nodes = 2\nchannels = 8")
    return stopped_run(tmp_path_factory.mktemp("other"), text)


@pytest.fixture
def run_dir(stopped, user) -> Path:  # noqa: F811
    """A fresh copy of the stopped run directory in the user's folder."""
    out = user.root / "run"
    shutil.copytree(stopped, out)
    return out


def edit_spec(run: Path, old: str, new: str) -> None:
    path = run / "spec.toml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def edit_checkpoint(run: Path, change) -> None:
    path = run / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


# --- spec.toml edited after the run ---------------------------------------------------------------

@pytest.mark.parametrize("old, new, expect", [
    ("seed = 1", "seed = 2", "[run] seed 1 -> 2"),
    ('    "toy_conv",\n', "", "[search_space] operations"),
    ("channels = 4", "channels = 8", "[search_space] channels 4 -> 8"),
    ("epochs = 2", "epochs = 3", "[search] epochs 2 -> 3"),
    ("batch_size = 8", "batch_size = 4", "[data] batch_size 8 -> 4"),
    ("w_lr = 0.05", "w_lr = 0.5", "[strategy] w_lr 0.05 -> 0.5"),
    ("stages = 2", "stages = 3", "[selector] stages 2 -> 3"),
    ("n_clusters = 2", "n_clusters = 3", "[selector.clusterer] n_clusters 2 -> 3"),
], ids=["seed", "operations", "channels", "epochs", "batch-size", "strategy", "selector", "clusterer"])
def test_an_edited_spec_is_refused_naming_the_key(run_dir, user, old, new, expect):  # noqa: F811
    edit_spec(run_dir, old, new)
    line = user.fails("resume", run_dir, expect=(str(run_dir / "spec.toml"), "edited after the run", expect,
                                                 "resume refuses"))
    assert "Traceback" not in line


def test_several_edits_are_listed_in_one_line(run_dir, user):  # noqa: F811
    edit_spec(run_dir, "seed = 1", "seed = 7")
    edit_spec(run_dir, "channels = 4", "channels = 5")
    edit_spec(run_dir, "alpha_lr = 0.01", "alpha_lr = 0.02")
    user.fails("resume", run_dir, expect=("[run] seed 1 -> 7", "[search_space] channels 4 -> 5",
                                          "[strategy] alpha_lr 0.01 -> 0.02"))


# --- a checkpoint from another spec's run --------------------------------------------------------------

def test_a_checkpoint_of_another_spec_is_refused(run_dir, other_spec_run, user):  # noqa: F811
    shutil.copy2(other_spec_run / "checkpoint.pt", run_dir / "checkpoint.pt")
    user.fails("resume", run_dir, expect=("edited after the run", "[run] seed 2 -> 1",
                                          "[search_space] channels 8 -> 4"))


def test_a_foreign_checkpoint_without_a_digest_is_refused_by_its_shapes(run_dir, other_spec_run, user):  # noqa: F811
    shutil.copy2(other_spec_run / "checkpoint.pt", run_dir / "checkpoint.pt")
    edit_checkpoint(run_dir, lambda s: [s.pop(k) for k in ("spec_digest", "spec", "plan")])
    user.fails("resume", run_dir, expect=(str(run_dir / "checkpoint.pt"), "'model' does not fit", "shape of"))


# --- keys missing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["model", "stage", "rng", "loader_states", "strategy"])
def test_a_checkpoint_with_a_key_missing_is_refused(run_dir, user, key):  # noqa: F811
    edit_checkpoint(run_dir, lambda s: s.pop(key))
    user.fails("resume", run_dir, expect=(str(run_dir / "checkpoint.pt"), f"'{key}'", "missing"))


# --- a position outside the plan ---------------------------------------------------------------------------

@pytest.mark.parametrize("changes, expect", [
    ({"stage": 2}, "'stage' is 2, but the spec has 2 stage(s)"),
    ({"stage": -1}, "'stage' is -1"),
    ({"epoch": -5}, "'epoch' is -5, but stage 0 has 2 epoch(s)"),
    ({"epoch": 3}, "'epoch' is 3"),
    ({"step": -1}, "'step' is -1"),
    ({"step": 2}, "'step' is 2, but an epoch has 2 step(s)"),
    ({"step": 1000}, "'step' is 1000"),
    ({"epoch": 2, "step": 1}, "'step' is 1 at epoch 2 of stage 0"),
    ({"stage": 1}, "'stage_infos' records 0 finished stage(s) at stage 1"),
    ({"accum": None}, "'accum' is none"),
], ids=["stage-beyond", "stage-negative", "epoch-negative", "epoch-beyond", "step-negative", "step-at-end",
        "step-beyond", "step-after-last-epoch", "stage-without-history", "mid-epoch-without-sums"])
def test_a_position_outside_the_plan_is_refused(run_dir, user, changes, expect):  # noqa: F811
    edit_checkpoint(run_dir, lambda s: s.update(changes))
    user.fails("resume", run_dir, expect=(str(run_dir / "checkpoint.pt"), expect, "resume refuses"))


def test_a_changed_plan_or_data_size_is_refused(run_dir, user):  # noqa: F811
    edit_checkpoint(run_dir, lambda s: s["plan"].update(stages=[[1, 3], [1, 3]]))
    user.fails("resume", run_dir, expect=("stage plan", "[[1, 3], [1, 3]]", "[[1, 2], [1, 2]]"))
    edit_checkpoint(run_dir, lambda s: s["plan"].update(stages=[[1, 2], [1, 2]], steps=5))
    user.fails("resume", run_dir, expect=("written with 5 steps per epoch, the data now gives 2",))


# --- wrong types -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, expect", [
    ("epoch", "1", "'epoch' is '1', expected an integer"),
    ("stage", 0.5, "'stage' is 0.5, expected an integer"),
    ("step", True, "'step' is true, expected an integer"),
    ("candidates", [["toy_skip"]], "'candidates' is a list"),
    ("elapsed", float("nan"), "'elapsed' is NaN"),
    ("model", {"stem.0.weight": [1.0, 2.0]}, "'model' is a dict, expected a table of tensors"),
    ("recorder", {"acc": None, "count": -3}, "'recorder'"),
    ("loader", "gpu", "'loader' is 'gpu'"),
    ("spec_digest", 5, "the recorded spec digest is 5, expected a string"),
    ("plan", [1, 2], "'plan' is a list"),
], ids=["string-epoch", "float-stage", "bool-step", "list-candidates", "nan-elapsed", "list-weight",
        "negative-count", "unknown-loader", "int-digest", "list-plan"])
def test_a_value_of_the_wrong_type_is_refused(run_dir, user, key, value, expect):  # noqa: F811
    edit_checkpoint(run_dir, lambda s: s.update({key: value}))
    user.fails("resume", run_dir, expect=(str(run_dir / "checkpoint.pt"), expect))


@pytest.mark.parametrize("change, expect", [
    (lambda s: s["candidates"].update(normal=[["toy_skip"]]), "'candidates' 'normal': expected 3 edge(s)"),
    (lambda s: s["candidates"]["normal"].__setitem__(0, ["sep_conv_9x9"]), "'candidates' 'normal' edge 0"),
    (lambda s: s["candidates"]["normal"].__setitem__(1, []), "'candidates' 'normal' edge 1"),
    (lambda s: s["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)), "'rng' cannot be restored"),
    (lambda s: s["rng"].update(python=[3, [1, 2], None]), "'rng' cannot be restored"),
    (lambda s: s["loader_states"].update(train=torch.zeros(2)), "'loader_states' cannot be restored"),
], ids=["edge-count", "unknown-op", "empty-edge", "torch-rng", "python-rng", "loader-state"])
def test_candidates_and_states_that_cannot_be_restored_are_refused(run_dir, user, change, expect):  # noqa: F811
    edit_checkpoint(run_dir, change)
    user.fails("resume", run_dir, expect=(str(run_dir / "checkpoint.pt"), expect, "resume refuses"))


# --- state that does not fit what the spec builds ------------------------------------------------------------

def _drop_one_weight(state):
    state["model"].pop(next(iter(state["model"])))


def _wrong_shape(state):
    key = next(k for k, v in state["model"].items() if v.dim() == 4)
    state["model"][key] = torch.zeros(1, 1, 1, 1)


@pytest.mark.parametrize("change, expect", [
    (_drop_one_weight, "'model' does not fit the supernet"),
    (lambda s: s["model"].update(extra=torch.zeros(1)), "unexpected extra"),
    (_wrong_shape, "shape of"),
    (lambda s: s["recorder"].update(acc=torch.zeros(99)), "'recorder' holds 99 architecture gradients"),
], ids=["weight-missing", "weight-extra", "weight-shape", "recorder"])
def test_state_that_does_not_fit_is_refused(run_dir, user, change, expect):  # noqa: F811
    edit_checkpoint(run_dir, change)
    user.fails("resume", run_dir, expect=(str(run_dir / "checkpoint.pt"), expect, "resume refuses"))


# --- controls -------------------------------------------------------------------------------------------------

def test_an_untouched_run_resumes_and_finishes(run_dir, user):  # noqa: F811
    result = invoke("resume", run_dir, "-q")
    assert result.exit_code == 0, result.output
    metrics = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 4  # two stages of two epochs, none twice
    assert (run_dir / "summary.json").is_file()


def test_a_checkpoint_without_a_digest_resumes_with_a_notice(run_dir, user):  # noqa: F811
    edit_checkpoint(run_dir, lambda s: [s.pop(k) for k in ("spec_digest", "spec", "plan")])
    result = invoke("resume", run_dir)
    assert result.exit_code == 0, result.output
    assert "written by an older nasreg (no spec digest)" in result.stderr
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4


# --- a finished search whose evaluation did not run ---------------------------------------------------------

DIGITS = """
[run]
name = "tiny"
threads = 1
device = "cpu"
[data]
dataset = "digits"
limit = 48
batch_size = 16
[search_space]
name = "darts-cell"
operations = ["none", "skip_connect", "max_pool_3x3"]
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
batch_size = 32
cells = 2
channels = 4
auxiliary = false
cutout = false
drop_path = 0.0
limit = 32
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A finished search of a spec with [evaluate], its evaluation not run."""
    folder = tmp_path_factory.mktemp("searched")
    (folder / "spec.toml").write_text(DIGITS)
    threads = torch.get_num_threads()
    try:
        result = nasreg.search(folder / "spec.toml", out=folder / "run", evaluate=False, preflight=False)
    finally:
        torch.set_num_threads(threads)
    assert (result.run_dir / "summary.json").is_file() and not (result.run_dir / "eval").exists()
    return folder / "run"


@pytest.mark.parametrize("keep_checkpoint, expect", [
    (True, "[run] seed 0 -> 5"),
    (False, "summary.json records"),
], ids=["keys-named-from-the-checkpoint", "hash-only"])
def test_a_finished_search_with_an_edited_spec_is_not_evaluated(searched, user, keep_checkpoint, expect):  # noqa: F811
    out = user.root / "run"
    shutil.copytree(searched, out)
    if not keep_checkpoint:
        (out / "checkpoint.pt").unlink()
    (out / "eval").mkdir()
    (out / "eval" / "metrics.jsonl").write_text('{"epoch": 0}\n')  # a stopped evaluation's: must stay
    edit_spec(out, "seed = 0", "seed = 5")
    user.fails("resume", out, expect=(str(out / "spec.toml"), "edited after the search", expect))


def test_checkpoint_records_what_it_belongs_to(stopped):
    state = checkpoint.load(stopped / "checkpoint.pt")
    spec = nasreg.load_spec(stopped / "spec.toml")
    assert state["spec_digest"] == spec.digest()
    assert state["spec"] == spec.resolved()
    assert state["plan"] == {"stages": [[1, 2], [1, 2]], "steps": 2}


# --- a sampling search (reinforce): its journal records the spec of each child ----------------------------

RL_SETS = ["run.threads=1", "run.device=cpu", "data.limit=64", "strategy.updates=1", "strategy.children_per_update=2",
           "strategy.child_epochs=1", "strategy.workers=1", "search_space.layers=2"]


@pytest.mark.parametrize("recorded", ["another", None], ids=["other-spec", "no-hash"])
def test_a_sampling_journal_of_another_spec_is_refused(tmp_path, recorded):
    spec = nasreg.load_spec(Path(__file__).resolve().parents[1] / "specs" / "nas-rl.toml", overrides=RL_SETS)
    run = nasreg.RunDir(tmp_path / "run").mkdir()
    run.write_toml("spec.toml", spec.resolved())
    child = {"index": 0, "update": 0, "child": 0, "choices": [0, 0], "seed": 1, "reward": 0.5}
    if recorded:
        child["spec_hash"] = "0123456789abcdef"
    run.write_jsonl("children.jsonl", [child])
    journal = (tmp_path / "run" / "children.jsonl").read_bytes()
    if recorded is None:  # a journal from before the hash: replayed as before (not checked here)
        from nasreg_rl.strategy import _Journal

        assert _Journal(run, "children.jsonl", spec.digest()).done[0]["reward"] == 0.5
        return
    result = invoke("resume", run.path, "-q")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(lines) == 1 and "children.jsonl: child 0 was trained under another spec" in lines[0], lines
    assert "spec.toml was edited after the run" in lines[0]
    assert (tmp_path / "run" / "children.jsonl").read_bytes() == journal
