"""Run directories: where a run's spec, metrics, checkpoints and genotype live.

:class:`RunDir` is the one object that reads and writes a run directory: it owns the file names
(``run_dir.spec``, ``run_dir.metrics``, ``run_dir.eval``, ...), writes every file atomically
(temporary file in the same folder, fsync, rename: a crash at any instant leaves either the
previous version of a file or the new one, never half of one), appends and reads JSON-lines
journals, reads JSON back with validation and saves and loads both checkpoint formats (a search's
and a training run's), versioned. Every damaged file is a one-line :class:`RunDirError` naming
it. This module does not import torch; the checkpoint methods import it when called.

Plugins write their artifacts through it (``nasreg.RunDir(run.run_dir).write_json("x.json",
data)``). An existing run directory is never written into unless the user says so
(``--force``, :meth:`RunDir.create`).

The module-level functions (:func:`write_json`, :func:`append_jsonl`, :func:`read_jsonl`,
:func:`atomic_write_text`, ...) take full paths and are thin wrappers of the methods.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterable

from . import readback
from .errors import RunDirError

SPEC_FILE = "spec.toml"
METRICS_FILE = "metrics.jsonl"
GENOTYPE_FILE = "genotype.json"
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"
STAGES_FILE = "stages.json"
GRADIENTS_FILE = "gradients.json"
RESULTS_FILE = "results.json"
CURVES_FILE = "curves.png"
#: Where ``[evaluate]`` writes inside a search's run directory.
EVAL_DIR = "eval"

#: The ``format`` of every nasreg checkpoint, and the version of each kind this nasreg writes.
CHECKPOINT_FORMAT = "nasreg.checkpoint"
CHECKPOINT_VERSIONS = {"search": 1, "train": 1}


class CheckpointError(RunDirError):
    """A checkpoint is missing, corrupted, truncated, of another kind or from a newer version."""


def read_capped(path: Path, limit: int, error: type[Exception], noun: str, *,
                directory: str = "is a directory") -> bytes:
    """The bytes of a file a user named (a spec, a genotype) or nasreg wrote, at most ``limit`` of
    them; every way reading fails (missing, a directory, a FIFO or socket that would block,
    larger than ``limit``, unreadable) is one ``error`` line naming the file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: {directory}, not a {noun} file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            os.close(fd)
            raise error(f"{path}: {directory}, not a {noun} file")
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            os.close(fd)
            raise error(f"{path}: not a regular file, not a {noun} file")
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    if data is None or len(data) > limit:  # None: a non-blocking device with nothing to read
        raise error(f"{path}: larger than {limit // 2**20} MiB; not a {noun} file" if data else
                    f"{path}: cannot read: not a regular file")
    return data


class _File:
    """A run directory's file, as a read-only attribute: ``run_dir.metrics`` is its path."""

    def __init__(self, name: str, what: str):
        self.name, self.__doc__ = name, f"``{name}``: {what}."

    def __get__(self, run_dir: "RunDir | None", owner: type) -> Any:
        return self if run_dir is None else run_dir.file(self.name)


