"""Search checkpoints: what a search needs to continue exactly where it stopped.

The file I/O (atomic write, versioned format, ``torch.load(weights_only=True)``) is
:meth:`nasreg.RunDir.save_checkpoint` / :meth:`~nasreg.RunDir.load_checkpoint`; this module adds
the random-number-generator states, stored as plain containers and tensors too, and keeps
:func:`save` / :func:`load` for full paths.

A search checkpoint also records what it belongs to (:func:`nasreg._core.resumecheck.identity`:
``spec_digest``, the resolved ``spec``, the stage ``plan`` and steps per epoch); ``nasreg resume``
refuses one that does not belong to the run directory's ``spec.toml``
(:mod:`nasreg._core.resumecheck`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .rundir import CHECKPOINT_FORMAT, CHECKPOINT_VERSIONS, CheckpointError, RunDir

__all__ = ["CheckpointError", "capture_rng", "load", "restore_rng", "save"]

FORMAT = CHECKPOINT_FORMAT
VERSION = CHECKPOINT_VERSIONS["search"]


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
    """Write a search checkpoint: ``state`` and the RNG states, atomically (see
    :meth:`nasreg.RunDir.save_checkpoint`)."""
    path = Path(path)
    RunDir(path.parent).save_checkpoint({**state, "rng": capture_rng()}, kind="search", name=path.name)


def load(path: Path) -> dict[str, Any]:
    """A search checkpoint, read with ``torch.load(weights_only=True)`` (see
    :meth:`nasreg.RunDir.load_checkpoint`)."""
    path = Path(path)
    return RunDir(path.parent).load_checkpoint(kind="search", name=path.name)
