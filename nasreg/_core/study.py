"""Running a study: every (arm, seed) trial through an executor, then the report.

The study directory holds::

    study.toml            the study file as given (after --set), for the record
    study.json            what the runner needs to resume: the study, its executor, the trials' threads,
                          failures that left no run directory
    specs/<arm>.toml      each arm's spec with the study's and the arm's overrides applied (trials run
                          from these copies: editing the original later changes nothing of the study)
    <arm>/seed-<n>/       one ordinary run directory per trial (`nasreg show`, `resume`, `train` work on it)
    report.json, report.md, report_*.png

What a trial's state is comes from its run directory alone (:func:`study_records.run_status`), so
a study killed at any moment resumes from what is on disk: finished trials are skipped,
interrupted ones continue from their checkpoints (the exact resume), missing ones start.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import Interrupted, NasregError, RunDirError, SpecError
from .executor import Executor, Resources
from .rundir import SPEC_FILE, RunDir, create_run_dir, lock_run_dir, release_run_dir, remove_stale_temporaries
from .stop import StopRequests
from .study_records import run_status, trial_record
from .studyspec import StudySpec, arm_overrides, load_study, study_from_table, trial_overrides

__all__ = ["StudyResult", "StudyReporter", "run_study", "resume_study", "study_report", "compare_runs"]

STUDY_FILE = "study.toml"
STATE_FILE = "study.json"
SPECS_DIR = "specs"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
STATE_FORMAT = "nasreg.study"


@dataclass
class StudyResult:
    """A study's report and trial records (``report.json`` as a dict; ``trials``: one record per
    (arm, seed), see :mod:`nasreg._core.study_report`)."""

    study_dir: RunDir
    report: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["status"] == "failed"]

    @property
    def complete(self) -> bool:
        return all(t["status"] == "finished" for t in self.trials)

    def table(self) -> Any:
        """The report as a rich table, one row per arm (what ``nasreg study report`` prints)."""
        from .study_report import report_table

        return report_table(self.report)


class StudyReporter:
    """What a study says while it runs (the command line prints it; the default says nothing)."""

    def start(self, study_dir: Path, executor: str, to_run: int, done: int) -> None:
        pass

    def arm_invalid(self, label: str, error: str) -> None:
        pass

    def trial_end(self, record: dict[str, Any], seconds: float) -> None:
        pass


# --- arms ---------------------------------------------------------------------------------------


def _absolute_plugins(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """``[run] plugins`` file references made absolute (they are relative to the spec's folder,
    and the copy lives in another one)."""
    from .spec import _is_file_ref

    run = raw.get("run")
    if isinstance(run, dict) and isinstance(run.get("plugins"), list):
        run["plugins"] = [str((base / p).resolve()) if isinstance(p, str) and _is_file_ref(p)
                          and not Path(p).is_absolute() else p for p in run["plugins"]]
    return raw


def _arm_tables(study: StudySpec, plugin_refs: Sequence[str], threads: int
                ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each arm's spec table (overrides applied) and, per arm that does not validate with them
    (checked with the first seed, as its trials will run), the one-line reason."""
    from .. import api
    from .spec import apply_overrides, read_toml

    tables: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for arm in study.arms:
        try:
            raw = apply_overrides(read_toml(arm.spec), arm_overrides(study, arm))
            tables[arm.label] = _absolute_plugins(copy.deepcopy(raw), arm.spec.parent)
            api.validate(arm.spec, overrides=[*arm_overrides(study, arm),
                                              *trial_overrides(arm.label, study.seeds[0], threads)],
                         plugins=list(plugin_refs))
        except NasregError as exc:
            errors[arm.label] = f"arm {arm.label!r}: {exc}"
    return tables, errors


def trial_threads(executor: Executor) -> int:
    """The torch threads each trial gets (recorded in its spec: the same on resume)."""
    return int(getattr(executor, "threads", 0) or 0)


# --- the study directory --------------------------------------------------------------------------


def _create_study_dir(study: StudySpec, out: str | Path | None, force: bool) -> Path:
    """A fresh, locked study directory: ``out`` (empty or missing; ``force`` empties an old
    study directory), or ``[study] out_dir / name`` numbered when taken."""
    from .rundir import _check_name_lengths, _mkdir

    if out is None:  # numbered when taken, locked: the run directories' own mechanism
        return create_run_dir(study.out_dir, study.name)
    path = Path(out)
    _check_name_lengths(path, "--out")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path}: exists and is not a directory")
    _mkdir(path, exist_ok=True)
    lock = lock_run_dir(path)
    try:
        entries = list(path.iterdir())
        if entries:
            if not force:
                raise RunDirError(f"--out {path}: already exists and is not empty (continue it with "
                                  f"`nasreg study resume {path}`, or pass --force to replace it)")
            if not (path / STATE_FILE).is_file():
                raise RunDirError(f"--out {path}: not a nasreg study directory (no {STATE_FILE}); "
                                  "--force only replaces study directories")
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    except OSError as exc:
        lock.release()
        raise RunDirError(f"--out {path}: {exc.strerror or exc}") from None
    except BaseException:
        lock.release()
        raise
    return path


