"""Study specs: many seeds and many arms (a search spec plus ``--set`` overrides), one TOML file.

::

    [study]
    name = "dgdarts-vs-darts"
    seeds = [0, 1, 2]             # or { start = 0, count = 3 }
    set = ["search.epochs=2"]     # optional: overrides applied to every arm, before the arm's own
    out_dir = "studies"           # where `nasreg study run` puts the study directory (default "runs")

    [executor]                    # optional; default: local, one trial at a time
    name = "local"                # or "ray"; other keys go to the executor (workers, address, ...)
    workers = 2

    [[arms]]
    label = "dg-darts"
    spec = "../specs/quickstart.toml"     # relative to the study file
    set = ['selector.name="dg-darts"']    # --set overrides, applied to every seed

Validated like a search spec, with key-path errors (``study.toml: arms[1].spec: ...``). Each arm's
spec is read here (and copied into the study directory, so editing it later changes nothing of
the study); whether it validates with its overrides is checked per arm by :func:`check_arms`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from . import params as P
from .errors import SpecError
from .params import Component, Range

__all__ = ["Arm", "StudySpec", "arm_overrides", "load_study", "study_from_table", "trial_overrides"]

#: The tables a study file may have.
TABLES = ("study", "executor", "arms")
#: More trials than this in one study is a mistake (a seed range typed wrong).
MAX_TRIALS = 10_000
#: Arm labels become folder names: plain, portable ones.
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
#: Names inside the study directory that an arm cannot take.
RESERVED = ("specs", "report", "study")

Seed = Annotated[int, Range(ge=0, le=2**32 - 1)]


@dataclass
class _SeedRange:
    start: Seed = 0
    count: Annotated[int, Range(ge=1, le=MAX_TRIALS)] = 1


@dataclass
class _StudySection:
    name: str
    seeds: list[Seed] | dict = field(default_factory=lambda: [0])
    set: list[str] = field(default_factory=list)
    out_dir: str = "runs"
    description: str = ""


@dataclass
class _ArmSection:
    label: str
    spec: str
    set: list[str] = field(default_factory=list)
    description: str = ""


@dataclass(frozen=True)
class Arm:
    """One arm of a study: a label (its folder), a search spec file and its overrides."""

    label: str
    spec: Path
    set: tuple[str, ...] = ()
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "spec": str(self.spec), "set": list(self.set),
                **({"description": self.description} if self.description else {})}


@dataclass
class StudySpec:
    """A validated study: its file, name, seeds, common overrides, arms and executor."""

    path: Path
    raw: dict[str, Any]
    name: str
    seeds: list[int]
    arms: list[Arm]
    executor: Component
    set: tuple[str, ...] = ()
    out_dir: str = "runs"
    description: str = ""

    def trials(self) -> list[tuple[Arm, int]]:
        """Every (arm, seed), arms in the file's order, seeds in the given order."""
        return [(arm, seed) for arm in self.arms for seed in self.seeds]

    def to_dict(self) -> dict[str, Any]:
        """The study as the report and ``study.toml`` in the study directory record it."""
        return {"name": self.name, "seeds": list(self.seeds), "set": list(self.set),
                "description": self.description, "arms": [a.to_dict() for a in self.arms],
                "executor": self.executor.to_spec()}


def arm_overrides(study: StudySpec, arm: Arm) -> list[str]:
    """The ``--set`` overrides of every trial of an arm: the study's, then the arm's."""
    return [*study.set, *arm.set]


def trial_overrides(label: str, seed: int, threads: int) -> list[str]:
    """What a trial sets on top of its arm's spec: its seed, run name and threads."""
    out = [f"run.seed={seed}", f'run.name="{label}-seed-{seed}"']
    if threads > 0:
        out.append(f"run.threads={threads}")
    return out


def load_study(path: str | Path, overrides: tuple[str, ...] | list[str] = (), registries: Any = None) -> StudySpec:
    """Read and validate a study file (``--set`` overrides apply to the study's own keys:
    ``study.seeds=[0,1]``, ``executor.workers=2``)."""
    from .spec import apply_overrides, read_toml

    path = Path(path)
    raw = apply_overrides(read_toml(path), overrides)
    return study_from_table(raw, path, registries)


