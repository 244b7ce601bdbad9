"""One trial of a study: a search (and its ``[evaluate]``) into ``STUDY_DIR/<arm>/seed-<n>/``.

:func:`run_trial` is what an executor runs, in whatever process or machine it chooses; it is a
module-level function of plain-data arguments (a :class:`TrialTask`), so it pickles. A trial
starts a new run, continues an interrupted one (the exact resume of ``nasreg resume``), or
finishes the evaluation of a finished search, as the runner decided from the files it found.

Where the executor's tasks do not see the study directory (a Ray cluster without a shared file
system), the task carries the trial's run directory as an archive, runs it in a scratch folder
and sends the run directory back as an archive, which :func:`unpack_run_dir` puts in place.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunDirError

__all__ = ["TrialTask", "run_trial", "pack_run_dir", "unpack_run_dir"]


@dataclass(frozen=True)
class TrialTask:
    """One trial to run: which, from which spec, with which overrides, into which folder, how."""

    arm: str
    seed: int
    spec: str                     # the arm's spec copy in the study directory (absolute)
    overrides: tuple[str, ...]    # the trial's: seed, run name, threads
    run_dir: str                  # STUDY_DIR/<arm>/seed-<n> (absolute)
    action: str                   # "start" | "resume"
    plugins: tuple[str, ...] = ()
    #: The run directory as a tar archive (its files travel with the task), or None (shared files).
    archive: bytes | None = None


def run_trial(_context: Any, task: TrialTask) -> dict[str, Any]:
    """Run one trial; returns ``{"archive": bytes}`` when it ran away from the study's files
    (``task.archive`` given or ``TrialTask.run_dir`` not visible), else ``{}``. A failure raises
    (the executor records it as the trial's outcome)."""
    if task.archive is None:
        _run(task, Path(task.run_dir))
        return {}
    with tempfile.TemporaryDirectory(prefix="nasreg-trial-") as scratch:
        run_dir = Path(scratch) / "run"
        run_dir.mkdir()
        if task.archive:
            _extract(task.archive, run_dir)
        try:
            _run(task, run_dir)
        except BaseException as exc:
            # what the trial wrote (its checkpoint, its failure record) still comes back
            exc.nasreg_archive = pack_run_dir(run_dir)  # type: ignore[attr-defined]
            raise
        return {"archive": pack_run_dir(run_dir)}


def _run(task: TrialTask, run_dir: Path) -> None:
    from .. import api

    if task.action == "resume":
        api.resume(run_dir, plugins=list(task.plugins), progress=False)
    else:
        api.search(task.spec, overrides=list(task.overrides), plugins=list(task.plugins), out=run_dir,
                   progress=False)


def pack_run_dir(path: Path) -> bytes:
    """The files of a run directory as an uncompressed tar archive (paths relative to it)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for entry in sorted(Path(path).rglob("*")):
            if entry.is_file() and not entry.is_symlink() and not entry.name.startswith(".tmp"):
                tar.add(entry, arcname=str(entry.relative_to(path)), recursive=False)
    return buffer.getvalue()


def _extract(archive: bytes, into: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
        tar.extractall(into, filter="data")  # regular files inside ``into`` only


def unpack_run_dir(archive: bytes, run_dir: Path) -> None:
    """Put a trial's returned run directory in place of ``run_dir``: extracted beside it first,
    then swapped in, so a crash leaves either the old folder or the new one, never half of each."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.new-", dir=run_dir.parent))
    try:
        _extract(archive, fresh)
        old = None
        if run_dir.exists():
            old = run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}")
            os.replace(run_dir, old)
        os.replace(fresh, run_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(fresh, ignore_errors=True)
        raise RunDirError(f"{run_dir}: cannot put the trial's returned files in place: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
