"""Task functions of the executor tests (tests/test_executors.py, tests/test_ray_executor.py).

They live in a module of their own, importable by name, because spawned worker processes and Ray
workers import the functions they are handed; this module imports nothing heavy, so a worker
starts quickly. Every function is ``fn(context, task)`` or ``setup(payload)``, as
:meth:`nasreg.Executor.map` calls them.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import nasreg


def square(ctx: Any, x: int) -> int:
    """x squared."""
    return x * x


def where(ctx: Any, x: Any) -> tuple[int, Any]:
    """The process that ran the task, and the task's context."""
    return os.getpid(), ctx


def _sleep(seconds: float) -> None:
    """Sleep in short naps, so an exception raised into the thread (Ray's cancel) stops it soon."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))


def nap(ctx: Any, task: tuple[float, Any]) -> Any:
    """Sleep ``task[0]`` seconds, then return ``task[1]``."""
    seconds, value = task
    _sleep(seconds)
    return value


def nap_and_note(ctx: Any, task: tuple[str, float]) -> int:
    """Write this process's PID into the file ``task[0]``, then sleep ``task[1]`` seconds."""
    path, seconds = task
    Path(path).write_text(str(os.getpid()))
    _sleep(seconds)
    return os.getpid()


def meet(ctx: Any, task: tuple[str, int]) -> int:
    """Wait (at most 60 s) until ``task[1]`` tasks are running at once: each notes its PID in the
    folder ``task[0]``; returns this process's PID. Run n of them to get n workers started."""
    folder, n = Path(task[0]), task[1]
    (folder / f"{os.getpid()}-{uuid.uuid4().hex}").write_text("")
    end = time.monotonic() + 60
    while len(list(folder.iterdir())) < n and time.monotonic() < end:
        time.sleep(0.02)
    return os.getpid()


class NeedsTwoArgs(Exception):
    """An exception that does not survive pickling (its ``__init__`` wants two arguments)."""

    def __init__(self, a: str, b: str):
        super().__init__(f"{a} and {b}")


def faulty(ctx: Any, x: int) -> int:
    """x, except: 3 raises ValueError, 4 a nasreg error, 5 an exception that cannot be pickled,
    6 returns a result that cannot be pickled, 7 kills its own process."""
    if x == 3:
        raise ValueError(f"bad value {x}\nsecond line")
    if x == 4:
        raise nasreg.DataError(f"data.toml: [data] root: missing ({x})")
    if x == 5:
        raise NeedsTwoArgs("this", "that")
    if x == 6:
        return lambda: x  # type: ignore[return-value]
    if x == 7:
        os._exit(3)
    return x


def counting_setup(payload: dict[str, str]) -> str:
    """A context that records each call: one file per call in ``payload["dir"]``; returns a token
    unique to the call."""
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    (Path(payload["dir"]) / token).write_text("")
    return token