def study_from_table(raw: dict[str, Any], path: Path, registries: Any = None) -> StudySpec:
    """Validate a study table read from ``path`` (arm spec paths are relative to its folder)."""
    if registries is None:
        from .plugins import load_plugins

        registries = load_plugins([], base_dir=path.parent).registries
    where = f"{path}:"
    unknown = [k for k in raw if k not in TABLES]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), TABLES, n=1, cutoff=0.6)
        hint = f"; did you mean {'[[arms]]' if close == ['arms'] else f'[{close[0]}]'}?" if close else ""
        raise SpecError(f"{where} unknown table [{unknown[0]}]{hint} (a study has [study], [executor] and [[arms]]; "
                        "a search spec's tables belong in the arms' spec files)")
    table = raw.get("study")
    if not isinstance(table, dict):
        raise SpecError(f"{where} [study]: missing table (name, seeds)" if table is None
                        else f"{where} [study]: expected a table, got {P.show(table)}")
    section = _StudySection(**P.bind(_StudySection, table, f"{where} [study]"))
    if not section.name or not LABEL.match(section.name):
        raise SpecError(f"{where} [study] name: expected a folder name (letters, digits, '.', '_', '+', '-'; "
                        f"at most 64 characters), got {P.show(section.name)}")
    seeds = _seeds(section.seeds, f"{where} [study] seeds")
    common = _overrides(section.set, f"{where} [study] set")
    arms = _arms(raw.get("arms"), path, where)
    if len(arms) * len(seeds) > MAX_TRIALS:
        raise SpecError(f"{where} {len(arms)} arms x {len(seeds)} seeds is more than {MAX_TRIALS} trials")
    executor_table = raw.get("executor", {"name": "local"})
    if not isinstance(executor_table, dict):
        raise SpecError(f"{where} [executor]: expected a table, got {P.show(executor_table)}")
    executor_table = {"name": "local", **executor_table}
    executor = P.component("executors", executor_table, f"{where} [executor]", registries)
    return StudySpec(path=path, raw=raw, name=section.name, seeds=seeds, arms=arms, executor=executor,
                     set=tuple(common), out_dir=section.out_dir, description=section.description)


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, dict):
        r = _SeedRange(**P.bind(_SeedRange, value, f"{where} (a range: start, count)"))
        if r.start + r.count - 1 > 2**32 - 1:
            raise SpecError(f"{where}: the range ends past the largest seed (2**32 - 1)")
        return list(range(r.start, r.start + r.count))
    if not value:
        raise SpecError(f"{where}: expected at least one seed")
    if len(value) > MAX_TRIALS:
        raise SpecError(f"{where}: more than {MAX_TRIALS} seeds")
    seen = set()
    for i, s in enumerate(value):
        if s in seen:
            raise SpecError(f"{where}[{i}]: seed {s} is listed twice")
        seen.add(s)
    return list(value)


def _overrides(values: list[str], where: str) -> list[str]:
    from .spec import parse_override

    for i, text in enumerate(values):
        try:
            parts, _ = parse_override(text)
        except SpecError as exc:
            raise SpecError(f"{where}[{i}]: {exc}") from None
        if parts[0] == "run" and len(parts) == 2 and parts[1] in ("seed", "name", "out_dir"):
            raise SpecError(f"{where}[{i}]: run.{parts[1]} is the study's to set (seeds come from "
                            "[study] seeds, each trial's folder is STUDY_DIR/<arm>/seed-<n>)")
    return list(values)


def _arms(value: Any, path: Path, where: str) -> list[Arm]:
    if value is None:
        raise SpecError(f"{where} [[arms]]: missing (at least one arm: label, spec, set)")
    if not isinstance(value, list) or not value or not all(isinstance(a, dict) for a in value):
        raise SpecError(f"{where} arms: expected one or more [[arms]] tables, got {P.show(value)}")
    arms: list[Arm] = []
    labels: dict[str, int] = {}
    for i, table in enumerate(value):
        at = f"{where} arms[{i}]"
        section = _ArmSection(**P.bind(_ArmSection, table, at))
        label = section.label
        if not LABEL.match(label) or label.lower() in RESERVED:
            raise SpecError(f"{at} label: expected a folder name (letters, digits, '.', '_', '+', '-'; at most 64 "
                            f"characters; not {', '.join(RESERVED)}), got {P.show(label)}")
        if label.lower() in labels:
            raise SpecError(f"{at} label: {label!r} is also the label of arms[{labels[label.lower()]}] "
                            "(labels are folder names: they must differ, ignoring case)")
        labels[label.lower()] = i
        spec = Path(section.spec)
        spec = spec if spec.is_absolute() else path.parent / spec
        if not spec.is_file():
            raise SpecError(f"{at} spec: {section.spec!r}: no such file" + ("" if spec.is_absolute() else
                                                                           f" (relative to {path.parent}/)"))
        arms.append(Arm(label=label, spec=spec, set=tuple(_overrides(section.set, f"{at} set")),
                        description=section.description))
    return arms

