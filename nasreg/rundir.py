"""Run directories: where a run's spec, metrics, checkpoints and genotype live.

Everything is written atomically (temporary file in the same folder, fsync, rename), so a crash at
any instant leaves either the previous version of a file or the new one, never half of one.
An existing run directory is never written into unless the user says so (``--force``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import tomli_w

from .errors import RunDirError

SPEC_FILE = "spec.toml"
METRICS_FILE = "metrics.jsonl"
GENOTYPE_FILE = "genotype.json"
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"
STAGES_FILE = "stages.json"
GRADIENTS_FILE = "gradients.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_toml(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, tomli_w.dumps(data))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record, default=_jsonable) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file. A partial last line (a crash mid-append) is dropped;
    any other damage is a :class:`RunDirError` naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: cannot read: {exc}") from None
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                break  # the append that was interrupted
            raise RunDirError(f"{path}: line {i + 1} is not valid JSON") from None
        if not isinstance(record, dict):
            raise RunDirError(f"{path}: line {i + 1} is not a JSON object")
        out.append(record)
    return out


def create_run_dir(out_dir: str | Path, name: str, explicit: str | Path | None = None,
                   force: bool = False) -> Path:
    """Make a fresh run directory.

    With ``explicit`` (``--out DIR``) that exact folder is used: it must not exist or be empty,
    unless ``force``, which removes the old one first. Otherwise ``out_dir/name`` is used, or
    ``out_dir/name-1``, ``-2``, ... when taken, so a second run never touches the first.
    """
    if explicit is not None:
        path = Path(explicit)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"--out {path}: exists and is not a directory")
        try:
            non_empty = path.is_dir() and any(path.iterdir())
        except OSError as exc:
            raise RunDirError(f"--out {path}: cannot read directory: {exc.strerror or exc}") from None
        if non_empty:
            if not force:
                raise RunDirError(f"--out {path}: run directory already exists and is not empty "
                                  "(choose another --out, or pass --force to replace it)")
            if not (path / SPEC_FILE).is_file():
                raise RunDirError(f"--out {path}: not a nasreg run directory (no {SPEC_FILE}); "
                                  "--force only replaces run directories")
            try:
                shutil.rmtree(path)
            except OSError as exc:
                raise RunDirError(f"--out {path}: cannot remove the old run directory: {exc.strerror or exc}") from None
        _mkdir(path, exist_ok=True)
        return path
    base = Path(out_dir)
    _mkdir(base, exist_ok=True, parents=True)
    for i in range(0, 10_000):
        path = base / (name if i == 0 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirError(f"{path}: cannot create run directory: {exc.strerror or exc}") from None
    raise RunDirError(f"{base}: too many runs named {name!r}; choose another [run] name or --out")


def _mkdir(path: Path, exist_ok: bool, parents: bool = True) -> None:
    try:
        path.mkdir(parents=parents, exist_ok=exist_ok)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot create directory: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise RunDirError(f"{path}: directory is not writable")
