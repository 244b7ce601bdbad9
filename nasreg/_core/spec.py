"""TOML specs: parsed with ``tomllib``, validated into typed objects before anything runs.

A spec has these tables (``name``-style keys pick registry entries; the other keys of such a
table are passed to that entry's factory and checked against its signature):

``[run]``           name, seed, device, threads, out_dir, deterministic, plugins, checkpoint_every,
                    loggers (registered loggers to switch on; ``[loggers.<name>]``: their keys)
``[data]``          ``dataset`` (registry name), batch_size, train_portion, num_workers, limit,
                    loader ("auto" | "dataloader" | "device": :class:`DataSection`); any other key
                    goes to the dataset factory (``root``, ``download``, ...)
``[search_space]``  ``name``, ``operations`` (the candidate op list, in order), space keys
``[search]``        epochs and warmup_epochs per stage, the gradient statistic
``[strategy]``      ``name`` and its keys (``darts``: order, learning rates, ...)
``[selector]``      ``name`` and its keys; ``[selector.clusterer]`` names a clusterer
``[executor]``      optional: where a sampling strategy's children train (``name``: a registered
                    executor, ``local`` or ``ray``; its other keys go to the executor)
``[evaluate]``      optional: retrain the genotype found from scratch after the search (the recipe:
                    :class:`EvaluateSection`; the other keys are the evaluation network's, declared
                    by the space; ``[evaluate.data]`` picks its dataset, by default the search's)
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
from .data import check_split, registered_shape
from .errors import RegistryError, SpecError
from .loggers import build_all as build_loggers, resolved_loggers, validate_loggers
from .params import Component, Range

# ------------------------------------------------------------------------------------------------
# The core's own sections. Their signatures are their schemas (see nasreg._core.params).


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
    #: Registered loggers switched on for the run (nasreg._core.loggers); not part of the digest.
    loggers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The name becomes a folder under out_dir: a plain name, never a path that leaves it.
        if self.name and (self.name in (".", "..") or any(c in self.name for c in "/\\\0")):
            raise ValueError(f"name: expected a folder name (no '/' or '\\', not '.' or '..'), got {P.show(self.name)}")
        if "\0" in self.out_dir:
            raise ValueError(f"out_dir: expected a folder path, got {P.show(self.out_dir)}")
        dev = self.device
        index = dev[5:] if dev.startswith("cuda:") else ""
        # ASCII digits only ("cuda:٣" is no index torch parses), and a number torch can hold.
        if not (dev in ("auto", "cpu", "cuda", "mps") or (index.isascii() and index.isdigit() and len(index) <= 4)):
            raise ValueError(f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {P.show(dev)}")


@dataclass
class DataSection:
    dataset: str
    batch_size: Annotated[int, Range(ge=1, le=65_536)] = 64
    train_portion: Annotated[float, Range(gt=0, lt=1)] = 0.5
    num_workers: Annotated[int, Range(ge=0, le=256)] = 0
    limit: Annotated[int, Range(ge=0)] = 0
    #: How batches are made (nasreg._core.device_loader). "auto": the device loader (the split held on
    #: the GPU, crop/flip/normalization done there per batch) when the run's device is CUDA and the
    #: dataset supports it (in-memory datasets: CIFAR, MNIST, digits; not image_folder, not with
    #: AutoAugment), else a torch DataLoader. "dataloader": always a DataLoader. "device": always
    #: the device loader, also on a CPU (tensors in RAM, batched indexing: much faster than a
    #: per-item DataLoader for small images); an error if the dataset cannot be held in memory.
    loader: Literal["auto", "dataloader", "device"] = "auto"

    def __post_init__(self) -> None:
        if self.limit == 1:
            raise ValueError("limit: 1 image cannot be split into training and validation images; use 0 (all "
                             "images) or at least 2")


Epochs = Annotated[int, Range(ge=0, le=100_000)]


@dataclass
class SearchSection:
    epochs: Epochs | list[Epochs] = 50
    warmup_epochs: Epochs | list[Epochs] = 0
    grad_stat: Literal["mean", "abs_mean", "sum", "last"] = "mean"
    #: How the per-epoch validation pass normalizes: "batch" statistics or "running" averages.
    eval_batch_norm: Literal["batch", "running"] = "batch"
    #: The collapse monitor (nasreg._core.monitor): per epoch, the dominant eigenvalue of the validation
    #: loss's Hessian w.r.t. the architecture parameters (power iteration, at most monitor_iterations
    #: Hessian-vector products, relative tolerance monitor_tol) and the skip connections of the cell
    #: derived now, in metrics.jsonl. monitor_early_stop: end a stage when the mean eigenvalue of the
    #: last monitor_window joint epochs exceeds monitor_ratio times that of the window before, and
    #: keep the alphas of monitor_window epochs before (DARTS-ES, Zela et al. 2020: k = 5, 1.3).
    monitor: bool = False
    monitor_iterations: Annotated[int, Range(ge=1, le=10_000)] = 20
    monitor_tol: Annotated[float, Range(gt=0, lt=1)] = 1e-3
    monitor_early_stop: bool = False
    monitor_window: Annotated[int, Range(ge=1, le=10_000)] = 5
    monitor_ratio: Annotated[float, Range(gt=1)] = 1.3

    def __post_init__(self) -> None:
        if self.monitor_early_stop and not self.monitor:
            raise ValueError("monitor_early_stop: true needs monitor = true (the rule reads the monitor's eigenvalues)")

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


@dataclass
class EvaluateSection:
    """``[evaluate]``'s recipe: how the network a genotype describes is trained from scratch and tested.

    These are the core's keys; every other key of ``[evaluate]`` is the evaluation network's, declared
    by the genotype's search space (its ``network_keys`` registry metadata) and passed to its
    ``build_network``. The defaults of both come, under the spec's own keys, from the space's
    ``evaluation_defaults`` metadata (``darts-cell``: DARTS's CIFAR-10 recipe, specs/eval-darts.toml),
    then from here. The core's own defaults are neutral: no momentum, weight decay, clipping, label
    smoothing, drop path, cutout, autoaugment or auxiliary loss. ``epochs``, ``batch_size`` and
    ``lr`` have no neutral value: they are required unless the space supplies them.

    ``[evaluate.data]`` names the dataset (``dataset`` and that dataset's keys); without it the
    search's ``[data]`` dataset is used, else the space's default (``evaluation_defaults["data"]``);
    without any, ``[evaluate.data] dataset`` is a missing key. The network trains on the whole
    train split and is tested on the test split. ``augment`` (random crop and flip) is passed to
    the dataset when set (unset: the dataset's default), ``autoaugment`` when true; cutout is
    applied to the normalized training batches by the training loop. ``loader`` picks the batch
    maker as ``[data] loader`` does; with the device loader the crop, flip, normalization and cutout
    of the training batches run on the device (the test set is never augmented).
    """

    epochs: Annotated[int, Range(ge=1, le=100_000)]
    batch_size: Annotated[int, Range(ge=1, le=65_536)]
    lr: Annotated[float, Range(gt=0)]
    lr_min: Annotated[float, Range(ge=0)] = 0.0
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.0
    weight_decay: Annotated[float, Range(ge=0)] = 0.0
    grad_clip: Annotated[float, Range(ge=0)] = 0.0  # 0: no clipping
    label_smoothing: Annotated[float, Range(ge=0, lt=1)] = 0.0
    #: The weight of the auxiliary loss when the network returns ``(logits, auxiliary_logits)``
    #: (0: the auxiliary logits are ignored).
    auxiliary_weight: Annotated[float, Range(ge=0)] = 0.0
    drop_path: Annotated[float, Range(ge=0, lt=1)] = 0.0
    cutout: bool = False
    #: The side of the cutout square, read only with ``cutout`` on (16: the cutout paper's CIFAR-10 size).
    cutout_length: Annotated[int, Range(ge=1, le=4096)] = 16
    autoaugment: bool = False
    augment: bool | None = None
    amp: bool = False
    limit: Annotated[int, Range(ge=0)] = 0  # train images used (0: all), for quick trials
    num_workers: Annotated[int, Range(ge=0, le=256)] = 0
    #: "auto" | "dataloader" | "device": as ``[data] loader`` (see DataSection).
    loader: Literal["auto", "dataloader", "device"] = "auto"
    data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min: expected a number <= lr ({self.lr:g}), got {self.lr_min:g}")


#: The core's ``[evaluate]`` keys (the recipe); the others are the evaluation network's.
RECIPE_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EvaluateSection))


SECTIONS = ("run", "data", "search_space", "search", "strategy", "selector", "executor", "evaluate", "loggers")


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
    #: None for strategies that derive the genotype themselves (sampling strategies).
    selector: Component | None
    evaluate: EvaluateSection | None = None
    #: The dataset ``[evaluate]`` trains and tests on (None without ``[evaluate]``).
    eval_dataset: Component | None = None
    #: ``[evaluate]``'s evaluation-network keys, bound to the space's ``network_keys`` (None
    #: without ``[evaluate]``).
    eval_network: dict[str, Any] | None = None
    #: ``[executor]``: where a sampling strategy's children train (None: the strategy's default,
    #: the local executor with its ``workers``). Not part of :meth:`digest`: where children run
    #: does not change what they find.
    executor: Component | None = None
    #: ``[run] loggers`` with their ``[loggers.<name>]`` keys. Not part of :meth:`digest` (they do
    #: not change results), but in :meth:`resolved`, so a resumed run logs too.
    loggers: list[Component] = field(default_factory=list)
    #: The loaded plugins whose registries validated this spec (:class:`nasreg._core.plugins.Plugins`).
    plugins: Any = field(default=None, repr=False, compare=False)

    def resolved(self) -> dict[str, Any]:
        out = {
            "run": dataclasses.asdict(self.run),
            "data": {**dataclasses.asdict(self.data), **P.to_spec_value(self.dataset.params)},
            "search_space": self.search_space.to_spec(),
            "search": dataclasses.asdict(self.search),
            "strategy": self.strategy.to_spec(),
            **({"selector": self.selector.to_spec()} if self.selector is not None else {}),
            **({"executor": self.executor.to_spec()} if self.executor is not None else {}),
        }
        if self.evaluate is not None and self.eval_dataset is not None:
            out["evaluate"] = resolved_evaluate(self.evaluate, self.eval_dataset, self.eval_network)
        if self.loggers:
            out["loggers"] = resolved_loggers(self.loggers)
        return _drop_none(out)

    def digest(self) -> str:
        """A short hash of the resolved spec (the run name and output folder excluded, and
        ``[evaluate]``: it identifies the search; an evaluation records its own hash)."""
        data = self.resolved()
        data["run"] = {k: v for k, v in data["run"].items() if k not in ("name", "out_dir", "loggers")}
        if not self.search.monitor:  # the monitor off: its keys change nothing (digests of older runs hold)
            data["search"] = {k: v for k, v in data["search"].items() if not k.startswith("monitor")}
        data.pop("evaluate", None)
        data.pop("executor", None)
        data.pop("loggers", None)
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


#: TOML integers are 64-bit ("an integer that cannot be represented losslessly must be an error").
INT64_MIN, INT64_MAX = P.INT64_MIN, P.INT64_MAX
#: Deeper nesting than any spec needs (and than the recursive code after reading can take).
MAX_DEPTH = 32
#: Larger than any spec: reading stops there (``nasreg validate /dev/urandom`` must not hang).
MAX_SPEC_BYTES = 16 * 2**20


def check_toml_values(data: Any, where: str) -> None:
    """Raise :class:`SpecError` for an integer outside TOML's 64-bit range or nesting deeper than
    :data:`MAX_DEPTH`, naming the key path (``data.limit``, ``search.epochs[1]``)."""
    # (value, its parent's key path, its key or index, depth): a path is made only for a table or
    # a list (or a failure), not for each of a list's 300,000 numbers.
    stack: list[tuple[Any, str, Any, int]] = [(data, "", None, 0)]
    while stack:
        value, parent, name, depth = stack.pop()
        if not isinstance(value, (dict, list, tuple, int)) or isinstance(value, bool):
            continue
        if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
            continue
        key = _key_path(parent, name)
        if depth > MAX_DEPTH:
            raise SpecError(f"{where}{key or 'value'}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, key, str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, key, i, depth + 1) for i, v in enumerate(value))
        else:
            raise SpecError(f"{where}{key or 'value'}: integer {P.show(value)} is outside TOML's "
                            f"64-bit range ({INT64_MIN} to {INT64_MAX})")


def _key_path(parent: str, name: Any) -> str:
    """``parent.name`` for a table key, ``parent[i]`` for a list index, ``""`` for the top."""
    if name is None:
        return parent
    if isinstance(name, int):
        return f"{parent}[{name}]"
    return f"{parent}.{name}" if parent else name


def _loads(text: str) -> dict[str, Any]:
    """``tomllib.loads``, with every way it can fail a :class:`tomllib.TOMLDecodeError`."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("arrays or tables nested too deeply") from None
    except tomllib.TOMLDecodeError:
        raise
    except ValueError as exc:  # an integer literal of thousands of digits (int's str limit)
        raise tomllib.TOMLDecodeError("an integer has too many digits (TOML integers are 64-bit)") from None


def read_toml(path: str | Path) -> dict[str, Any]:
    from .rundir import read_capped

    path = Path(path)
    text = read_capped(path, MAX_SPEC_BYTES, SpecError, "spec")
    try:
        data = _loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: invalid TOML: {exc}") from None
    check_toml_values(data, f"{path}: invalid TOML: ")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=1`` -> (["a", "b"], 1). The value is a TOML literal; a bare word is a string."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 on the command line (surrogate escapes)
        raise SpecError(f"--set {P.show(text)}: not UTF-8 text") from None
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {P.show(text)}: expected KEY.PATH=VALUE")
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise SpecError(f"--set {P.show(text)}: empty part in key path {P.show(key)}")
    value = value.strip()
    try:
        doc = _loads(f"v = {value}")
        if len(doc) != 1:  # a value with a newline and more TOML after it
            raise SpecError(f"--set {P.show(text)}: value is not a single TOML literal")
        parsed = doc["v"]
    except tomllib.TOMLDecodeError:
        if value.startswith(("[", "{", '"', "'")):
            raise SpecError(f"--set {P.show(text)}: value is not a valid TOML literal") from None
        parsed = value
    check_toml_values(parsed, f"--set {P.show(text)}: ")
    return [p.strip() for p in parts], parsed


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    data = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise SpecError(f"--set {P.show(text)}: {'.'.join(parts[:i + 1])} is not a table")
            node = nxt
        node[parts[-1]] = value
    return data


# ------------------------------------------------------------------------------------------------
# Validation


def _table(raw: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"{path}: [{key}]: expected a table, got {P.show(value)}")
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
    where = f"{path}: [run] plugins"
    plugins = list(dict.fromkeys(P.check(run.get("plugins", []), list[str], where)))  # once each, in order
    if len(plugins) > MAX_PLUGINS:
        raise SpecError(f"{where}: expected at most {MAX_PLUGINS} plugins, got {len(plugins):,}")
    return plugins


#: More plugins than any spec loads: each is an import, so a list of 300,000 would run for hours.
MAX_PLUGINS = 256


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
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a table of tables, got {P.show(raw)}")
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), SECTIONS, n=1, cutoff=0.6)
        hint = f"; did you mean [{close[0]}]?" if close else ""
        raise SpecError(f"{path}: unknown table [{unknown[0]}]{hint} (known: "
                        + ", ".join(f"[{s}]" for s in SECTIONS) + ")")

    run = _section(RunSection, _table(raw, "run", path), f"{path}: [run]")
    if not run.name:
        run.name = path.stem
    data, dataset, search_data = _validate_data(raw, path, registries)

    def named(key: str, kind: str) -> Component:
        table = _table(raw, key, path)
        if "name" not in table:
            raise SpecError(f"{path}: [{key}] name: missing required key (a registered "
                            f"{registries[kind].noun}; `nasreg list-plugins` lists them)")
        return P.component(kind, table, f"{path}: [{key}]", registries)

    search_space = named("search_space", "search_spaces")
    _check_operations(search_space, f"{path}: [search_space] operations", registries)
    search = _section(SearchSection, _table(raw, "search", path), f"{path}: [search]")
    strategy = named("strategy", "strategies")
    selector = named("selector", "selectors") if "selector" in raw else None
    executor = named("executor", "executors") if "executor" in raw else None
    evaluate = eval_dataset = eval_network = None
    if "evaluate" in raw:  # the space is known: its network keys and evaluation defaults apply
        evaluate, eval_dataset, eval_network = validate_evaluate(raw["evaluate"], path, registries, search_data,
                                                                 space=search_space.name)
    spec = Spec(path=path, raw=raw, run=run, data=data, dataset=dataset, search_space=search_space,
                search=search, strategy=strategy, selector=selector, evaluate=evaluate,
                eval_dataset=eval_dataset, eval_network=eval_network, executor=executor)
    spec.loggers = validate_loggers(raw, path, registries, run.loggers)
    parts = build_parts(spec, registries)  # every check of the components a run builds before its first step
    if executor is not None:  # built as the run builds it (a missing optional extra is caught here)
        executor.build().close()
    build_loggers(spec.loggers)  # likewise (no file opened, no connection made)
    check_split(spec, parts, registries, None, registered_shape(dataset))  # as far as the spec tells
    return spec


@dataclass
class Parts:
    """The spec's components as a search builds them, before anything depends on the machine."""

    space: Any
    #: None for strategies that derive the genotype themselves.
    selector: Any
    strategy: Any
    #: (warm-up, epochs) of every stage.
    stages: list[tuple[int, int]]
    #: The search space of every stage (:meth:`nasreg.Selector.stage_space_keys`): ``space`` itself
    #: where the selector changes no key (empty for strategies without a selector).
    stage_spaces: list[Any] = field(default_factory=list)
    #: The ``[search_space]`` keys each stage's space overrides (``{}``: none), as a spec writes them.
    stage_space_keys: list[dict[str, Any]] = field(default_factory=list)

    def stage_space(self, stage: int) -> Any:
        """The search space stage ``stage`` builds its supernet from."""
        return self.stage_spaces[stage] if stage < len(self.stage_spaces) else self.space


def build_strategy(spec: Spec) -> Any:
    """The spec's ``[strategy]``, built: the one place a strategy is made (validating the spec,
    preparing it, each stage of a supernet search, a sampling search); a factory that returns
    something other than a :class:`nasreg.Strategy` is refused."""
    from .errors import PluginError
    from .strategy import Strategy

    strategy = spec.strategy.build()
    if not isinstance(strategy, Strategy):
        raise PluginError(f"{spec.path}: [strategy] name: {spec.strategy.name!r} built a "
                          f"{type(strategy).__name__}, not a nasreg.Strategy (subclass nasreg.SearchStrategy "
                          "or nasreg.SamplingStrategy)")
    return strategy


def build_parts(spec: Spec, registries: Any) -> Parts:
    """Build the search space, the selector and the strategy and check the stage plan: the checks
    ``nasreg validate`` and ``nasreg run`` share (run calls this from ``prepare``), so a spec
    validate accepts is never rejected by run for its keys. No torch: the built-in components
    import it only when they build a network."""
    space = spec.search_space.build()
    selector = spec.selector.build() if spec.selector is not None else None
    strategy = build_strategy(spec)
    if strategy.trains_supernet and selector is None:
        choices = ", ".join(repr(name) for name in sorted({e.name for e in registries.selectors}))
        raise SpecError(f"{spec.path}: [selector] name: missing required key (strategy "
                        f"{spec.strategy.name!r} derives the genotype through a selector: {choices})")
    if strategy.trains_supernet and not getattr(space, "has_supernet", True):
        raise SpecError(f"{spec.path}: [strategy] name: {spec.strategy.name!r} trains a supernet, but search "
                        f"space {spec.search_space.name!r} has none (it samples discrete architectures): "
                        "search it with a sampling strategy")
    if strategy.trains_supernet:
        _check_some_op_is_not_zero(spec, space, registries)
    elif spec.search.monitor:
        raise SpecError(f"{spec.path}: [search] monitor: strategy {spec.strategy.name!r} trains no supernet (it "
                        "samples discrete architectures), so it has no architecture parameters to monitor; "
                        "set monitor = false")
    stages = check_stages(spec, selector)
    stage_spaces, stage_keys = (_stage_spaces(spec, space, selector, len(stages), registries)
                                if strategy.trains_supernet and selector is not None else ([], []))
    return Parts(space, selector, strategy, stages, stage_spaces, stage_keys)


def _stage_spaces(spec: Spec, space: Any, selector: Any, stages: int, registries: Any
                  ) -> tuple[list[Any], list[dict[str, Any]]]:
    """Every stage's search space: the spec's ``[search_space]`` with the selector's
    :meth:`~nasreg.Selector.stage_space_keys` for that stage on top, checked as the spec's keys are
    (errors name ``[selector] stage N [search_space] KEY``); the spec's space where none change."""
    spaces, keys = [], []
    for i in range(stages):
        where = f"{spec.path}: [selector] stage {i} [search_space]"
        get = getattr(selector, "stage_space_keys", None)
        overrides = get(i) if get is not None else {}
        if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
            raise SpecError(f"{where}: selector {spec.selector.name!r} returned {P.show(overrides)} from "
                            "stage_space_keys, not a table of keys")
        if "name" in overrides:
            raise SpecError(f"{where} name: a stage cannot change the search space, only its keys")
        overrides = P.to_spec_value(dict(overrides))
        if not overrides:
            spaces.append(space)
            keys.append({})
            continue
        table = {**spec.search_space.to_spec(), **overrides}
        stage_space = P.component("search_spaces", table, where, registries).build()
        if "operations" in overrides or stage_space.edges() != space.edges():
            raise SpecError(f"{where} {', '.join(sorted(overrides))}: the stage's space has other cell "
                            "edges or operations than the spec's; a stage may change its network, not its cells")
        spaces.append(stage_space)
        keys.append(overrides)
    return spaces, keys


def _check_some_op_is_not_zero(spec: Spec, space: Any, registries: Any) -> None:
    """A supernet whose every candidate in a cell is a zero op (``none``) can only derive a cell
    without edges, which is no network: refused before anything runs."""
    zero = {n for e in registries.operations if e.get("is_zero", False) for n in (e.name, e.qualified)}
    for cell_type, edges in space.full_candidates().items():
        if not any(op not in zero for ops in edges for op in ops):
            raise SpecError(f"{spec.path}: [search_space] operations: every candidate of the {cell_type!r} cell "
                            f"is a zero operation ({', '.join(sorted({op for ops in edges for op in ops}))}); "
                            "a search needs at least one that is not")


def _validate_data(raw: dict[str, Any], path: Path, registries: Any
                   ) -> tuple[DataSection, Component, dict[str, Any]]:
    """``[data]``: the core's keys, the dataset component (its own keys), and the dataset table
    ``[evaluate]`` defaults to."""
    data_raw = dict(_table(raw, "data", path))
    core_keys = {f.name for f in dataclasses.fields(DataSection)}
    if "dataset" not in data_raw:
        raise SpecError(f"{path}: [data] dataset: missing required key (a registered dataset name)")
    data = _section(DataSection, {k: v for k, v in data_raw.items() if k in core_keys}, f"{path}: [data]")
    _check_data_keys(data_raw, core_keys, data.dataset, f"{path}: [data]", registries)
    own = {k: v for k, v in data_raw.items() if k not in core_keys}
    dataset = P.component("datasets", {"name": data.dataset, **own}, f"{path}: [data]", registries,
                          name_key="dataset")
    return data, dataset, dataset_table(data.dataset, dataset)


def dataset_table(name: str, dataset: Component) -> dict[str, Any]:
    """A dataset as a resolved ``[data]`` table names it: ``dataset`` and its own keys with every
    default filled in (unset ones left out)."""
    return _drop_none({"dataset": name, **P.to_spec_value(dataset.params)})


def _check_operations(search_space: Component, where: str, registries: Any) -> None:
    """``[search_space] operations``, when given: registered ops, each listed once."""
    ops = search_space.params.get("operations")
    if ops is None:
        return
    P.check(ops, list[str], where)
    if not ops:
        raise SpecError(f"{where}: expected at least one operation, got []")
    seen: dict[str, str] = {}  # qualified name -> as listed (a bare and a qualified name may meet)
    for i, op in enumerate(ops):
        try:
            entry = registries.operations.get(op)
        except RegistryError as exc:
            raise SpecError(f"{where}[{i}]: {exc}") from None
        qualified = getattr(entry, "qualified", op)
        if qualified in seen:
            twice = repr(op) if seen[qualified] == op else f"{seen[qualified]!r} (as {op!r})"
            raise SpecError(f"{where}: operation {twice} is listed twice")
        seen[qualified] = op


def resolved_evaluate(evaluate: EvaluateSection, dataset: Component,
                      network: dict[str, Any] | None = None) -> dict[str, Any]:
    """``[evaluate]`` with every default filled in: the recipe, the evaluation network's keys (flat,
    as a spec writes them) and the dataset as an explicit ``[evaluate.data]``."""
    out = {k: v for k, v in dataclasses.asdict(evaluate).items() if k != "data"}
    out.update(P.to_spec_value(dict(network or {})))
    out["data"] = {"dataset": dataset.name, **P.to_spec_value(dataset.params)}
    return out


#: The recipe keys a spec (or the space's evaluation defaults) must give: they have no neutral value.
REQUIRED_RECIPE_KEYS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(EvaluateSection)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


def network_params(entry: Any) -> tuple[Any, dict[str, Any], bool]:
    """A search space entry's ``network_keys`` metadata: ``(function, its parameters, whether it
    takes **keys)``; ``(None, {}, False)`` for a space that declares none (and so accepts none)."""
    schema = entry.get("network_keys")
    if schema is None:
        return None, {}, False
    sig = P.signature_params(schema) if callable(schema) else None
    if sig is None:
        raise SpecError(f"search space {entry.name!r}: its network_keys metadata is not a function "
                        f"whose signature declares the keys, got {P.show(schema)}")
    clash = sorted(set(sig[0]) & set(RECIPE_KEYS))
    if clash:
        raise SpecError(f"search space {entry.name!r}: network key {clash[0]!r} is a key of the "
                        "[evaluate] recipe (the core's); rename it")
    return schema, sig[0], sig[1]


def evaluation_defaults(entry: Any) -> dict[str, Any]:
    """A search space entry's ``evaluation_defaults`` metadata (a copy; ``{}`` without one)."""
    defaults = entry.get("evaluation_defaults")
    if defaults is None:
        return {}
    if not isinstance(defaults, dict):
        raise SpecError(f"search space {entry.name!r}: evaluation_defaults: expected a table of "
                        f"[evaluate] keys, got {P.show(defaults)}")
    return copy.deepcopy(defaults)


def _unknown_key(where: str, key: Any, network: Sequence[str], network_note: str | None) -> SpecError:
    """An unknown ``[evaluate]`` key: close matches among the recipe's and the network's keys, or
    both lists (``network_note``: who declares the network keys; None: no space declares any)."""
    known = sorted({*RECIPE_KEYS, *network})
    msg = f"{where} {key}: unknown key"
    close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.6)
    if close:
        return SpecError(msg + "; did you mean " + ", ".join(repr(c) for c in close) + "?")
    recipe = ", ".join(sorted(RECIPE_KEYS))
    if not network:
        return SpecError(f"{msg} ({network_note or 'no search space declares evaluation-network keys'}; "
                         f"the recipe's keys: {recipe})")
    return SpecError(f"{msg} (known keys: the recipe's {recipe}; {network_note}: {', '.join(sorted(network))})")


