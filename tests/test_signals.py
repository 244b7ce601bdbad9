"""Ctrl-C and SIGTERM outside the search loop: the training engine (``[evaluate]`` after a search,
``nasreg train``) stops between two steps, writes a checkpoint of that step and exits with status
130 and one ``stopped:`` line naming how to continue; ``nasreg resume`` then continues the
evaluation from that checkpoint and ends exactly as an uninterrupted run (same metrics, same test
accuracy), and refuses, on one line and touching nothing, a checkpoint that does not belong to the
run (another spec or genotype, a position out of bounds, damaged).

* the engine itself (``nasreg.Trainer``), in-process: stopped at several steps (mid-epoch, the
  last step of an epoch, an epoch boundary), its state saved and loaded as a checkpoint is, then
  resumed: the same weights, bit for bit, and the same epoch figures as an uninterrupted fit;
* real ``nasreg`` processes sent SIGTERM or SIGINT at a known moment (by a plugin, when the first
  epoch ends, or from a thread a little later: mid-epoch; never a race against the machine's
  speed), in the evaluation and in ``nasreg train``, then ``nasreg resume``;
* a stop requested after the search's last step (a SIGTERM the process sends itself from an
  ``on_run_end`` hook) stops before the evaluation starts, and resume runs it;
* tampered evaluation checkpoints: refused by ``nasreg resume`` before anything changes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.data import DataLoader, Dataset

import nasreg
import nasreg._core.evaluate as evaluate_mod
from cli_checks import snapshot, user  # noqa: F401
from nasreg.cli import main

NASREG = Path(sys.executable).with_name("nasreg")
ENV = {**os.environ, "NASREG_DISABLE_PLUGINS": "plots", "COLUMNS": "300"}

#: A tiny search whose [evaluate] trains 3 epochs x 25 steps (a few seconds on one thread).
SPEC = """
[run]
name = "sig"
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
epochs = 3
batch_size = 8
cells = 2
channels = 4
auxiliary = false
cutout = true
drop_path = 0.2
limit = 200
"""


def metrics(run_dir: Path) -> list[dict]:
    """A run's metrics lines without the figures that depend on the clock."""
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k and "memory" not in k}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def nasreg_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(NASREG), *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=300)