def _read_state(study_dir: Path) -> dict[str, Any]:
    files = RunDir(study_dir)
    if not study_dir.is_dir():
        raise RunDirError(f"{study_dir}: no such study directory")
    if not files.exists(STATE_FILE):
        raise RunDirError(f"{study_dir}: not a nasreg study directory (no {STATE_FILE})")
    state = files.read_json(STATE_FILE)
    if state.get("format") != STATE_FORMAT or not isinstance(state.get("study"), dict):
        raise RunDirError(f"{study_dir / STATE_FILE}: not a nasreg study state file")
    return state


def _study_from_state(study_dir: Path, state: dict[str, Any], registries: Any) -> StudySpec:
    """The study a state file records, its arms pointing at their spec copies in ``specs/``."""
    recorded = state["study"]
    table = {"study": {"name": recorded.get("name"), "seeds": recorded.get("seeds"),
                       "set": recorded.get("set", []), "description": recorded.get("description", "")},
             "executor": recorded.get("executor") or {"name": "local"},
             "arms": [{"label": a.get("label"), "spec": str(study_dir / SPECS_DIR / f"{a.get('label')}.toml"),
                       "set": a.get("set", []), **({"description": a["description"]} if a.get("description") else {})}
                      for a in recorded.get("arms") or ()]}
    try:
        return study_from_table(table, study_dir / STATE_FILE, registries)
    except SpecError as exc:
        raise RunDirError(f"{exc}") from None


def _trial_dir(study_dir: Path, arm: str, seed: int) -> Path:
    return study_dir / arm / f"seed-{seed}"


def _key(arm: str, seed: int) -> str:
    return f"{arm}/seed-{seed}"


# --- running -------------------------------------------------------------------------------------


class _Stop(StopRequests):
    """Ctrl-C / SIGTERM during a study: the executor asks its running trials to stop at their next
    step (they checkpoint); nothing new starts."""

    def __init__(self, executor: Executor):
        super().__init__()
        self.executor = executor

    def _handler(self, signum, frame):  # noqa: ANN001
        super()._handler(signum, frame)
        self.executor.request_stop()


def run_study(path: str | Path, *, overrides: Iterable[str] = (), plugins: Sequence[str] = (),
              out: str | Path | None = None, force: bool = False,
              reporter: StudyReporter | None = None) -> StudyResult:
    """Run every trial of the study file ``path`` into a new study directory, then its report."""
    from .plugins import load_plugins

    refs = [str(Path(p).resolve()) if str(p).endswith(".py") else str(p) for p in plugins]
    registries = load_plugins(refs, base_dir=Path.cwd()).registries
    study = load_study(path, tuple(overrides), registries)
    executor = study.executor.build()
    threads = trial_threads(executor)
    tables, errors = _arm_tables(study, refs, threads)
    if len(errors) == len(study.arms):
        executor.close()
        raise SpecError(next(iter(errors.values())))
    study_dir = _create_study_dir(study, out, force)
    files = RunDir(study_dir)
    from .spec import read_toml

    files.write_toml(STUDY_FILE, read_toml(study.path) if not overrides else
                     _overridden(study.path, tuple(overrides)))
    (study_dir / SPECS_DIR).mkdir(exist_ok=True)
    for arm in study.arms:
        if arm.label in tables:
            files.write_toml(f"{SPECS_DIR}/{arm.label}.toml", tables[arm.label])
        else:  # an arm that could not be read: its trials are failures; the copy is for the record
            files.write_text(f"{SPECS_DIR}/{arm.label}.toml", f"# {errors[arm.label]}\n")
    state = {"format": STATE_FORMAT, "version": 1, "study": study.to_dict(), "threads": threads,
             "plugins": refs, "arm_errors": errors, "trial_errors": {}, "created": time.time()}
    files.write_json(STATE_FILE, state)
    try:
        return _run(study_dir, state, study, executor, reporter or StudyReporter())
    finally:
        release_run_dir(study_dir)


def _overridden(path: Path, overrides: tuple[str, ...]) -> dict[str, Any]:
    from .spec import apply_overrides, read_toml

    return apply_overrides(read_toml(path), overrides)