def _space_entry(space: str, registries: Any, where: str) -> Any:
    try:
        return registries.search_spaces.get(space)
    except RegistryError as exc:
        raise SpecError(f"{where}: {exc}") from None


def validate_evaluate(table: dict[str, Any], path: Path, registries: Any, default_data: dict[str, Any] | None = None,
                      *, space: str) -> tuple[EvaluateSection, Component, dict[str, Any]]:
    """An ``[evaluate]`` table for the search space ``space`` (the search's, or the genotype's):
    ``(recipe, dataset, network keys)``.

    The space's ``evaluation_defaults`` fill the keys the table leaves out, then the recipe's own
    (neutral) defaults. The keys that are not the recipe's are the evaluation network's, checked
    against the space's ``network_keys`` function (defaults filled in, then passed to it: what it
    returns goes to ``build_network``). The dataset is ``[evaluate.data]``'s, else ``default_data``
    (the search's ``[data]`` dataset and keys), else the space's default (``evaluation_defaults``'
    ``data``); ``[evaluate.data]`` naming the same dataset (or none) overrides the default's keys."""
    where = f"{path}: [evaluate]"
    if not isinstance(table, dict):
        raise SpecError(f"{where}: expected a table, got {P.show(table)}")
    entry = _space_entry(space, registries, where)
    schema, params, var_kw = network_params(entry)
    defaults = evaluation_defaults(entry)
    space_data = defaults.pop("data", None)
    note = (f"the network's, of search space {space!r}" if schema is not None
            else f"search space {space!r} declares no evaluation-network keys")
    for source, keys in ((f"search space {space!r}: evaluation_defaults", defaults), (where, table)):
        for key in keys:
            if key not in RECIPE_KEYS and key not in params and not var_kw:
                raise _unknown_key(source, key, list(params), note)
    merged = {**defaults, **table}
    recipe = {k: v for k, v in merged.items() if k in RECIPE_KEYS}
    missing = [k for k in REQUIRED_RECIPE_KEYS if k not in recipe]
    if missing:
        annotation = P.signature_params(EvaluateSection)[0][missing[0]].annotation  # type: ignore[index]
        raise SpecError(f"{where} {missing[0]}: missing required key ({P.describe(annotation)}; search "
                        f"space {space!r} supplies no default)")
    evaluate = _section(EvaluateSection, recipe, where)
    network: dict[str, Any] = {}
    if schema is not None:
        network = _bind_network(schema, {k: v for k, v in merged.items() if k not in RECIPE_KEYS}, where, registries)
    dataset = _eval_dataset(evaluate.data, evaluate.augment, evaluate.autoaugment, path, registries,
                            default_data, space_data, space)
    assert dataset is not None
    return evaluate, dataset, network


