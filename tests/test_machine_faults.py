"""Faults of the machine (issue 13, class 5): each is one line and a non-zero exit, never a
traceback, and the last good checkpoint stays intact.

* the disk fills up during a checkpoint write (a real, small tmpfs filled by a plugin after the
  first epoch, where this machine lets the tests mount one; and a patched ``fsync`` that fails with
  ENOSPC for the checkpoint, for the metrics journal, for the genotype);
* the run directory is on a read-only mount when ``nasreg resume`` starts (a read-only bind mount);
* a path component longer than the file system allows (``--out``, ``[run] name``);
* standard output is ``/dev/full`` or closed (real subprocesses).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli_checks import SPEC, check_line, snapshot, user  # noqa: F401 - user is a fixture
from nasreg.cli import main

NASREG = Path(sys.executable).with_name("nasreg")
ENV = {**os.environ, "NASREG_DISABLE_PLUGINS": "plots", "OMP_NUM_THREADS": "1"}
EPOCHS = 3
#: Fills the disk of the run directory after epoch 0 (its checkpoint then is the last good one),
#: after copying that checkpoint to $NASREG_TEST_KEEP for the test to compare.
FILL_PLUGIN = """\
import os, shutil
import nasreg

@nasreg.hookimpl
def on_epoch_end(run, stage, epoch, metrics):
    if (stage, epoch) == (0, 1):
        shutil.copy(os.path.join(run.run_dir, "checkpoint.pt"), os.environ["NASREG_TEST_KEEP"])
        fd = os.open(os.path.join(run.run_dir, "filler"), os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            os.close(fd)
"""


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.replace("epochs = 2", f"epochs = {EPOCHS}").replace("[run]\n", "[run]\ncheckpoint_every = 1\n", 1))
    return path


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"this machine does not let the tests mount file systems: {result.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (skipped where mounting is not allowed); unmounted afterwards."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    point = tmp_path / "disk"
    point.mkdir()
    _mount("-t", "tmpfs", "-o", "size=512k", "tmpfs", str(point))
    yield point
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- a full disk ---------------------------------------------------------------------------------


def test_a_real_full_disk_during_a_checkpoint_write(tmp_path, small_disk):
    spec, keep = _spec(tmp_path), tmp_path / "kept.pt"
    (tmp_path / "fill.py").write_text(FILL_PLUGIN)
    run = small_disk / "run"
    proc = subprocess.run([str(NASREG), "run", str(spec), "--out", str(run), "--plugin", str(tmp_path / "fill.py"),
                           "-q", "--no-preflight"], capture_output=True, text=True, env={**ENV, "NASREG_TEST_KEEP": str(keep)})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = _lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "checkpoint.pt: cannot write: No space left on device (its previous version is intact)" in lines[0]
    assert (run / "checkpoint.pt").read_bytes() == keep.read_bytes()  # the last good one
    assert not list(run.glob(".*.tmp"))
    (run / "filler").unlink()
    again = subprocess.run([str(NASREG), "resume", str(run), "-q", "--no-preflight"], capture_output=True, text=True, env=ENV)
    assert again.returncode == 0, again.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == EPOCHS
    assert (run / "genotype.json").is_file()


def _fail_fsync_of(monkeypatch, name: str) -> None:
    """``os.fsync`` fails with ENOSPC for files whose name contains ``name`` (as on a full disk)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("name, expected, intact", [
    ("checkpoint.pt", "checkpoint.pt: cannot write: No space left on device", None),
    ("metrics.jsonl", "metrics.jsonl: cannot write: No space left on device", None),
    ("genotype.json", "genotype.json: cannot write: No space left on device", "checkpoint.pt"),
    ("stages.json", "stages.json: cannot write: No space left on device", "checkpoint.pt"),
    ("spec.toml", "spec.toml: cannot write: No space left on device", None),
])
def test_a_full_disk_at_each_write_is_one_line(tmp_path, monkeypatch, name, expected, intact):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd")
    spec = _spec(tmp_path)
    _fail_fsync_of(monkeypatch, name)
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "run"), "-q", "--no-preflight"])
    check_line(result.exit_code, result.stderr, result.output, (expected,))
    run = tmp_path / "run"
    assert not list(run.glob(".*.tmp"))
    if intact:
        assert (run / intact).is_file()
    monkeypatch.undo()
    if (run / "checkpoint.pt").is_file():  # resumable where a checkpoint was written
        assert CliRunner().invoke(main, ["resume", str(run), "-q", "--no-preflight"]).exit_code == 0
        assert (run / "genotype.json").is_file()


