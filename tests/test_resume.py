"""Runs that survive: exact resume after SIGKILL or Ctrl-C, safe checkpoint loading, divergence.

A tiny DG-DARTS search on digits (two stages, 3 epochs each, 1 warm-up) runs uninterrupted once;
then copies of it are killed with SIGKILL at several points (mid stage 0, at the stage boundary,
inside stage 1) or stopped with SIGINT mid-epoch, resumed with `nasreg resume`, and must end with
the same genotype and the same metrics (every field but wall times and memory), bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nasreg._core import checkpoint
from nasreg.cli import main

SPEC = """
[run]
name = "tiny"
threads = 1
[data]
dataset = "digits"
limit = 160
batch_size = 32
[search_space]
name = "darts-cell"
operations = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"]
cells = 3
channels = 4
nodes = 3
[search]
epochs = 3
warmup_epochs = 1
[strategy]
name = "darts"
[selector]
name = "dg-darts"
plot = false
"""
NASREG = [sys.executable, "-m", "nasreg.cli"]
#: The plots plugin only observes; leaving it out keeps these many runs fast.
ENV = {**os.environ, "NASREG_DISABLE_PLUGINS": "plots"}


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def reference(spec_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    threads = torch.get_num_threads()
    result = CliRunner().invoke(main, ["run", str(spec_file), "--out", str(out), "-q"], env=ENV)
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out


def comparable(run_dir: Path):
    metrics = [{k: v for k, v in json.loads(line).items() if "seconds" not in k and "memory" not in k}
               for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    genotype = json.loads((run_dir / "genotype.json").read_text())
    return metrics, genotype["cells"], genotype["provenance"]


def start(spec_file: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([*NASREG, "run", str(spec_file), "--out", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)


def wait_for_lines(proc: subprocess.Popen, out: Path, n: int, timeout: float = 120) -> None:
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {n} epochs: {proc.stderr.read()}")
        time.sleep(0.01)
    raise AssertionError("timed out")


def resume(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*NASREG, "resume", str(out), "-q"], capture_output=True, text=True, timeout=300,
                          env=ENV)


# Epoch lines: stage 0 has epochs 0-2 (lines 1-3), stage 1 epochs 0-2 (lines 4-6).
@pytest.mark.parametrize("lines, delay", [(1, 0.0), (3, 0.05), (5, 0.1)],
                         ids=["stage0-early", "stage-boundary", "stage1"])
def test_sigkill_then_resume_matches_uninterrupted_run(spec_file, reference, tmp_path, lines, delay):
    out = tmp_path / "run"
    proc = start(spec_file, out)
    wait_for_lines(proc, out, lines)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "genotype.json").exists(), "the run finished before it was killed"
    done = resume(out)
    assert done.returncode == 0, done.stderr
    assert comparable(out) == comparable(reference)


def test_ctrl_c_writes_a_checkpoint_and_resume_matches(spec_file, reference, tmp_path):
    out = tmp_path / "run"
    proc = start(spec_file, out)
    wait_for_lines(proc, out, 4)  # inside stage 1
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "checkpoint written" in err and f"nasreg resume {out}" in err
    assert "Traceback" not in err
    state = checkpoint.load(out / "checkpoint.pt")
    assert state["stage"] == 1
    done = resume(out)
    assert done.returncode == 0, done.stderr
    assert comparable(out) == comparable(reference)


#: A plugin that SIGKILLs its process inside the Nth checkpoint write, after half of the new
#: checkpoint's bytes reached its temporary file and before the rename (the worst instant).
KILL_IN_WRITE = """\
import os, signal
from nasreg._core import rundir

_count = {"n": 0}
_real = rundir.RunDir.write_bytes

def _write_bytes(self, name, data):
    if str(name).endswith("checkpoint.pt"):
        _count["n"] += 1
        if _count["n"] == int(os.environ["KILL_AT_WRITE"]):
            path = self.file(name)
            with open(path.parent / f".{path.name}.killed.tmp", "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    return _real(self, name, data)

rundir.RunDir.write_bytes = _write_bytes
"""


@pytest.mark.parametrize("write", [2, 4], ids=["stage0", "stage1"])
def test_sigkill_inside_the_checkpoint_write_then_resume_matches(spec_file, reference, tmp_path, write):
    """Killed while writing a checkpoint: the previous checkpoint is intact, the half-written
    temporary file is removed by the resume, and the resumed run equals the uninterrupted one."""
    (tmp_path / "kill_in_write.py").write_text(KILL_IN_WRITE)
    out = tmp_path / "run"
    proc = subprocess.run([*NASREG, "run", str(spec_file), "--out", str(out), "-q",
                           "--plugin", str(tmp_path / "kill_in_write.py")],
                          capture_output=True, text=True, timeout=300, env={**ENV, "KILL_AT_WRITE": str(write)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(list(out.glob(".checkpoint.pt.*.tmp"))) == 1
    assert checkpoint.load(out / "checkpoint.pt")["epoch"] >= 1  # the previous one, whole
    done = resume(out)
    assert done.returncode == 0, done.stderr
    assert not list(out.glob(".*.tmp"))
    assert comparable(out) == comparable(reference)


def test_checkpoint_holds_everything_and_loads_without_code(reference):
    state = checkpoint.load(reference / "checkpoint.pt")  # weights_only=True inside
    for key in ("stage", "epoch", "step", "candidates", "model", "strategy", "stage_state", "rng",
                "loader_states", "stage_infos", "gradients"):
        assert key in state
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert state["stage"] == 1 and state["epoch"] == 3
    assert state["stage_state"]["grad_history"]


def test_corrupted_or_truncated_checkpoint_is_a_clear_error(reference, tmp_path):
    good = (reference / "checkpoint.pt").read_bytes()
    for name, data in (("truncated", good[: len(good) // 2]), ("garbage", b"not a checkpoint at all")):
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        with pytest.raises(checkpoint.CheckpointError, match=str(path)):
            checkpoint.load(path)


def test_resume_errors_are_one_line(reference, tmp_path):
    runner = CliRunner()
    for args, needle in ((["resume", str(tmp_path / "nope")], "no such run directory"),
                         (["resume", str(tmp_path)], "not a nasreg run directory"),
                         (["resume", str(reference)], "has finished")):
        result = runner.invoke(main, args)
        assert result.exit_code == 2
        assert needle in result.output and "Traceback" not in result.output


def test_divergence_stops_with_a_clear_message_and_keeps_the_checkpoint(spec_file, tmp_path):
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    result = CliRunner().invoke(main, ["run", str(spec_file), "--out", str(out), "-q",
                                       "--set", "strategy.w_lr=1e30", "--set", "strategy.w_lr_min=0",
                                       "--set", "strategy.w_grad_clip=1e30"], env=ENV)
    torch.set_num_threads(threads)
    assert result.exit_code == 2
    assert "diverged" in result.output and "Traceback" not in result.output
    if (out / "checkpoint.pt").exists():
        assert str(out / "checkpoint.pt") in result.output
        checkpoint.load(out / "checkpoint.pt")
    else:
        assert "no checkpoint had been written yet" in result.output
