"""What both loggers need: the extra check, global epoch steps, the numbers of a metrics line,
a flattened spec, the run directory's files."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Iterator

import nasreg

#: The search's journal of epochs (one line per epoch, in order; a resume drops the lines after
#: its checkpoint before training again).
METRICS_FILE = "metrics.jsonl"
#: Keys of a search epoch's line that are positions or flags, not measurements.
SEARCH_POSITION_KEYS = ("stage", "epoch", "joint")


def require(module: str, extra: str, library: str) -> None:
    """Raise the one-line :class:`nasreg.PluginError` naming the extra when ``module`` is not
    installed (looked up, not imported: ``nasreg validate`` stays fast)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise nasreg.PluginError(f"logger {extra!r} needs {library}: pip install 'nasreg[{extra}]'")


def numbers(metrics: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, float]:
    """The finite numbers of a metrics line (bools and lists left out), as floats."""
    out = {}
    for key, value in metrics.items():
        if key in skip or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def search_lines(run_dir: str | Path) -> list[dict[str, Any]]:
    """The search's ``metrics.jsonl`` lines; a line's index is its global epoch step (epochs
    counted across stages from 0)."""
    files = nasreg.RunDir(run_dir)
    if not files.exists(METRICS_FILE):
        return []
    return files.read_jsonl(METRICS_FILE, skip_damaged=True)


def stage_steps(lines: list[dict[str, Any]], stage: int) -> list[tuple[int, dict[str, Any]]]:
    """``(global step, line)`` of every epoch of ``stage``, in order."""
    return [(step, line) for step, line in enumerate(lines) if line.get("stage") == stage]


def flatten(table: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``("search.epochs", 2)``, ``("selector.clusterer.n_clusters", 3)``, ...: every leaf of a
    nested table with its dotted key path (lists are leaves)."""
    if isinstance(table, dict):
        for key, value in table.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, table


def run_files(folder: str | Path, log_checkpoints: bool = False) -> list[Path]:
    """The plain files directly in ``folder`` worth keeping with a run: everything but hidden
    files (locks, temporary files of atomic writes) and, unless ``log_checkpoints``, the
    ``*.pt`` checkpoints. Folders (``eval/``, ``mlruns/``, ``tensorboard/``) are not included."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and (log_checkpoints or p.suffix != ".pt"))
