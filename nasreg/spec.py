"""TOML specs: parsed with ``tomllib``, validated into typed objects before anything runs.

A spec has these tables (``name``-style keys pick registry entries; the other keys of such a
table are passed to that entry's factory and checked against its signature):

``[run]``           name, seed, device, threads, out_dir, deterministic, plugins, checkpoint_every
``[data]``          ``dataset`` (registry name), batch_size, train_portion, num_workers, limit; any
                    other key goes to the dataset factory (``root``, ``download``, ...)
``[search_space]``  ``name``, ``operations`` (the candidate op list, in order), space keys
``[search]``        epochs and warmup_epochs per stage, the gradient statistic
``[strategy]``      ``name`` and its keys (``darts``: order, learning rates, ...)
``[selector]``      ``name`` and its keys; ``[selector.clusterer]`` names a clusterer
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

from . import params as P
from .errors import RegistryError, SpecError
from .params import Component, Range

# ------------------------------------------------------------------------------------------------
# The core's own sections. Their signatures are their schemas (see nasreg.params).


@dataclass
class RunSection:
    name: str = ""
    seed: Annotated[int, Range(ge=0, le=2**32 - 1)] = 0
    device: str = "auto"
    threads: Annotated[int, Range(ge=0, le=1024)] = 0
    out_dir: str = "runs"
    deterministic: bool = False
    plugins: list[str] = field(default_factory=list)
    checkpoint_every: Annotated[int, Range(ge=1, le=100_000)] = 1

    def __post_init__(self) -> None:
        # The name becomes a folder under out_dir: a plain name, never a path that leaves it.
        if self.name and (self.name in (".", "..") or any(c in self.name for c in "/\\\0")):
            raise ValueError(f"name: expected a folder name (no '/' or '\\', not '.' or '..'), got {self.name!r}")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ValueError(f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {dev!r}")


@dataclass
class DataSection:
    dataset: str
    batch_size: Annotated[int, Range(ge=1, le=65_536)] = 64
    train_portion: Annotated[float, Range(gt=0, lt=1)] = 0.5
    num_workers: Annotated[int, Range(ge=0, le=256)] = 0
    limit: Annotated[int, Range(ge=0)] = 0


Epochs = Annotated[int, Range(ge=0, le=100_000)]


@dataclass
class SearchSection:
    epochs: Epochs | list[Epochs] = 50
    warmup_epochs: Epochs | list[Epochs] = 0
    grad_stat: Literal["mean", "abs_mean", "sum", "last"] = "mean"
    #: How the per-epoch validation pass normalizes: "batch" statistics or "running" averages.
    eval_batch_norm: Literal["batch", "running"] = "batch"

    def per_stage(self, stages: int, where: str = "[search]") -> list[tuple[int, int]]:
        """(warmup, total) epochs for each of ``stages`` stages."""
        def expand(value, key):
            if isinstance(value, list):
                if len(value) != stages:
                    raise SpecError(f"{where} {key}: expected one value per stage ({stages}), got {len(value)}")
                return list(value)
            return [value] * stages
        total, warm = expand(self.epochs, "epochs"), expand(self.warmup_epochs, "warmup_epochs")
        for i, (w, t) in enumerate(zip(warm, total)):
            if t < 1:
                raise SpecError(f"{where} epochs: stage {i} needs at least 1 epoch, got {t}")
            if w > t:
                raise SpecError(f"{where} warmup_epochs: stage {i} has {w} warm-up epochs but only {t} epochs")
        return list(zip(warm, total))


SECTIONS = ("run", "data", "search_space", "search", "strategy", "selector")


@dataclass
class Spec:
    """A validated spec. ``raw`` is the table as read (after ``--set``), ``resolved()`` the
    spec with every default filled in, as written into the run directory."""

    path: Path
    raw: dict[str, Any]
    run: RunSection
    data: DataSection
    dataset: Component
    search_space: Component
    search: SearchSection
    strategy: Component
    selector: Component

    def resolved(self) -> dict[str, Any]:
        out = {
            "run": dataclasses.asdict(self.run),
            "data": {**dataclasses.asdict(self.data), **P.to_spec_value(self.dataset.params)},
            "search_space": self.search_space.to_spec(),
            "search": dataclasses.asdict(self.search),
            "strategy": self.strategy.to_spec(),
            "selector": self.selector.to_spec(),
        }
        return _drop_none(out)

    def digest(self) -> str:
        """A short hash of the resolved spec (the run name and output folder excluded)."""
        data = self.resolved()
        data["run"] = {k: v for k, v in data["run"].items() if k not in ("name", "out_dir")}
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------
# Reading and overriding


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not a spec file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: invalid TOML: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=1`` -> (["a", "b"], 1). The value is a TOML literal; a bare word is a string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {text!r}: expected KEY.PATH=VALUE")
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise SpecError(f"--set {text!r}: empty part in key path {key!r}")
    value = value.strip()
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        if value.startswith(("[", "{", '"', "'")):
            raise SpecError(f"--set {text!r}: value is not a valid TOML literal") from None
        parsed = value
    return [p.strip() for p in parts], parsed


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    data = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise SpecError(f"--set {text!r}: {'.'.join(parts[:i + 1])} is not a table")
            node = nxt
        node[parts[-1]] = value
    return data


# ------------------------------------------------------------------------------------------------
# Validation


def _table(raw: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"{path}: [{key}]: expected a table, got {value!r}")
    return value


def _section(cls, table: dict[str, Any], where: str):
    kwargs = P.bind(cls, table, where)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise SpecError(f"{where} {exc}") from None


def plugins_requested(raw: dict[str, Any], path: Path) -> list[str]:
    """The ``[run] plugins`` list, checked before plugins are loaded."""
    run = _table(raw, "run", path)
    return P.check(run.get("plugins", []), list[str], f"{path}: [run] plugins")


def _check_data_keys(data_raw: dict[str, Any], core_keys: set[str], dataset: str, where: str,
                     registries: Any) -> None:
    """An unknown ``[data]`` key, with close matches among the core's keys *and* the dataset's.

    (The dataset factory alone would suggest only its own keys: ``batchsize`` must suggest
    ``batch_size``.) Factories taking ``**kwargs`` accept any key; unknown datasets are reported
    by the dataset lookup that follows.
    """
    if "name" in data_raw:  # [data] picks its entry with `dataset`; `name` would silently replace it
        raise SpecError(f"{where} name: unknown key (the dataset is chosen with `dataset`)")
    try:
        entry = registries.datasets.get(dataset)
    except RegistryError:
        return
    sig = P.signature_params(entry.factory)
    if sig is None or sig[1]:
        return
    known = sorted(core_keys | set(sig[0]))
    for key in data_raw:
        if key in known:
            continue
        msg = f"{where} {key}: unknown key"
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        if close:
            msg += "; did you mean " + ", ".join(repr(c) for c in close) + "?"
        else:
            msg += " (known keys: " + ", ".join(known) + ")"
        raise SpecError(msg)


def validate(raw: dict[str, Any], path: str | Path, registries: Any) -> Spec:
    """Turn a raw spec table into a :class:`Spec`, or raise :class:`SpecError` naming the key."""
    path = Path(path)
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], SECTIONS, n=1, cutoff=0.6)
        hint = f"; did you mean [{close[0]}]?" if close else ""
        raise SpecError(f"{path}: unknown table [{unknown[0]}]{hint} (known: "
                        + ", ".join(f"[{s}]" for s in SECTIONS) + ")")

    run = _section(RunSection, _table(raw, "run", path), f"{path}: [run]")
    if not run.name:
        run.name = path.stem

    data_raw = dict(_table(raw, "data", path))
    core_keys = {f.name for f in dataclasses.fields(DataSection)}
    if "dataset" not in data_raw:
        raise SpecError(f"{path}: [data] dataset: missing required key (a registered dataset name)")
    data = _section(DataSection, {k: v for k, v in data_raw.items() if k in core_keys}, f"{path}: [data]")
    _check_data_keys(data_raw, core_keys, data.dataset, f"{path}: [data]", registries)
    dataset = P.component("datasets", {"name": data.dataset, **{k: v for k, v in data_raw.items()
                                                               if k not in core_keys}},
                          f"{path}: [data]", registries, name_key="dataset")

    def named(key: str, kind: str) -> Component:
        table = _table(raw, key, path)
        if "name" not in table:
            raise SpecError(f"{path}: [{key}] name: missing required key (a registered "
                            f"{registries[kind].noun}; `nasreg list-plugins` lists them)")
        return P.component(kind, table, f"{path}: [{key}]", registries)

    search_space = named("search_space", "search_spaces")
    ops = search_space.params.get("operations")
    if ops is not None:
        where = f"{path}: [search_space] operations"
        P.check(ops, list[str], where)
        if not ops:
            raise SpecError(f"{where}: expected at least one operation, got []")
        for i, op in enumerate(ops):
            try:
                registries.operations.get(op)
            except RegistryError as exc:
                raise SpecError(f"{where}[{i}]: {exc}") from None
        dup = [op for i, op in enumerate(ops) if op in ops[:i]]
        if dup:
            raise SpecError(f"{where}: operation {dup[0]!r} is listed twice")

    search = _section(SearchSection, _table(raw, "search", path), f"{path}: [search]")
    strategy = named("strategy", "strategies")
    selector = named("selector", "selectors")
    spec = Spec(path=path, raw=raw, run=run, data=data, dataset=dataset, search_space=search_space,
                search=search, strategy=strategy, selector=selector)
    # Building the selector is cheap and tells how many stages the epoch lists must cover.
    check_stages(spec, selector.build())
    return spec


def check_stages(spec: Spec, selector: Any) -> list[tuple[int, int]]:
    """The (warmup, epochs) plan of every stage, checked by the selector as well."""
    where = f"{spec.path}: [search]"
    stages = spec.search.per_stage(getattr(selector, "num_stages", 1), where)
    check = getattr(selector, "check", None)
    if check is not None:
        try:
            check(stages)
        except ValueError as exc:
            raise SpecError(f"{where}: {exc}") from None
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None
    return stages


def load(path: str | Path, overrides: Sequence[str] = (), extra_plugins: Sequence[str] = ()):
    """Read, override, load the plugins the spec asks for, validate: ``(Spec, Plugins)``."""
    from .plugins import load_plugins

    path = Path(path)
    raw = apply_overrides(read_toml(path), overrides)
    requested = plugins_requested(raw, path)
    # A file named in the spec is relative to the spec's folder; one given on the command line
    # (--plugin) to the working directory, as any command-line path.
    extra = [str(Path(ref).expanduser().resolve()) if _is_file_ref(ref) else ref for ref in extra_plugins]
    plugins = load_plugins([*requested, *extra], base_dir=path.parent)
    spec = validate(raw, path, plugins.registries)
    return spec, plugins


def _is_file_ref(ref: str) -> bool:
    """Whether a plugin reference names a ``.py`` file (as :meth:`Plugins.load_module` decides)."""
    return ref.endswith(".py") or "/" in ref or os.sep in ref