class RunDir:
    """A run directory: its file names, atomic writes, JSON / JSONL / checkpoint reading.

    ``RunDir(path)`` wraps an existing (or to-be-made) folder; :meth:`create` makes a fresh one.
    A ``name`` argument is a file name inside the directory (``"rewards.json"``) or a relative
    path (``"eval/results.json"``). ``os.fspath(run_dir)`` and ``run_dir / "x"`` work as with
    a :class:`~pathlib.Path`.
    """

    #: The core's file names (the module's constants), for code that reads run directories.
    SPEC_FILE, METRICS_FILE, GENOTYPE_FILE, CHECKPOINT_FILE = SPEC_FILE, METRICS_FILE, GENOTYPE_FILE, CHECKPOINT_FILE
    SUMMARY_FILE, STAGES_FILE, GRADIENTS_FILE = SUMMARY_FILE, STAGES_FILE, GRADIENTS_FILE
    RESULTS_FILE, CURVES_FILE, EVAL_DIR = RESULTS_FILE, CURVES_FILE, EVAL_DIR

    def __init__(self, path: str | Path | "RunDir"):
        self.path = Path(path)

    @classmethod
    def create(cls, out_dir: str | Path, name: str, explicit: str | Path | None = None,
               force: bool = False) -> "RunDir":
        """A fresh run directory, as :func:`create_run_dir` makes it."""
        return cls(create_run_dir(out_dir, name, explicit, force))

    # -- paths -------------------------------------------------------------------------------------
    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str | Path) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def file(self, name: str | Path) -> Path:
        """The path of ``name`` in this directory (an absolute ``name`` is kept as it is)."""
        return self.path / name

    def exists(self, name: str | Path) -> bool:
        """Whether the file ``name`` exists (and is a file)."""
        return self.file(name).is_file()

    def mkdir(self) -> "RunDir":
        """Make the folder (and its parents) if missing; a one-line error if it cannot be."""
        _mkdir(self.path, exist_ok=True)
        return self

    spec = _File(SPEC_FILE, "the resolved spec of the run")
    metrics = _File(METRICS_FILE, "one line per epoch")
    genotype = _File(GENOTYPE_FILE, "the genotype found (a search) or trained (a training run)")
    checkpoint = _File(CHECKPOINT_FILE, "the last checkpoint (see :meth:`save_checkpoint`)")
    summary = _File(SUMMARY_FILE, "a finished search's figures")
    stages = _File(STAGES_FILE, "a search's stages (candidates, weights, times)")
    gradients = _File(GRADIENTS_FILE, "a search's recorded architecture-gradient trajectories")
    results = _File(RESULTS_FILE, "a finished training run's figures")
    curves = _File(CURVES_FILE, "a training run's curves")

    @property
    def eval(self) -> "RunDir":
        """``eval/``: where a search's ``[evaluate]`` trains the genotype found (a run directory)."""
        return RunDir(self.path / EVAL_DIR)

    # -- atomic writes ------------------------------------------------------------------------------
    def write_bytes(self, name: str | Path, data: bytes) -> Path:
        """Write ``data`` to ``name`` atomically: afterwards the file holds all of it, or (after a
        crash or an error) what it held before. A fault of the machine (disk full, a read-only
        file system, a name too long) is a one-line :class:`RunDirError` naming the file."""
        path = self.file(name)
        fd, tmp = _mkstemp(path)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise _write_error(path, exc) from None
            raise
        return path

    def write_text(self, name: str | Path, text: str) -> Path:
        """Write ``text`` (UTF-8) to ``name`` atomically."""
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str | Path, obj: Any) -> Path:
        """Write ``obj`` as indented JSON to ``name`` atomically (paths and arrays are converted;
        anything else that JSON cannot hold is a TypeError before the file is touched)."""
        return self.write_text(name, json.dumps(obj, indent=2, default=_jsonable) + "\n")

    def write_toml(self, name: str | Path, data: dict[str, Any]) -> Path:
        """Write the table ``data`` as TOML to ``name`` atomically."""
        import tomli_w

        return self.write_text(name, tomli_w.dumps(data))

    def read_toml(self, name: str | Path) -> dict[str, Any]:
        """The TOML table in ``name`` (``spec.toml``), read as a spec is (bounded: size, nesting,
        integers); missing or damaged, a one-line :class:`RunDirError` naming it."""
        from .errors import NasregError
        from .spec import read_toml

        try:
            return read_toml(self.file(name))
        except RunDirError:
            raise
        except NasregError as exc:
            raise RunDirError(str(exc)) from None

    def write_jsonl(self, name: str | Path, records: Iterable[dict[str, Any]]) -> Path:
        """Replace the JSON-lines file ``name`` by ``records``, atomically (say, to drop lines)."""
        return self.write_text(name, "".join(_jsonl_line(r) for r in records))

    # -- JSON lines ---------------------------------------------------------------------------------
    def append_jsonl(self, name: str | Path, record: dict[str, Any]) -> Path:
        """Append ``record`` as one line to ``name`` and fsync it (a crash can only cut the last
        line, which :meth:`read_jsonl` drops)."""
        path = self.file(name)
        line = _jsonl_line(record)
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise _write_error(path, exc, previous="its earlier lines are intact") from None
        return path

    def read_jsonl(self, name: str | Path, *, skip_damaged: bool = False) -> list[dict[str, Any]]:
        """The records of the JSON-lines file ``name`` (none when it does not exist), each read by
        the bounded parser and, for a core file (``metrics.jsonl``), checked against its schema
        (:mod:`nasreg._core.readback`).

        A last line that does not parse (a crash mid-append) is dropped; any other damaged line
        is a :class:`RunDirError` naming the file, the line and the key, or, with
        ``skip_damaged``, skipped."""
        records, damaged, total = self.scan_jsonl(name)
        if not skip_damaged:
            for number, why in damaged:
                if not (number == total and why == readback.TORN):
                    raise RunDirError(readback.line_message(self.file(name), number, why))
        return records

    def scan_jsonl(self, name: str | Path) -> tuple[list[dict[str, Any]], list[tuple[int, str]], int]:
        """``(records, damaged, lines)``: the readable records of ``name``, the damaged lines as
        ``(line number, what is wrong)`` (``"is not valid JSON"``, ``"is not a JSON object"``, or
        a key's problem: ``'key "epoch": expected an integer, got a string'``) and the number of
        the last non-blank line."""
        path = self.file(name)
        if not path.exists():
            return [], [], 0
        data = read_capped(path, readback.MAX_BYTES, RunDirError, "JSON-lines")
        schema = readback.schema_for(name)
        records: list[dict[str, Any]] = []
        damaged: list[tuple[int, str]] = []
        last = 0
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            last = number
            try:
                records.append(readback.load_line(line, schema))
            except readback.Damaged as exc:
                damaged.append((number, str(exc)))
        return records, damaged, last

    # -- JSON ---------------------------------------------------------------------------------------
    def read_json(self, name: str | Path, expect: type | tuple[type, ...] | None = dict) -> Any:
        """The JSON value in ``name``, read by the bounded parser and, for a core file
        (``summary.json``, ``stages.json``, ``gradients.json``, ``results.json``,
        ``genotype.json``), checked against its schema (:mod:`nasreg._core.readback`). A missing,
        unreadable or damaged file, or (with ``expect``) one holding another type of value, is
        a one-line :class:`RunDirError` naming it and the key."""
        path = self.file(name)
        data = read_capped(path, readback.MAX_BYTES, RunDirError, "JSON")
        try:
            value = readback.parse(data)
            if expect is not None and not isinstance(value, expect):
                raise RunDirError(f"{path}: expected {_type_names(expect)}, got {_json_type(value)}")
            schema = readback.schema_for(name)
            if schema is not None:
                schema.check(value)
        except readback.Damaged as exc:
            raise RunDirError(f"{path}: {exc}") from None
        return value

    # -- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], kind: str = "search",
                        name: str | Path = CHECKPOINT_FILE) -> Path:
        """Write ``state`` (tensors and plain data) as a checkpoint of ``kind`` (``"search"``:
        everything a search needs to continue; ``"train"``: a training run's weights, optimizer
        and scheduler), tagged with the format, kind and version, atomically."""
        import torch

        version = _checkpoint_version(kind)
        buf = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, "version": version, "kind": kind, **state}, buf)
        return self.write_bytes(name, buf.getvalue())

    def load_checkpoint(self, kind: str = "search", name: str | Path = CHECKPOINT_FILE,
                        map_location: Any = "cpu") -> dict[str, Any]:
        """The checkpoint ``name`` of ``kind``, read with ``torch.load(weights_only=True)`` (loading
        never runs code). Missing, damaged, foreign, of another kind or of a version this nasreg
        does not read: a one-line :class:`CheckpointError` naming the file."""
        import torch

        expected = _checkpoint_version(kind)
        path = self.file(name)
        if not path.is_file():
            raise CheckpointError(f"{path}: no checkpoint (nothing to resume)")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
            raise CheckpointError(f"{path}: corrupted or truncated checkpoint, or one holding more than "
                                  "tensors and plain data (refused: loading a checkpoint never runs code)") from None
        _check_checkpoint(path, state, kind, expected)
        return state