def stopped_line(stderr: str) -> str:
    """The one line a stop prints (warnings of the toy spaces aside)."""
    lines = [line for line in stderr.splitlines() if line.startswith(("stopped:", "error:", "Traceback"))]
    assert len(lines) == 1 and lines[0].startswith("stopped: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def load_train_checkpoint(path: Path) -> dict:
    state = torch.load(path, weights_only=True)
    assert state["format"] == "nasreg.checkpoint" and state["kind"] == "train"
    return state


# --- the engine: stop anywhere, resume exactly --------------------------------------------------------


class Noisy(Dataset):
    """40 random 1x8x8 images whose every read adds noise from torch's global RNG (as an
    augmentation does in the main process)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(5)
        self.x, self.y = torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int):
        return self.x[i] + 0.1 * torch.randn(1, 8, 8), self.y[i]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc, self.drop_path_prob = nn.Linear(4, 3), 0.0

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        if self.training and self.drop_path_prob:  # a draw from the global RNG per step
            h = h * torch.bernoulli(torch.full((x.shape[0], 1, 1, 1), 1 - self.drop_path_prob))
        return self.fc(h.mean((2, 3)))


RECIPE = nasreg.TrainRecipe(epochs=3, lr=0.1, weight_decay=1e-3, grad_clip=5.0, cutout_length=3, drop_path=0.3,
                            label_smoothing=0.1, test="epoch")
STEPS = 5  # 40 images, batches of 8


class StopAt:
    """A callback and reporter that asks for a stop after ``step`` batches of ``epoch`` and keeps
    the last state a checkpoint would hold (saved and loaded as one is)."""

    def __init__(self, stop, epoch: int, step: int):
        self.stop, self.at, self.state, self.trainer = stop, (epoch, step), None, None

    def step(self, done: int, _info) -> None:
        if (self.trainer.epoch, done) == self.at:
            self.stop.requested = True

    def _keep(self, trainer) -> None:
        buf = io.BytesIO()
        torch.save(trainer.state_dict(), buf)
        self.state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)

    def on_epoch_end(self, trainer, _stats) -> None:
        self._keep(trainer)

    def on_stop(self, trainer, _epoch, _step) -> None:
        self._keep(trainer)


class Stop:
    requested = False


def fit(resume=None, keeper: "StopAt | None" = None):
    """A fresh seeded model and loader, fitted (from ``resume``): (weights, epoch figures)."""
    nasreg.seed_everything(0)
    model = Net()
    loader = DataLoader(Noisy(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))
    test = DataLoader(Noisy(), batch_size=16)
    trainer = nasreg.Trainer(model, RECIPE, reporter=keeper, callbacks=[keeper] if keeper else [],
                             stop=keeper.stop if keeper else None)
    if keeper:
        keeper.trainer = trainer
    result = trainer.fit(loader, test, resume=resume)
    return model.state_dict(), [(s.epoch, s.lr, s.train_loss, s.train_acc, s.test_loss, s.test_acc)
                                for s in result.epochs]


def stopped(epoch: int, step: int) -> tuple[str, StopAt]:
    """fit() stopped after ``step`` batches of ``epoch``: the message, and the stopper holding
    the state a checkpoint holds."""
    keeper = StopAt(Stop(), epoch, step)
    with pytest.raises(nasreg.Interrupted) as exc:
        fit(keeper=keeper)
    return str(exc.value), keeper


@pytest.fixture(scope="module")
def uninterrupted():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield fit()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("epoch,step", [(0, 1), (0, 3), (1, 2), (1, STEPS), (2, 4), (0, STEPS)],
                         ids=["epoch0-step1", "epoch0-step3", "epoch1-step2", "end-of-epoch1", "epoch2-step4",
                              "end-of-epoch0"])
def test_the_engine_stopped_anywhere_resumes_exactly(uninterrupted, one_thread, epoch, step):
    weights, figures = uninterrupted
    message, keeper = stopped(epoch, step)
    assert message == (f"interrupted after epoch {epoch}" if step == STEPS else f"interrupted at epoch {epoch}, step {step}")
    pos = keeper.state["position"]
    assert (pos["epoch"], pos["step"]) == ((epoch + 1, 0) if step == STEPS else (epoch, step))
    resumed_weights, resumed_figures = fit(resume=keeper.state)
    assert resumed_figures == figures[pos["epoch"]:]
    assert resumed_weights.keys() == weights.keys()
    assert all(torch.equal(resumed_weights[k], weights[k]) for k in weights)


def test_a_stop_at_the_last_step_of_the_last_epoch_finishes_the_training(uninterrupted, one_thread):
    keeper = StopAt(Stop(), 2, STEPS)
    _, figures = fit(keeper=keeper)
    assert keeper.stop.requested and figures == uninterrupted[1]
    assert keeper.state["position"]["epoch"] == 3


@pytest.mark.parametrize("change,message", [
    (lambda s: s["position"].update(epoch=-5), "position.epoch"),
    (lambda s: s["position"].update(epoch=4), "position.epoch"),
    (lambda s: s["position"].update(step=True), "position.step"),
    (lambda s: s["position"].update(tally=[float("nan"), 0, 0]), "position.tally"),
    (lambda s: s.pop("position"), "no training position"),
    (lambda s: s["position"].pop("rng"), "position.rng"),
    (lambda s: s.update(model={"conv.weight": torch.zeros(2, 2)}), "does not fit"),
], ids=["negative-epoch", "epoch-beyond", "bool-step", "nan-tally", "no-position", "no-rng", "other-network"])
def test_the_engine_refuses_a_state_that_does_not_fit(one_thread, change, message):
    _, keeper = stopped(0, 2)
    change(keeper.state)
    with pytest.raises(ValueError, match=message):
        fit(resume=keeper.state)


# --- real processes: SIGTERM / SIGINT during the evaluation, then resume ------------------------------


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("signals")
    (folder / "spec.toml").write_text(SPEC)
    return folder


@pytest.fixture(scope="module")
def reference(spec_dir) -> Path:
    """The uninterrupted run."""
    result = nasreg_cli("run", "spec.toml", "--out", "reference", "-q", "--no-preflight", cwd=spec_dir)
    assert result.returncode == 0, result.stderr
    return spec_dir / "reference"


#: Sends the process the signal $NASREG_TEST_SIGNAL when the evaluation's first epoch ends (a real
#: signal at a known moment, however fast the machine: the stop comes at that epoch's end), or,
#: with $NASREG_TEST_DELAY, that many seconds later from a thread (inside epoch 1: mid-epoch).
SIGNAL_PLUGIN = """
import os, signal, threading, time
import nasreg

def _send():
    time.sleep(float(os.environ.get("NASREG_TEST_DELAY", "0")))
    os.kill(os.getpid(), getattr(signal, os.environ["NASREG_TEST_SIGNAL"]))

@nasreg.hookimpl
def on_train_epoch_end(run, kind, epoch, metrics):
    if kind == os.environ.get("NASREG_TEST_KIND", "evaluate") and epoch == 0:
        if "NASREG_TEST_DELAY" in os.environ:
            threading.Thread(target=_send).start()
        else:
            _send()
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig, delay", [(signal.SIGTERM, None), (signal.SIGINT, 0.05)],
                         ids=["SIGTERM-at-an-epoch-end", "SIGINT-mid-epoch"])
