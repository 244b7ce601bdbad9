"""One process per run directory (issue 13, classes 3 and 9).

A run directory is locked (a ``flock`` on the directory, nothing written into it) by every
command that works in it: ``run`` / ``train`` into ``--out`` (also with ``--force``) and
``resume``. While another process holds it, each of them exits 2 with one line naming the
holder's PID and leaves the directory byte for byte as it was; a lock whose process died (SIGKILL)
is no lock; two real processes started at once on one directory never both work in it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli_checks import SPEC, check_line, snapshot, user  # noqa: F401 - user is a fixture
from nasreg._core.errors import RunDirError
from nasreg._core.rundir import RunDirLock, create_run_dir, lock_run_dir, release_run_dir
from nasreg.cli import main

NASREG = Path(sys.executable).with_name("nasreg")
ROOT = Path(__file__).resolve().parent.parent
#: A file plugin that stops the search (as Ctrl-C would) after its first epoch: an interrupted run.
STOP_PLUGIN = """\
import os, signal
import nasreg

@nasreg.hookimpl
def on_epoch_end(run, stage, epoch, metrics):
    if (stage, epoch) == (0, 0):
        os.kill(os.getpid(), signal.SIGINT)
"""
#: Holds the lock of argv[1] until killed; prints "held" once it has it.
HOLDER = """\
import sys, time
from nasreg._core.rundir import lock_run_dir
lock_run_dir(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""
EPOCHS = 3


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A toy search stopped after its first epoch (checkpoint written, exit 130)."""
    root = tmp_path_factory.mktemp("interrupted")
    (root / "stop.py").write_text(STOP_PLUGIN)
    (root / "spec.toml").write_text(SPEC.replace("epochs = 2", f"epochs = {EPOCHS}"))
    result = CliRunner().invoke(main, ["run", str(root / "spec.toml"), "--out", str(root / "run"),
                                       "--plugin", str(root / "stop.py"), "-q"])
    assert result.exit_code == 130, result.output
    assert (root / "run" / "checkpoint.pt").is_file()
    return root


@pytest.fixture
def holder():
    """``holder(path)``: a separate process that holds ``path``'s lock; killed afterwards."""
    procs = []

    def start(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _copy(interrupted: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(interrupted / "run", run)
    shutil.copy(interrupted / "spec.toml", tmp_path / "spec.toml")
    return run


def _metrics_lines(run: Path) -> int:
    return len((run / "metrics.jsonl").read_text().splitlines())


# --- a held run directory refuses every command, touching nothing ------------------------------


@pytest.mark.parametrize("command", [
    ["resume", "{run}"],
    ["resume", "{run}", "--no-preflight"],
    ["run", "{spec}", "--out", "{run}"],
    ["run", "{spec}", "--out", "{run}", "--force"],
    ["train", "{genotype}", "--out", "{run}", "--force", "--set", "evaluate.epochs=1",
     "--set", "evaluate.data.dataset=digits", "--set", "evaluate.cells=2", "--set", "evaluate.channels=4"],
])
def test_a_held_run_directory_refuses_with_the_holders_pid(interrupted, tmp_path, monkeypatch, holder, command):
    run = _copy(interrupted, tmp_path)
    genotype = tmp_path / "g.json"
    shutil.copy(ROOT / "genotypes" / "darts_v2.json", genotype)
    monkeypatch.chdir(tmp_path)
    proc = holder(run)
    before = snapshot(tmp_path)
    args = [a.format(run=run, spec=tmp_path / "spec.toml", genotype=genotype) for a in command]
    result = CliRunner().invoke(main, args)
    line = check_line(result.exit_code, result.stderr, result.output,
                      (str(run), f"in use by another nasreg process (PID {proc.pid})"))
    assert snapshot(tmp_path) == before, line


def test_the_lock_writes_nothing_into_the_directory(interrupted, tmp_path):
    run = _copy(interrupted, tmp_path)
    before = snapshot(tmp_path)
    with RunDirLock.acquire(run):
        with RunDirLock.acquire(run):  # this process again: counted, not refused
            pass
        assert RunDirLock.acquire(run).path == run.resolve()
        release_run_dir(run)
    assert snapshot(tmp_path) == before
    assert run.resolve() not in RunDirLock._held


def test_a_dead_holders_lock_is_taken_over(interrupted, tmp_path, holder):
    run = _copy(interrupted, tmp_path)
    proc = holder(run)
    with pytest.raises(RunDirError, match=f"PID {proc.pid}"):
        lock_run_dir(run)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = CliRunner().invoke(main, ["resume", str(run), "-q"])
    assert result.exit_code == 0, result.output
    assert _metrics_lines(run) == EPOCHS


def test_a_run_directory_is_free_again_after_each_command(interrupted, tmp_path):
    run = _copy(interrupted, tmp_path)
    assert CliRunner().invoke(main, ["resume", str(run), "-q"]).exit_code == 0
    assert run.resolve() not in RunDirLock._held  # the API released it
    lock_run_dir(run).release()  # and nobody holds it


# --- real processes at once ---------------------------------------------------------------------


def _nasreg(*args: str) -> subprocess.Popen:
    env = {**os.environ, "NASREG_DISABLE_PLUGINS": "plots", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(NASREG), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_two_resumes_at_once_never_both_work_in_the_directory(interrupted, tmp_path):
    run = _copy(interrupted, tmp_path)
    procs = [_nasreg("resume", str(run), "-q") for _ in range(2)]
    outs = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in outs)
    assert codes == [0, 2], outs
    loser = next(err for code, err in outs if code == 2)
    lines = [line for line in loser.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in loser, loser
    # Either it found the directory in use, or (started later) the run already finished.
    assert "in use by another nasreg process (PID " in lines[0] or "nothing to resume" in lines[0], lines
    assert _metrics_lines(run) == EPOCHS  # one search's lines, not two interleaved


@pytest.mark.slow
def test_two_runs_given_the_same_out_at_once(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "same"
    procs = [_nasreg("run", str(spec), "--out", str(out), "-q", "--no-preflight") for _ in range(2)]
    outs = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in outs) == [0, 2], outs
    loser = next(err for code, err in outs if code == 2)
    assert ("in use by another nasreg process" in loser or "already exists and is not empty" in loser), loser
    assert _metrics_lines(out) == 2  # the toy spec's two epochs, once


def test_numbered_run_directories_are_locked_when_made(tmp_path):
    first = create_run_dir(tmp_path, "x")
    second = create_run_dir(tmp_path, "x")
    assert (first.name, second.name) == ("x", "x-1")
    for path in (first, second):
        assert RunDirLock._held[path.resolve()]
        release_run_dir(path)
    assert not {first.resolve(), second.resolve()} & set(RunDirLock._held)


def test_a_refused_out_releases_its_lock(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="already exists and is not empty"):
        create_run_dir(tmp_path, "x", explicit=out)
    with pytest.raises(RunDirError, match="not a nasreg run directory"):
        create_run_dir(tmp_path, "x", explicit=out, force=True)
    assert out.resolve() not in RunDirLock._held
    assert (out / "notes.txt").read_text() == "mine"


def test_force_empties_the_old_run_under_the_lock(tmp_path):
    out = tmp_path / "old"
    (out / "eval").mkdir(parents=True)
    (out / "spec.toml").write_text("[run]\n")
    (out / "eval" / "metrics.jsonl").write_text("{}\n")
    path = create_run_dir(tmp_path, "x", explicit=out, force=True)
    try:
        assert path == out and list(out.iterdir()) == []
        assert RunDirLock._held[out.resolve()]
    finally:
        release_run_dir(out)


# --- temporary files of a killed write -----------------------------------------------------------


def test_a_kill_during_the_checkpoint_write_leaves_the_last_checkpoint_and_no_temporary(interrupted, tmp_path):
    """SIGKILL while ``checkpoint.pt`` is being written (the process stopped inside the write,
    its temporary file half full): the old checkpoint is intact, the next command removes the
    temporary and the resumed search is the one the old checkpoint gives."""
    run = _copy(interrupted, tmp_path)
    old = (run / "checkpoint.pt").read_bytes()
    writer = textwrap.dedent(f"""
        import os, signal
        from nasreg._core import rundir
        real_fsync = os.fsync
        def stop_in_the_middle(fd):
            os.write(fd, b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = stop_in_the_middle
        rundir.RunDir({str(run)!r}).write_bytes("checkpoint.pt", b"x" * 100000)
    """)
    proc = subprocess.run([sys.executable, "-c", writer], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    temporaries = list(run.glob(".checkpoint.pt.*.tmp"))
    assert len(temporaries) == 1
    assert (run / "checkpoint.pt").read_bytes() == old
    result = CliRunner().invoke(main, ["resume", str(run), "-q"])
    assert result.exit_code == 0, result.output
    assert not list(run.glob(".*.tmp"))
    # The same as the stopped run resumed with no kill in between (the toy strategy keeps no
    # optimizer state, so the resumed run, not an uninterrupted one, is the reference here).
    reference = tmp_path / "reference"
    shutil.copytree(interrupted / "run", reference)
    assert CliRunner().invoke(main, ["resume", str(reference), "-q"]).exit_code == 0
    assert _comparable(run) == _comparable(reference)


def _comparable(run: Path) -> list[dict]:
    import json

    timing = ("epoch_seconds", "wall_seconds", "peak_memory_mb")
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (run / "metrics.jsonl").read_text().splitlines()]