def _checkpoint_version(kind: str) -> int:
    try:
        return CHECKPOINT_VERSIONS[kind]
    except KeyError:
        raise ValueError(f"checkpoint kind {kind!r}: expected one of {sorted(CHECKPOINT_VERSIONS)}") from None


def _check_checkpoint(path: Path, state: Any, kind: str, expected: int) -> None:
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a nasreg checkpoint")
    found = state.get("kind", "search")  # version-1 search checkpoints carry no kind
    if found != kind:
        raise CheckpointError(f"{path}: a {found!r} checkpoint, not a {kind!r} one")
    version = state.get("version")
    if version != expected:
        newer = isinstance(version, int) and version > expected
        raise CheckpointError(f"{path}: checkpoint version {version!r} is not supported by this nasreg "
                              f"(expects {expected}{'; upgrade nasreg' if newer else ''})")


def _mkstemp(path: Path) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except FileNotFoundError:
        raise RunDirError(f"{path}: cannot write: no directory {path.parent}") from None
    except OSError as exc:
        raise _write_error(path, exc) from None


def _write_error(path: Path, exc: OSError, previous: str = "its previous version is intact") -> RunDirError:
    """A failed write as one line: the file, what the machine said and what is still there."""
    try:
        kept = f" ({previous})" if path.is_file() else ""
    except OSError:  # the name itself is what failed (too long, ...)
        kept = ""
    return RunDirError(f"{path}: cannot write: {exc.strerror or exc}{kept}")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _jsonl_line(record: dict[str, Any]) -> str:
    return json.dumps(record, default=_jsonable) + "\n"