def test_a_signal_during_the_evaluation_stops_it_with_a_checkpoint_and_resume_ends_as_uninterrupted(
        spec_dir, reference, sig, delay):
    out = spec_dir / f"run-{sig.name}"
    (spec_dir / "send_signal.py").write_text(SIGNAL_PLUGIN)
    env = {**ENV, "NASREG_TEST_SIGNAL": sig.name, **({"NASREG_TEST_DELAY": str(delay)} if delay else {})}
    stopped = subprocess.run([str(NASREG), "run", "spec.toml", "--out", out.name, "-q", "--no-preflight",
                              "--plugin", "send_signal.py"], cwd=spec_dir, capture_output=True, text=True,
                             env=env, timeout=300)
    assert stopped.returncode == 130, stopped.stderr
    line = stopped_line(stopped.stderr)
    assert line.endswith(f"checkpoint written; continue with: nasreg resume {out.name}"), line
    assert ("interrupted at epoch 1, step " in line if delay else "interrupted after epoch 0;" in line), line
    state = load_train_checkpoint(out / "eval" / "checkpoint.pt")
    assert state["position"]["epoch"] >= 1 and len(state["history"]) == state["position"]["epoch"]
    assert not (out / "eval" / "results.json").exists() and (out / "summary.json").is_file()

    search_files = {k: v for k, v in snapshot(out).items() if not k.startswith("eval")}
    resumed = nasreg_cli("resume", out.name, "-q", "--no-preflight", cwd=spec_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing the evaluation from its checkpoint" in resumed.stderr
    assert {k: v for k, v in snapshot(out).items() if not k.startswith("eval")} == search_files
    ours, theirs = (json.loads((d / "eval" / "results.json").read_text()) for d in (out, reference))
    assert ours["test_acc"] == theirs["test_acc"] and ours["test_loss"] == theirs["test_loss"]
    assert metrics(out / "eval") == metrics(reference / "eval")


@pytest.mark.slow
def test_sigterm_during_nasreg_train_stops_it_with_a_loadable_checkpoint_and_resume_ends_as_uninterrupted(
        spec_dir, reference):
    out = spec_dir / "trained"
    (spec_dir / "send_signal.py").write_text(SIGNAL_PLUGIN)
    stopped = subprocess.run([str(NASREG), "train", reference / "genotype.json", "--spec", "spec.toml", "--out",
                              out.name, "-q", "--plugin", "send_signal.py"], cwd=spec_dir, capture_output=True,
                             text=True, timeout=300, env={**ENV, "NASREG_TEST_SIGNAL": "SIGTERM",
                                                          "NASREG_TEST_KIND": "train", "NASREG_TEST_DELAY": "0.05"})
    assert stopped.returncode == 130, stopped.stderr
    line = stopped_line(stopped.stderr)
    assert line.endswith(f"checkpoint written; continue with: nasreg resume {out.name}"), line
    state = load_train_checkpoint(out / "checkpoint.pt")
    assert len(state["history"]) == state["position"]["epoch"] >= 1
    assert [m["epoch"] for m in metrics(out)] == list(range(state["position"]["epoch"]))
    assert not (out / "results.json").exists()
    # the checkpoint's weights load into the network the genotype describes
    net = nasreg.build_network(reference / "genotype.json", spec=spec_dir / "spec.toml")
    net.load_state_dict(state["model"])
    # nasreg resume continues the training exactly: the metrics of one uninterrupted training
    done = subprocess.run([str(NASREG), "resume", out.name, "-q"], cwd=spec_dir, capture_output=True, text=True,
                          env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr
    whole = subprocess.run([str(NASREG), "train", reference / "genotype.json", "--spec", "spec.toml", "--out",
                            "whole", "-q"], cwd=spec_dir, capture_output=True, text=True, env=ENV, timeout=600)
    assert whole.returncode == 0, whole.stderr
    assert metrics(out) == metrics(spec_dir / "whole")
    again = subprocess.run([str(NASREG), "resume", out.name], cwd=spec_dir, capture_output=True, text=True, env=ENV)
    assert again.returncode == 2 and "this training run has finished" in again.stderr


# --- a stop after the search's last step -----------------------------------------------------------


HOOK = """
import os, signal
import nasreg

@nasreg.hookimpl
def on_run_end(run, genotype, summary):
    os.kill(os.getpid(), signal.SIGTERM)  # as if SIGTERM came while the search wrote its figures
"""


@pytest.mark.slow
def test_a_stop_after_the_search_is_honoured_before_the_evaluation(spec_dir, reference):
    (spec_dir / "late_stop.py").write_text(HOOK)
    out = spec_dir / "late"
    stopped = nasreg_cli("run", "spec.toml", "--plugin", "late_stop.py", "--out", out.name, "-q",
                         "--no-preflight", cwd=spec_dir)
    assert stopped.returncode == 130, stopped.stderr
    line = stopped_line(stopped.stderr)
    assert line == f"stopped: interrupted after the search, before its evaluation; continue with: nasreg resume {out.name}"
    assert (out / "summary.json").is_file() and not (out / "eval").exists()
    resumed = nasreg_cli("resume", out.name, "-q", cwd=spec_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert metrics(out / "eval") == metrics(reference / "eval")


# --- a checkpoint that is not this run's: refused, nothing touched --------------------------------


@pytest.fixture(scope="module")
def stopped_evaluation(tmp_path_factory) -> Path:
    """A finished search whose evaluation was stopped after its first step (in-process: the
    evaluation's stop request set as it starts)."""
    folder = tmp_path_factory.mktemp("stopped")
    (folder / "spec.toml").write_text(SPEC.replace("limit = 200", "limit = 64"))

    class StopAtOnce(evaluate_mod.StopRequests):
        def __enter__(self):
            super().__enter__()
            self.requested = True
            return self

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate_mod, "StopRequests", StopAtOnce)
        mp.setenv("NASREG_DISABLE_PLUGINS", "plots")
        with pytest.raises(nasreg.Interrupted, match="interrupted at epoch 0, step 1; checkpoint written"):
            nasreg.search(folder / "spec.toml", out=folder / "run", preflight=False)
    torch.set_num_threads(threads)
    return folder / "run"


def _tamper(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


TAMPER = {
    "negative-epoch": (lambda s: s["position"].update(epoch=-5), "position.epoch"),
    "epoch-beyond-the-spec": (lambda s: s["position"].update(epoch=99), "position.epoch"),
    "negative-step": (lambda s: s["position"].update(step=-1), "position.step"),
    "another-spec": (lambda s: s.update(spec_hash="0123456789abcdef"), "written for another evaluation spec"),
    "another-genotype": (lambda s: s.update(genotype_hash="0123456789abcdef"), "written for another genotype"),
    "no-position": (lambda s: s.pop("position"), "has no training position"),
    "history-too-long": (lambda s: s.update(history=[{"epoch": 0}, {"epoch": 1}]), "history"),
    "other-network": (lambda s: s["model"].update({k: torch.zeros(1) for k in list(s["model"])[:1]}),
                      "does not fit this network"),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_resume_refuses_an_evaluation_checkpoint_that_is_not_this_runs(stopped_evaluation, user, case):  # noqa: F811
    run = user.root / "run"
    shutil.copytree(stopped_evaluation, run)
    change, fragment = TAMPER[case]
    _tamper(run / "eval" / "checkpoint.pt", change)
    user.fails("resume", "run", "-q", expect=("eval/checkpoint.pt: ", fragment, "delete it to train from the start"))


@pytest.mark.parametrize("cut", [0, 100], ids=["empty", "truncated"])
def test_resume_refuses_a_damaged_evaluation_checkpoint(stopped_evaluation, user, cut):  # noqa: F811
    run = user.root / "run"
    shutil.copytree(stopped_evaluation, run)
    path = run / "eval" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:cut])
    user.fails("resume", "run", "-q", expect=("eval/checkpoint.pt: ",))


@pytest.mark.slow
def test_a_stopped_evaluation_resumes_in_process_to_the_same_end(stopped_evaluation, tmp_path, one_thread):
    run = tmp_path / "run"
    shutil.copytree(stopped_evaluation, run)
    result = CliRunner().invoke(main, ["resume", str(run), "-q"], env={"NASREG_DISABLE_PLUGINS": "plots"})
    assert result.exit_code == 0, result.output
    assert [m["epoch"] for m in metrics(run / "eval")] == [0, 1, 2]
    fresh = tmp_path / "fresh"
    (tmp_path / "spec.toml").write_text(SPEC.replace("limit = 200", "limit = 64"))
    again = CliRunner().invoke(main, ["run", str(tmp_path / "spec.toml"), "--out", str(fresh), "-q", "--no-preflight"],
                               env={"NASREG_DISABLE_PLUGINS": "plots"})
    assert again.exit_code == 0, again.output
    assert metrics(run / "eval") == metrics(fresh / "eval")