def _bind_network(schema: Any, keys: dict[str, Any], where: str, registries: Any) -> dict[str, Any]:
    """The network keys checked against ``schema``'s signature, defaults filled, then passed to it."""
    bound = P.bind(schema, keys, where, registries)
    try:
        out = schema(**bound)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where} {exc}") from None
    if out is None:
        return bound
    if not isinstance(out, dict):
        raise SpecError(f"{where}: the space's network_keys function returned {type(out).__name__}, not a "
                        "table of keys")
    return out


def check_evaluate(table: dict[str, Any], path: Path, registries: Any,
                   default_data: dict[str, Any] | None = None) -> None:
    """Check an ``[evaluate]`` table before its search space is known (an evaluation spec, whose
    space is the genotype's): the recipe keys it gives, its dataset if it names one, and that
    every other key is an evaluation-network key of some registered space. The full check,
    defaults included, is :func:`validate_evaluate`'s, once the genotype is read."""
    where = f"{path}: [evaluate]"
    if not isinstance(table, dict):
        raise SpecError(f"{where}: expected a table, got {P.show(table)}")
    network: set[str] = set()
    for entry in registries.search_spaces:
        try:
            _schema, params, var_kw = network_params(entry)
        except SpecError:  # a broken plugin's metadata fails only where its space is used
            continue
        if var_kw:
            network = set()
            break
        network |= set(params)
    else:
        for key in table:
            if key not in RECIPE_KEYS and key not in network:
                raise _unknown_key(where, key, sorted(network), "the networks' keys, of the registered search spaces")
    recipe = {k: v for k, v in table.items() if k in RECIPE_KEYS}
    bound = P.bind(EvaluateSection, recipe, where, skip=tuple(k for k in REQUIRED_RECIPE_KEYS if k not in recipe))
    if "lr" in bound and bound["lr_min"] > bound["lr"]:
        raise SpecError(f"{where} lr_min: expected a number <= lr ({bound['lr']:g}), got {bound['lr_min']:g}")
    _eval_dataset(bound["data"], bound["augment"], bound["autoaugment"], path, registries, default_data, None, None)