def resume_study(study_dir: str | Path, *, reporter: StudyReporter | None = None) -> StudyResult:
    """Continue a study: finished trials are kept, interrupted ones continue from their
    checkpoints, failed ones are retried, missing ones start; then the report."""
    from .plugins import load_plugins

    study_dir = Path(study_dir)
    state = _read_state(study_dir)
    lock = lock_run_dir(study_dir)
    try:
        registries = load_plugins(list(state.get("plugins") or ()), base_dir=Path.cwd()).registries
        study = _study_from_state(study_dir, state, registries)
        executor = study.executor.build()
        return _run(study_dir, state, study, executor, reporter or StudyReporter())
    finally:
        lock.release()


def _run(study_dir: Path, state: dict[str, Any], study: StudySpec, executor: Executor,
         reporter: StudyReporter) -> StudyResult:
    from .study_trial import TrialTask, pack_run_dir, run_trial, unpack_run_dir

    files = RunDir(study_dir)
    threads = int(state.get("threads") or 0)
    arm_errors: dict[str, str] = dict(state.get("arm_errors") or {})
    trial_errors: dict[str, str] = dict(state.get("trial_errors") or {})
    for label, error in arm_errors.items():
        reporter.arm_invalid(label, error)
    tasks: list[TrialTask] = []
    done = 0
    for arm, seed in study.trials():
        if arm.label in arm_errors:
            continue
        run_dir = _trial_dir(study_dir, arm.label, seed)
        status, _ = run_status(run_dir)
        if status == "finished":
            done += 1
            continue
        action = "resume" if status in ("interrupted", "failed") else "start"
        if action == "start" and run_dir.exists():
            remove_stale_temporaries(run_dir)
            if any(run_dir.iterdir()) and not (run_dir / SPEC_FILE).exists():
                trial_errors[_key(arm.label, seed)] = (f"{run_dir}: holds files but no {SPEC_FILE}; "
                                                       "move them away to run this trial")
                continue
        archive = None
        if not executor.shared_filesystem:
            archive = pack_run_dir(run_dir) if action == "resume" else b""
        tasks.append(TrialTask(arm=arm.label, seed=seed, spec=str(study_dir / SPECS_DIR / f"{arm.label}.toml"),
                               overrides=tuple(trial_overrides(arm.label, seed, threads)), run_dir=str(run_dir),
                               action=action, plugins=tuple(state.get("plugins") or ()), archive=archive))
    reporter.start(study_dir, executor.describe(), len(tasks), done)
    interrupted = False
    try:
        with _Stop(executor) as stop:
            outcomes = executor.map(run_trial, tasks, ordered=False, fresh_process=executor.slots > 1,
                                    resources=Resources(cpus=max(threads, 1)))
            for outcome in outcomes:
                task = tasks[outcome.index]
                run_dir = Path(task.run_dir)
                archive = (outcome.value or {}).get("archive") if outcome.ok else \
                    getattr(outcome.exception, "nasreg_archive", None)
                if archive:
                    unpack_run_dir(archive, run_dir)
                key = _key(task.arm, task.seed)
                if outcome.ok:
                    trial_errors.pop(key, None)
                elif stop.requested or isinstance(outcome.exception, (Interrupted, KeyboardInterrupt)):
                    interrupted = True
                    executor.request_stop()
                else:
                    trial_errors[key] = outcome.error or "failed"
                files.write_json(STATE_FILE, {**state, "trial_errors": trial_errors})
                reporter.trial_end(trial_record(run_dir, task.arm, task.seed, key, error=trial_errors.get(key)),
                                   outcome.seconds)
            interrupted = interrupted or stop.requested
    except (NasregError, KeyboardInterrupt):
        raise
    except Exception as exc:  # a fault of the executor plugin itself
        from .executor import describe_error

        raise NasregError(f"executor {study.executor.name!r} failed: {describe_error(exc)} "
                          f"(continue with: nasreg study resume {study_dir})") from exc
    finally:
        executor.close()
    state = {**state, "trial_errors": trial_errors}
    files.write_json(STATE_FILE, state)
    result = write_report(study_dir, state, study)
    if interrupted:
        raise Interrupted(f"study stopped; continue with: nasreg study resume {study_dir}")
    return result


# --- the report ------------------------------------------------------------------------------------


