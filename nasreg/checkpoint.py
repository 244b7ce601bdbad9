"""Checkpoints: everything a search needs to continue exactly where it stopped.

A checkpoint is written atomically (temporary file, fsync, rename) and read back with
``torch.load(weights_only=True)``: plain containers, numbers, strings and tensors only, so loading
one never executes code. RNG states are stored in that form too.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import rundir as rd
from .errors import NasregError

FORMAT = "nasreg.checkpoint"
VERSION = 1


class CheckpointError(NasregError):
    """A checkpoint is missing, corrupted, truncated or from an incompatible version."""


def capture_rng() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": _py_state_to_list(random.getstate()),
        "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_py_state_from_list(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_list(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_state_from_list(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def save(path: Path, state: dict[str, Any]) -> None:
    state = {"format": FORMAT, "version": VERSION, **state, "rng": capture_rng()}
    buf = io.BytesIO()
    torch.save(state, buf)
    rd.atomic_write_bytes(path, buf.getvalue())


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint (nothing to resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
        raise CheckpointError(f"{path}: corrupted or truncated checkpoint, or one holding more than "
                              "tensors and plain data (refused: loading a checkpoint never runs code)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a nasreg checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')!r} is not supported "
                              f"by this nasreg (expects {VERSION})")
    return state