def _eval_dataset(data: dict[str, Any] | None, augment: bool | None, autoaugment: bool, path: Path,
                  registries: Any, default_data: dict[str, Any] | None, space_data: Any,
                  space: str | None) -> Component | None:
    """The evaluation's dataset component (see :func:`validate_evaluate`). Without ``space`` (an
    evaluation spec not yet bound to the genotype's space) a dataset the spec does not name is
    left for later: None."""
    where, dwhere = f"{path}: [evaluate]", f"{path}: [evaluate.data]"
    base = default_data if default_data is not None else space_data
    if base is not None and not (isinstance(base, dict) and isinstance(base.get("dataset"), str)):
        raise SpecError(f"search space {space!r}: evaluation_defaults data: expected a table with a "
                        f"`dataset` name, got {P.show(base)}")
    if data is None:
        chosen = dict(base) if base is not None else {}
        if default_data is not None:
            dwhere = f"{path}: [data]"
    elif base is None or data.get("dataset", base["dataset"]) != base["dataset"]:
        chosen = dict(data)
    else:
        chosen = {**base, **data}
    if "dataset" not in chosen:
        if space is None:
            return None
        raise SpecError(f"{dwhere} dataset: missing required key (a registered dataset name; search space "
                        f"{space!r} supplies no default)")
    name = chosen.pop("dataset")
    if "name" in chosen:
        raise SpecError(f"{dwhere} name: unknown key (the dataset is chosen with `dataset`)")
    try:
        entry = registries.datasets.get(name)
    except RegistryError as exc:
        raise SpecError(f"{dwhere} dataset: {exc}") from None
    sig = P.signature_params(entry.factory)
    for key, value in (("augment", augment), ("autoaugment", autoaugment or None)):
        if value is None:
            continue
        if sig is not None and not sig[1] and key not in sig[0]:
            raise SpecError(f"{where} {key}: dataset {name!r} has no {key!r} key, so it cannot "
                            f"apply it (remove `{key}` from [evaluate], or set it to false)")
        chosen[key] = value
    return P.component("datasets", {"name": name, **chosen}, dwhere, registries, name_key="dataset")


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