def _describe(plugin_refs: Sequence[str]) -> Any:
    """The found network's parameters and FLOPs, for runs without an evaluation."""
    def describe(genotype: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
        from .. import api
        from .genotype import Genotype

        try:
            return api.describe_network(Genotype.from_dict(genotype), spec=Path(run_dir) / SPEC_FILE,
                                        plugins=list(plugin_refs))
        except NasregError:
            return None
    return describe


def _records(study_dir: Path, state: dict[str, Any], study: StudySpec) -> list[dict[str, Any]]:
    errors = {**{_key(a.label, s): state.get("arm_errors", {}).get(a.label) for a, s in study.trials()
                 if a.label in (state.get("arm_errors") or {})}, **(state.get("trial_errors") or {})}
    describe = _describe(state.get("plugins") or ())
    return [trial_record(_trial_dir(study_dir, a.label, s), a.label, s, _key(a.label, s),
                         error=errors.get(_key(a.label, s)), describe=describe) for a, s in study.trials()]


def write_report(study_dir: Path, state: dict[str, Any], study: StudySpec) -> StudyResult:
    """Build the report from the trials' run directories; write report.json, report.md and plots."""
    from . import study_report as sr

    records = _records(study_dir, state, study)
    recorded = state["study"]
    report = sr.build_report(recorded, records)
    files = RunDir(study_dir)
    plots = sr.plot_report(report, records, study_dir)
    files.write_json(REPORT_JSON, report)
    files.write_text(REPORT_MD, sr.report_markdown(report, plots=plots))
    return StudyResult(study_dir=files, report=report, trials=records)


def study_report(study_dir: str | Path) -> StudyResult:
    """The report of a study directory as its files stand now (written again)."""
    from .plugins import load_plugins

    study_dir = Path(study_dir)
    state = _read_state(study_dir)
    lock = lock_run_dir(study_dir)
    try:
        registries = load_plugins(list(state.get("plugins") or ()), base_dir=Path.cwd()).registries
        study = _study_from_state(study_dir, state, registries)
        return write_report(study_dir, state, study)
    finally:
        lock.release()


# --- nasreg compare ---------------------------------------------------------------------------------


def _arm_identity(spec: dict[str, Any]) -> str:
    """A run's spec without what differs between the seeds of one arm (seed, name, folder, threads)."""
    table = copy.deepcopy(spec)
    run = table.get("run")
    if isinstance(run, dict):
        for key in ("seed", "name", "out_dir", "threads"):
            run.pop(key, None)
    return hashlib.sha256(json.dumps(table, sort_keys=True, default=str).encode()).hexdigest()[:16]


def compare_runs(run_dirs: Sequence[str | Path], *, out: str | Path | None = None,
                 plugins: Sequence[str] = ()) -> StudyResult:
    """The report of runs made by hand: runs whose specs differ only in the seed (and name,
    folder, threads) form one arm, labelled by the run's name; ``out``: a folder to write
    report.json, report.md and the plots into (none: nothing written)."""
    from . import study_report as sr

    if not run_dirs:
        raise NasregError("compare: name at least one run directory")
    groups: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    seen: dict[tuple[str, int], Path] = {}
    labels: set[str] = set()
    describe = _describe(plugins)
    for given in run_dirs:
        path = Path(given)
        files = RunDir(path)
        if not path.is_dir():
            raise RunDirError(f"{path}: no such run directory")
        if not files.exists(SPEC_FILE):
            raise RunDirError(f"{path}: not a nasreg run directory (no {SPEC_FILE})")
        spec = files.read_toml(SPEC_FILE)
        if "evaluate" in spec and "search_space" not in spec:
            raise RunDirError(f"{path}: a `nasreg train` run; compare takes search runs")
        identity = _arm_identity(spec)
        run = spec.get("run") if isinstance(spec.get("run"), dict) else {}
        seed = int(run.get("seed", 0))
        if identity not in groups:
            label = str(run.get("name") or path.name)
            base, n = label, 2
            while label in labels:
                label, n = f"{base}-{n}", n + 1
            labels.add(label)
            groups[identity] = {"label": label, "spec": str(path / SPEC_FILE), "set": [], "seeds": []}
        group = groups[identity]
        if (group["label"], seed) in seen:
            raise NasregError(f"compare: {seen[(group['label'], seed)]} and {path} are the same spec with the "
                              f"same seed ({seed}); name each run once")
        seen[(group["label"], seed)] = path
        group["seeds"].append(seed)
        records.append(trial_record(path, group["label"], seed, str(path), describe=describe))
    seeds = sorted({s for g in groups.values() for s in g["seeds"]})
    study = {"name": "compare", "seeds": seeds, "set": [], "executor": {"name": "(runs made by hand)"},
             "arms": [{"label": g["label"], "spec": g["spec"], "set": []} for g in groups.values()]}
    # a seed an arm never ran is no pending trial of a comparison
    report = sr.build_report(study, records)
    for arm in report.get("arms", {}).values():
        if isinstance(arm.get("failed"), list):
            arm["failed"] = [f for f in arm["failed"] if f.get("status") != "pending"]
    target = RunDir(Path(out)) if out is not None else None
    if target is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        plots = sr.plot_report(report, records, Path(out))
        target.write_json(REPORT_JSON, report)
        target.write_text(REPORT_MD, sr.report_markdown(report, plots=plots))
    return StudyResult(study_dir=target if target is not None else RunDir(Path.cwd()), report=report,
                       trials=records)