_JSON_NAMES = {dict: "a JSON object", list: "a JSON array", str: "a string", int: "a number",
               float: "a number", bool: "true or false"}


def _type_names(expect: type | tuple[type, ...]) -> str:
    kinds = expect if isinstance(expect, tuple) else (expect,)
    return " or ".join(dict.fromkeys(_JSON_NAMES.get(k, k.__name__) for k in kinds))


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_NAMES.get(type(value), type(value).__name__)


# -- the one module-level writer (public as nasreg.write_json, for a plugin's one-off artifact) ----

def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (see :meth:`RunDir.write_json`)."""
    path = Path(path)
    RunDir(path.parent).write_json(path.name, obj)


# -- making a run directory ------------------------------------------------------------------------

def create_run_dir(out_dir: str | Path, name: str, explicit: str | Path | None = None,
                   force: bool = False) -> Path:
    """Make a fresh run directory and lock it for this process (:class:`RunDirLock`; drop the lock
    with :func:`release_run_dir` when done, or let the process end).

    With ``explicit`` (``--out DIR``) that exact folder is used: it must not exist or be empty,
    unless ``force``, which empties the old run directory first. Otherwise ``out_dir/name`` is
    used, or ``out_dir/name-1``, ``-2``, ... when taken, so a second run never touches the first.
    Two processes given the same folder at once: one gets it, the other a one-line refusal (the
    emptiness check is made with the lock held).
    """
    if explicit is not None:
        _check_name_lengths(Path(explicit), "--out")
        return _explicit_run_dir(Path(explicit), force)
    base = Path(out_dir)
    _check_name_lengths(base / name, "[run] out_dir / name")
    _mkdir(base, exist_ok=True, parents=True)
    for i in range(0, 10_000):
        path = base / (name if i == 0 else f"{name}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirError(f"{path}: cannot create run directory: {exc.strerror or exc}") from None
        lock_run_dir(path)
        return path
    raise RunDirError(f"{base}: too many runs named {name!r}; choose another [run] name or --out")


def _check_name_lengths(path: Path, what: str) -> None:
    """Refuse, before any folder is made, a path with a component longer than the file system
    allows (its ``NAME_MAX``, 255 on most)."""
    limit = 255
    try:
        existing = next(p for p in (path, *path.parents) if p.exists())
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (StopIteration, OSError, ValueError, AttributeError):
        pass
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise RunDirError(f"{what} {path}: File name too long (a component has {len(os.fsencode(part))} "
                              f"bytes; this file system allows {limit})")


def _explicit_run_dir(path: Path, force: bool) -> Path:
    """``--out DIR``: empty or missing, or (with ``force``) an old run directory, emptied; locked."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path}: exists and is not a directory")
    _mkdir(path, exist_ok=True)
    lock = lock_run_dir(path)
    try:
        try:
            entries = list(path.iterdir())
        except OSError as exc:
            raise RunDirError(f"--out {path}: cannot read directory: {exc.strerror or exc}") from None
        if entries:
            if not force:
                raise RunDirError(f"--out {path}: run directory already exists and is not empty "
                                  "(choose another --out, or pass --force to replace it)")
            if not (path / SPEC_FILE).is_file():
                raise RunDirError(f"--out {path}: not a nasreg run directory (no {SPEC_FILE}); "
                                  "--force only replaces run directories")
            _empty(path, entries)
    except BaseException:
        lock.release()
        raise
    return path


