"""Evaluation specs: what ``nasreg train`` (and a search's ``[evaluate]``) runs, validated.

An evaluation spec has the tables ``[run]`` and ``[evaluate]`` (with ``[evaluate.data]``); a search
spec is accepted too (its ``[evaluate]``, or the defaults, on its dataset). This module imports no
torch: ``nasreg validate`` checks evaluation specs without it.
"""

from __future__ import annotations

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
EVAL_TABLES = ("run", "evaluate")


# ------------------------------------------------------------------------------------------------
# The evaluation spec


@dataclass
class EvalSpec:
    """What ``nasreg train`` runs: the run settings, the recipe, its dataset and, when the spec
    was a search spec, its search space (whose keys the evaluation network inherits)."""

    path: Path | None
    run: RunSection
    evaluate: EvaluateSection
    dataset: Component
    search_space: Component | None = None
    #: The loaded plugins that validated it (set by :func:`load_eval_spec`'s callers).
    plugins: Any = field(default=None, repr=False, compare=False)

    def resolved(self) -> dict[str, Any]:
        return {"run": dataclasses.asdict(self.run),
                "evaluate": spec_mod.resolved_evaluate(self.evaluate, self.dataset)}

    def digest(self) -> str:
        data = self.resolved()
        data["run"] = {k: v for k, v in data["run"].items() if k not in ("name", "out_dir")}
        blob = json.dumps(spec_mod._drop_none(data), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def is_eval_spec(raw: dict[str, Any]) -> bool:
    """Whether a spec table is an evaluation spec: ``[evaluate]`` without the tables every search
    spec has (``[data]``, ``[search_space]``); its other tables are then checked as such."""
    return "evaluate" in raw and "data" not in raw and "search_space" not in raw


def from_search_spec(spec: spec_mod.Spec, registries: Any) -> EvalSpec:
    """The evaluation a search spec describes (its ``[evaluate]``, or the defaults on its data)."""
    evaluate, dataset = spec.evaluate, spec.eval_dataset
    if evaluate is None or dataset is None:
        data_raw = spec_mod._table(spec.raw, "data", spec.path)
        core = {f.name for f in dataclasses.fields(spec_mod.DataSection)}
        default = {"dataset": spec.data.dataset, **{k: v for k, v in data_raw.items() if k not in core}}
        evaluate, dataset = spec_mod.validate_evaluate({}, spec.path, registries, default)
    return EvalSpec(path=spec.path, run=spec.run, evaluate=evaluate, dataset=dataset,
                    search_space=spec.search_space)


def validate_eval_spec(raw: dict[str, Any], path: Path | None, registries: Any) -> EvalSpec:
    """An evaluation spec: ``[run]`` and ``[evaluate]`` (``[evaluate.data]``) only."""
    shown = path if path is not None else Path("--set")
    unknown = [k for k in raw if k not in EVAL_TABLES]
    if unknown:
        raise SpecError(f"{shown}: unknown table [{unknown[0]}] in an evaluation spec (known: [run], "
                        "[evaluate]; a search spec with [search_space], [strategy], ... is accepted too)")
    run = spec_mod._section(RunSection, spec_mod._table(raw, "run", shown), f"{shown}: [run]")
    evaluate, dataset = spec_mod.validate_evaluate(spec_mod._table(raw, "evaluate", shown), shown, registries)
    return EvalSpec(path=path, run=run, evaluate=evaluate, dataset=dataset)


def load_eval_spec(path: str | Path | None, overrides: Sequence[str] = (),
                   extra_plugins: Sequence[str] = ()) -> tuple[EvalSpec, Any]:
    """Read (or, without ``path``, start from the DARTS CIFAR-10 defaults), override, load the
    plugins, validate: ``(EvalSpec, Plugins)``."""
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