# --- a read-only run directory, a name too long ---------------------------------------------------


def test_resume_on_a_read_only_mount(tmp_path):
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    spec = _spec(tmp_path)
    source, view = tmp_path / "source", tmp_path / "view"
    view.mkdir()
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(source), "-q", "--no-preflight"])
    assert result.exit_code == 0, result.output
    for stale in ("summary.json", "genotype.json"):  # an unfinished run: resumable
        (source / stale).unlink()
    _mount("--bind", str(source), str(view))
    try:
        _mount("-o", "remount,bind,ro", str(view))
        before = snapshot(source)
        result = CliRunner().invoke(main, ["resume", str(view), "-q"])
        check_line(result.exit_code, result.stderr, result.output, (f"{view}", "read-only file system"))
        assert snapshot(source) == before
    finally:
        subprocess.run(["umount", "-l", str(view)], capture_output=True)


@pytest.mark.parametrize("args", [
    ["--out", "{long}"],
    ["--out", "{long}/run"],
    ["--set", "run.name={long_name}"],
])
def test_a_path_component_too_long(user, args):
    spec = user.spec()
    long_name = "n" * 300
    args = [a.format(long=user.root / long_name, long_name=long_name) for a in args]
    line = user.fails("run", spec, *args, "--no-preflight", expect=("File name too long",))
    assert len(line) < 700  # the 300-character name is shortened in the message


def test_train_into_a_path_too_long(user):
    genotype = Path(__file__).resolve().parent.parent / "genotypes" / "darts_v2.json"
    user.fails("train", genotype, "--out", user.root / ("t" * 300), "--set", "evaluate.epochs=1",
               "--set", "evaluate.data.dataset=digits", expect=("File name too long",))


# --- standard output ------------------------------------------------------------------------------


def _run_shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=cwd, env=ENV)


@pytest.mark.parametrize("command, expected", [
    ("{nasreg} validate {spec} > /dev/full", "standard output: cannot write: No space left on device"),
    ("{nasreg} list-plugins > /dev/full", "standard output: cannot write: No space left on device"),
    ("{nasreg} list-plugins --json > /dev/full", "standard output: cannot write: No space left on device"),
    ("{nasreg} validate {spec} >&-", "standard output is closed"),
    ("{nasreg} run {spec} --out {tmp}/closed >&-", "standard output is closed"),
])
def test_standard_output_full_or_closed(tmp_path, command, expected):
    spec = _spec(tmp_path)
    before = snapshot(tmp_path)
    proc = _run_shell(command.format(nasreg=NASREG, spec=spec, tmp=tmp_path), tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = _lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert snapshot(tmp_path) == before  # (a closed stdout is refused before the run directory is made)


def test_a_search_printing_to_dev_full_keeps_its_run_directory(tmp_path):
    spec = _spec(tmp_path)
    proc = _run_shell(f"{NASREG} run {spec} --out {tmp_path}/run -q --no-preflight > /dev/full", tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = _lines(proc.stderr)
    assert len(lines) == 1 and "standard output: cannot write" in lines[0], proc.stderr
    assert (tmp_path / "run" / "genotype.json").is_file() and (tmp_path / "run" / "summary.json").is_file()
    shown = _run_shell(f"{NASREG} show {tmp_path}/run > /dev/full", tmp_path)
    assert shown.returncode == 2 and len(_lines(shown.stderr)) == 1, shown.stderr
