"""Torch-free helpers of the dataset factories: user paths and one-line messages."""

from __future__ import annotations

import os
from pathlib import Path


def resolve(path: str) -> Path:
    """A user-given path: ``~`` expanded, relative paths taken from the current directory."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on a single line (the CLI prints a DataError as one line), shortened to ``limit``."""
    out = " ".join(str(text).split())
    return out if len(out) <= limit else out[:limit - 3] + "..."


def reason(exc: BaseException) -> str:
    msg = one_line(exc)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