def load(path: str | Path, overrides: Sequence[str] = (), extra_plugins: Sequence[str] = (), *,
         objects: Sequence[tuple[str, Any]] = (), raw: dict[str, Any] | None = None):
    """Read, override, load the plugins the spec asks for, validate: ``(Spec, Plugins)``.

    ``extra_plugins`` are module names or ``.py`` files (``--plugin``), ``objects`` plugin objects
    as ``(name, object)``; both are loaded on top of the installed plugins. ``raw``: the file's
    table, already read and overridden (it is not read again)."""
    path = Path(path)
    if raw is None:
        raw = apply_overrides(read_toml(path), overrides)
    spec = _load_raw(raw, path, path.parent, extra_plugins, objects)
    return spec, spec.plugins


def load_table(raw: dict[str, Any], overrides: Sequence[str] = (), extra_plugins: Sequence[str] = (),
               objects: Sequence[tuple[str, Any]] = (), *, name: str = "run") -> Spec:
    """A spec given as a table (the dict a TOML file parses to) instead of a file: errors name it
    ``<dict>``, files it names are relative to the working directory, and ``[run] name``
    defaults to ``name``."""
    check_toml_values(raw, "<dict>: ")
    raw = apply_overrides(copy.deepcopy(raw), overrides)
    if isinstance(raw.get("run", {}), dict) and not raw.get("run", {}).get("name"):
        raw = {**raw, "run": {**raw.get("run", {}), "name": name}}
    return _load_raw(raw, Path("<dict>"), Path.cwd(), extra_plugins, objects)


def _load_raw(raw: dict[str, Any], path: Path, base_dir: Path, extra_plugins: Sequence[str],
              objects: Sequence[tuple[str, Any]]) -> Spec:
    from .plugins import load_plugins

    requested = plugins_requested(raw, path)
    # A file named in the spec is relative to the spec's folder; one given on the command line
    # (--plugin) to the working directory, as any command-line path.
    extra = [str(Path(ref).expanduser().resolve()) if _is_file_ref(ref) else ref for ref in extra_plugins]
    plugins = load_plugins([*requested, *extra], base_dir=base_dir, objects=objects)
    spec = validate(raw, path, plugins.registries)
    spec.plugins = plugins
    return spec


def _is_file_ref(ref: str) -> bool:
    """Whether a plugin reference names a ``.py`` file (as :meth:`Plugins.load_module` decides)."""
    return ref.endswith(".py") or "/" in ref or os.sep in ref
