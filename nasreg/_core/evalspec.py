"""Evaluation specs: what ``nasreg train`` (and a search's ``[evaluate]``) runs, validated.

An evaluation spec has the tables ``[run]`` and ``[evaluate]`` (with ``[evaluate.data]``); a search
spec is accepted too (its ``[evaluate]``, or the defaults, on its dataset). This module imports no
torch: ``nasreg validate`` checks evaluation specs without it.

``[evaluate]`` holds the core's recipe keys (:class:`~nasreg._core.spec.EvaluateSection`) and the
evaluation network's keys, which the search space declares (its ``network_keys`` registry
metadata); the space's ``evaluation_defaults`` fill what the spec leaves out. A search spec knows
its space, so its ``[evaluate]`` is resolved when it is validated. An evaluation spec does not
until the genotype is read: it is checked as far as it can be (:func:`~nasreg._core.spec.check_evaluate`)
and resolved for the genotype's space by :meth:`EvalSpec.bind`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import spec as spec_mod
from .errors import SpecError
from .params import Component
from .spec import EvaluateSection, RunSection

__all__ = ["EVAL_TABLES", "SEARCH_TABLES", "EvalSpec", "from_search_spec", "is_eval_spec", "load_eval_spec",
           "validate_eval_spec"]

#: Tables that make a spec a search spec (an evaluation spec has only [run] and [evaluate]).
SEARCH_TABLES = ("data", "search_space", "search", "strategy", "selector")
EVAL_TABLES = ("run", "evaluate", "loggers")


# ------------------------------------------------------------------------------------------------
# The evaluation spec


@dataclass
class EvalSpec:
    """What ``nasreg train`` runs: the run settings and the ``[evaluate]`` table, resolved for a
    search space (:meth:`bind`): the recipe, its dataset and the evaluation network's keys.

    A search spec's evaluation is bound to its space at once; an evaluation spec's when the
    genotype's space is known (``evaluate``, ``dataset`` and ``network`` are None until then)."""

    path: Path | None
    run: RunSection
    #: The ``[evaluate]`` table as written (``--set`` applied): recipe and network keys, flat.
    table: dict[str, Any] = field(default_factory=dict)
    #: The search's ``[data]`` dataset and keys, the evaluation's default dataset (a search spec).
    default_data: dict[str, Any] | None = None
    #: The search spec's search space (whose keys the evaluation network's space inherits).
    search_space: Component | None = None
    #: The search space the recipe is resolved for (None: not bound yet).
    space: str | None = None
    evaluate: EvaluateSection | None = None
    dataset: Component | None = None
    #: The evaluation network's keys, as the space's ``network_keys`` returned them.
    network: dict[str, Any] | None = None
    #: ``[run] loggers`` with their ``[loggers.<name>]`` keys (not part of the digest).
    loggers: list[Component] = field(default_factory=list)
    #: The loaded plugins that validated it (set by :func:`load_eval_spec`'s callers).
    plugins: Any = field(default=None, repr=False, compare=False)

    @property
    def bound(self) -> bool:
        return self.space is not None

    def bind(self, space: str, registries: Any) -> "EvalSpec":
        """Resolve ``[evaluate]`` for the search space ``space`` (the genotype's), in place: its
        evaluation defaults under the spec's keys, the network keys checked against its
        ``network_keys``, the dataset. Raises :class:`SpecError` naming the spec file and the
        ``[evaluate]`` key. Returns ``self``."""
        if self.space == space:
            return self
        where = self.path if self.path is not None else Path("--set")
        self.evaluate, self.dataset, self.network = spec_mod.validate_evaluate(
            self.table, where, registries, self.default_data, space=space)
        self.space = space
        return self

    def resolved(self) -> dict[str, Any]:
        """``[run]`` and ``[evaluate]`` with every default filled in (bound), or ``[evaluate]`` as
        written (not bound yet: the defaults depend on the genotype's space)."""
        loggers = {"loggers": spec_mod.resolved_loggers(self.loggers)} if self.loggers else {}
        if self.evaluate is None or self.dataset is None:
            return {"run": dataclasses.asdict(self.run), "evaluate": copy.deepcopy(self.table), **loggers}
        return {"run": dataclasses.asdict(self.run),
                "evaluate": spec_mod.resolved_evaluate(self.evaluate, self.dataset, self.network), **loggers}

    def digest(self) -> str:
        data = self.resolved()
        data["run"] = {k: v for k, v in data["run"].items() if k not in ("name", "out_dir", "loggers")}
        data.pop("loggers", None)
        blob = json.dumps(spec_mod._drop_none(data), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def is_eval_spec(raw: dict[str, Any]) -> bool:
    """Whether a spec table is an evaluation spec: ``[evaluate]`` without the tables every search
    spec has (``[data]``, ``[search_space]``); its other tables are then checked as such."""
    return "evaluate" in raw and "data" not in raw and "search_space" not in raw


def search_data(spec: spec_mod.Spec) -> dict[str, Any]:
    """A search spec's dataset and its keys, defaults filled in (``[data] dataset`` and the keys
    the dataset owns, as the resolved spec writes them): what its evaluation trains on unless
    ``[evaluate.data]`` says otherwise, and what a genotype records as the data it was searched on
    (its provenance's ``data``). Resolved, so a run and its resume (which reads the resolved
    ``spec.toml`` back) record the same."""
    return spec_mod.dataset_table(spec.data.dataset, spec.dataset)


def from_search_spec(spec: spec_mod.Spec, registries: Any) -> EvalSpec:
    """The evaluation a search spec describes (its ``[evaluate]``, or the defaults of its space,
    on its data), bound to its search space."""
    default = search_data(spec)
    table = spec.raw.get("evaluate") if spec.evaluate is not None else {}
    espec = EvalSpec(path=spec.path, run=spec.run, table=copy.deepcopy(table or {}), default_data=default,
                     search_space=spec.search_space, loggers=list(spec.loggers))
    if spec.evaluate is not None and spec.eval_dataset is not None:  # resolved when the spec was validated
        espec.evaluate, espec.dataset, espec.network = spec.evaluate, spec.eval_dataset, spec.eval_network
        espec.space = spec.search_space.name
        return espec
    return espec.bind(spec.search_space.name, registries)


def validate_eval_spec(raw: dict[str, Any], path: Path | None, registries: Any) -> EvalSpec:
    """An evaluation spec: ``[run]`` and ``[evaluate]`` (``[evaluate.data]``) only, checked as far
    as it can be before the genotype's space is known (see :meth:`EvalSpec.bind`)."""
    shown = path if path is not None else Path("--set")
    unknown = [k for k in raw if k not in EVAL_TABLES]
    if unknown:
        raise SpecError(f"{shown}: unknown table [{unknown[0]}] in an evaluation spec (known: [run], "
                        "[evaluate]; a search spec with [search_space], [strategy], ... is accepted too)")
    run = spec_mod._section(RunSection, spec_mod._table(raw, "run", shown), f"{shown}: [run]")
    table = spec_mod._table(raw, "evaluate", shown)
    spec_mod.check_evaluate(table, shown, registries)
    loggers = spec_mod.validate_loggers(raw, shown, registries, run.loggers)
    spec_mod.build_loggers(loggers)  # as the run builds them (a missing optional extra is caught here)
    return EvalSpec(path=path, run=run, table=copy.deepcopy(table), loggers=loggers)


def load_eval_spec(path: str | Path | None, overrides: Sequence[str] = (),
                   extra_plugins: Sequence[str] = ()) -> tuple[EvalSpec, Any]:
    """Read (or, without ``path``, start from an empty ``[evaluate]``: the genotype's space's
    evaluation defaults), override, load the plugins, validate: ``(EvalSpec, Plugins)``."""
    from .plugins import load_plugins

    path = Path(path) if path is not None else None
    raw = spec_mod.read_toml(path) if path is not None else {}
    raw = spec_mod.apply_overrides(raw, overrides)
    if path is not None and not is_eval_spec(raw) and any(t in raw for t in SEARCH_TABLES):
        spec, plugins = spec_mod.load(path, overrides, extra_plugins)
        espec = from_search_spec(spec, plugins.registries)
        run_table = raw.get("run")
        if not (isinstance(run_table, dict) and run_table.get("name")):
            espec.run = dataclasses.replace(espec.run, name="")  # not the search's file name
        return espec, plugins
    where = path if path is not None else Path("--set")
    requested = spec_mod.plugins_requested(raw, where)
    extra = [str(Path(r).expanduser().resolve()) if spec_mod._is_file_ref(r) else r for r in extra_plugins]
    plugins = load_plugins([*requested, *extra], base_dir=path.parent if path is not None else Path.cwd())
    return validate_eval_spec(raw, path, plugins.registries), plugins