def _empty(path: Path, entries: list[Path]) -> None:
    """Remove everything in ``path`` (kept: the directory itself, and so its lock)."""
    try:
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    except OSError as exc:
        raise RunDirError(f"--out {path}: cannot remove the old run directory: {exc.strerror or exc}") from None


# -- one process per run directory -----------------------------------------------------------------

class RunDirLock:
    """An exclusive lock on a run directory, held for as long as a process works in it
    (``nasreg run``, ``resume``, ``train`` into it, ``--force`` replacing it).

    It is a ``flock`` on the directory itself: nothing is written into the directory, so a
    command that is refused leaves it exactly as it was; the kernel drops the lock when its
    process dies, however it dies, so a stale lock of a dead process never blocks anyone. A
    second process is refused in one :class:`RunDirError` line naming the holder's PID (read from
    ``/proc/locks`` on Linux). Taking the lock also removes the temporary files an earlier process
    left when it was killed in the middle of an atomic write (``.checkpoint.pt.*.tmp``): with the
    lock held, nobody else can be writing them.

    Locks are counted per process: taking the lock of a directory this process already holds
    only counts, and the last :meth:`release` drops it.
    """

    _held: dict[Path, "RunDirLock"] = {}

    def __init__(self, path: Path, fd: int):
        self.path, self._fd, self._count = path, fd, 1

    @classmethod
    def acquire(cls, path: str | Path) -> "RunDirLock":
        """Lock ``path`` (an existing directory) for this process, or raise :class:`RunDirError`."""
        path = Path(os.path.abspath(path))
        held = cls._held.get(path)
        if held is not None:
            held._count += 1
            return held
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise RunDirError(f"{path}: cannot open run directory: {exc.strerror or exc}") from None
        try:
            _flock(fd, path)
            if not os.access(path, os.W_OK):
                why = "is on a read-only file system" if _read_only(path) else "is not writable"
                raise RunDirError(f"{path}: run directory {why}")
        except BaseException:
            os.close(fd)
            raise
        lock = cls._held[path] = cls(path, fd)
        remove_stale_temporaries(path)
        return lock

    def release(self) -> None:
        """Drop one hold; the last one unlocks the directory."""
        self._count -= 1
        if self._count <= 0 and self._fd is not None:
            self._held.pop(self.path, None)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunDirLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_run_dir(path: str | Path) -> RunDirLock:
    """Lock the run directory ``path`` for this process (see :class:`RunDirLock`)."""
    return RunDirLock.acquire(path)


def release_run_dir(path: str | Path) -> None:
    """Drop this process's hold of ``path``'s lock (nothing when it holds none)."""
    held = RunDirLock._held.get(Path(os.path.abspath(path)))
    if held is not None:
        held.release()


def _flock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        who = f"PID {holder}" if holder else "another process"
        raise RunDirError(f"{path}: in use by another nasreg process ({who}); wait for it to end, or stop it "
                          "(a run directory takes one process at a time)") from None
    except OSError as exc:  # a file system without locks: go on unlocked rather than refuse
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise RunDirError(f"{path}: cannot lock run directory: {exc.strerror or exc}") from None


def _lock_holder(fd: int) -> int | None:
    """The PID holding the flock on ``fd``'s file, from ``/proc/locks`` (Linux), else None."""
    try:
        st = os.fstat(fd)
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    inode = f":{st.st_ino}"
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a blocked waiter has "->" after the number)
        if "FLOCK" in fields and len(fields) >= 6:
            at = fields.index("FLOCK")
            if len(fields) > at + 4 and fields[at + 4].endswith(inode) and fields[at + 3].isdigit() \
                    and int(fields[at + 3]) != os.getpid():
                return int(fields[at + 3])
    return None


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporary files of atomic writes (``.NAME.*.tmp``) an earlier process left in
    ``path`` and its ``eval/`` folder when it was killed mid-write; the paths removed. Call it
    only with the directory's lock held."""
    removed = []
    for folder in (Path(path), Path(path) / EVAL_DIR):
        try:
            entries = list(folder.glob(".*.tmp"))
        except OSError:
            continue
        for tmp in entries:
            try:
                if tmp.is_file():
                    tmp.unlink()
                    removed.append(tmp)
            except OSError:
                pass
    return removed


def _mkdir(path: Path, exist_ok: bool, parents: bool = True) -> None:
    try:
        path.mkdir(parents=parents, exist_ok=exist_ok)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot create directory: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise RunDirError(f"{path}: directory is not writable")
