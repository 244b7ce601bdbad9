"""The Python API: everything the command line does, as functions that return typed results.

Each ``nasreg`` command is one call here plus printing (see :mod:`nasreg.cli`). These functions
never call ``sys.exit`` and print nothing unless asked (``progress=True`` or a reporter): a user
error raises a :class:`nasreg.NasregError` subclass with a one-line message.

``plugins`` arguments take module names (``"my_pkg.plugin"``), ``.py`` file paths, or plugin
objects (modules or instances with ``@nasreg.hookimpl`` methods); they are loaded on top of the
installed (entry-point) plugins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Union

from ._core.errors import GenotypeError, NasregError, RunDirError
from ._core.genotype import Genotype
from ._core.progress import Reporter
from ._core.evalspec import EvalSpec
from ._core.rundir import RunDir
from ._core.spec import Spec

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from ._core.plugins import Plugins
    from ._core.preflight import Estimate

__all__ = ["SearchResult", "TrainResult", "load_spec", "validate", "search", "resume", "train",
           "build_network", "describe_network", "export_network", "load_genotype", "load_plugins", "run_study", "resume_study",
           "study_report", "validate_study", "compare_runs"]

#: What ``progress=`` accepts: False/None (nothing shown), True (rich progress bars on stderr),
#: or a :class:`nasreg.Reporter` of your own.
Progress = Union[bool, None, Reporter]
SpecSource = Union[str, Path, Mapping[str, Any], "Spec"]
PluginRefs = Iterable[Any]


@dataclass
class TrainResult:
    """A network trained from scratch (``nasreg train``, or a search's ``[evaluate]``)."""

    genotype: Genotype
    #: ``results.json``: test accuracy and error, parameters, FLOPs, wall time, peak memory, ...
    results: dict[str, Any]
    #: The run directory written (:class:`nasreg.RunDir`: ``run_dir.results``, ``run_dir.checkpoint``, ...).
    run_dir: "RunDir"

    @property
    def test_acc(self) -> float | None:
        return self.results.get("test_acc")

    @property
    def params(self) -> int:
        return int(self.results["params"])


@dataclass
class SearchResult:
    """A finished search (``nasreg run`` / ``nasreg resume``)."""

    genotype: Genotype
    #: ``summary.json``: final validation figures, per-stage weights and times, wall time, ...
    summary: dict[str, Any]
    #: The run directory written (:class:`nasreg.RunDir`: ``run_dir.genotype``, ``run_dir.eval``, ...).
    run_dir: "RunDir"
    #: The ``[evaluate]`` training of the genotype found (None without ``[evaluate]``, or with
    #: ``evaluate=False``).
    evaluation: TrainResult | None = None
    #: The pre-flight estimate of one search step (None when skipped or not applicable).
    preflight: Any = field(default=None, repr=False)

    @property
    def final_val_acc(self) -> float | None:
        return self.summary.get("final_val_acc")


# --- specs -------------------------------------------------------------------------------------


def _split_plugins(plugins: PluginRefs) -> tuple[list[str], list[tuple[str, Any]]]:
    refs, objects = [], []
    for p in plugins or ():
        if isinstance(p, (str, Path)):
            refs.append(str(p))
        else:
            objects.append((getattr(p, "__name__", None) or type(p).__name__, p))
    return refs, objects


def load_spec(source: SpecSource, *, overrides: Iterable[str] = (), plugins: PluginRefs = ()) -> "Spec":
    """Read a search spec (a TOML file, or a dict with the same tables), apply ``--set``-style
    ``overrides`` (``"data.batch_size=32"``), load the plugins it asks for and validate it.

    Returns the validated :class:`nasreg.Spec` (``spec.resolved()``: every key with its
    default; ``spec.digest()``: its hash; ``spec.plugins``: the loaded plugins)."""
    from ._core import spec as spec_mod

    if isinstance(source, Spec) and not overrides and not plugins:
        return source  # type: ignore[return-value]
    if isinstance(source, Spec):
        source = source.path if source.path.is_file() else source.raw  # type: ignore[union-attr]
    refs, objects = _split_plugins(plugins)
    if isinstance(source, Mapping):
        return spec_mod.load_table(dict(source), tuple(overrides), refs, objects)
    return spec_mod.load(Path(source), tuple(overrides), refs, objects=objects)[0]


def validate(source: str | Path | Mapping[str, Any], *, overrides: Iterable[str] = (),
             plugins: PluginRefs = ()) -> "Spec | EvalSpec":
    """Check a search spec, or an evaluation spec for :func:`train` (only ``[run]`` and
    ``[evaluate]``), without running it (``nasreg validate``): every key, type, range and
    registry name, the selector's stage plan and, for a search spec, the evaluation network's keys.
    The search space, selector and strategy are built as :func:`search` builds them (every check
    of their keys, the stage plan, a supernet strategy's need of a selector and of a space with a
    supernet), and the train/validation split is checked as far as the spec and the dataset's
    registry metadata tell (a limit too small to split; batches of a single image on a supernet
    whose BatchNorm cannot train on them, probed on torch's ``meta`` device).
    Returns the validated spec or raises :class:`nasreg.SpecError` (or another
    :class:`nasreg.NasregError`). What depends on the machine or on the dataset's files (the
    device, the dataset's real size, free memory) is checked when :func:`search` starts, before
    it writes anything, by the same code."""
    from ._core import spec as spec_mod
    from ._core.evalspec import is_eval_spec, load_eval_spec

    overrides = tuple(overrides)
    refs, objects = _split_plugins(plugins)
    if not isinstance(source, Mapping):
        raw = spec_mod.apply_overrides(spec_mod.read_toml(Path(source)), overrides)
        if is_eval_spec(raw):
            return _with_plugins(*load_eval_spec(Path(source), overrides, refs))
        return spec_mod.load(Path(source), overrides, refs, objects=objects, raw=raw)[0]  # read once
    return load_spec(source, overrides=overrides, plugins=[*refs, *(o for _, o in objects)])


def _with_plugins(espec: Any, plugins: "Plugins") -> Any:
    espec.plugins = plugins
    return espec


def load_plugins(plugins: PluginRefs = (), *, strict: bool = True) -> "Plugins":
    """The installed plugins plus ``plugins``, registries filled (``.registries``; ``.infos``:
    per plugin its version, source, what it registered and its load error, if any). An
    entry-point plugin that fails to load is only recorded; one asked for here raises
    :class:`nasreg.PluginError`, unless not ``strict`` (``nasreg list-plugins``)."""
    from ._core.plugins import load_plugins as _load

    refs, objects = _split_plugins(plugins)
    return _load(refs, base_dir=Path.cwd(), objects=objects, strict=strict)


def load_genotype(path: str | Path, *, plugins: PluginRefs = ()) -> Genotype:
    """A genotype JSON file, checked against the registries (its space and ops must exist)."""
    return Genotype.load(Path(path), load_plugins(plugins).registries)


# --- search ------------------------------------------------------------------------------------


def _reporter(progress: Progress) -> tuple[Reporter, bool]:
    """(the reporter, whether this call made it and so must close it)."""
    if isinstance(progress, Reporter) or (progress not in (None, True, False) and hasattr(progress, "step")):
        return progress, False  # type: ignore[return-value]
    if progress:
        from ._core.progress import PlainReporter, RichReporter

        return (PlainReporter() if PlainReporter.wanted() else RichReporter()), True  # plain lines off a terminal
    return Reporter(), True


def search(spec: SpecSource, *, overrides: Iterable[str] = (), plugins: PluginRefs = (),
           out: str | Path | None = None, force: bool = False, progress: Progress = False,
           preflight: bool = True, evaluate: bool = True) -> SearchResult:
    """Run the search a spec describes, then its ``[evaluate]`` section (unless ``evaluate=False``).

    The same run as ``nasreg run``: the run directory is ``out`` (refused when not empty unless
    ``force``) or ``[run] out_dir / [run] name`` (numbered when taken); the pre-flight estimate
    runs first and refuses a search whose memory estimate exceeds the free memory (``preflight=False``
    skips it); ``[run] threads`` and the seed are applied; under ``torchrun`` every process calls
    this, rank 0 writes the run directory and runs ``[evaluate]``."""
    from ._core import distributed as ddp
    from ._core.rundir import create_run_dir, release_run_dir

    spec = load_spec(spec, overrides=overrides, plugins=plugins)
    reporter, own = _reporter(progress)
    prepared, eval_prepared, estimate = _prepare(spec, preflight, reporter)
    run_dir = ddp.open_run_dir(lambda: create_run_dir(spec.run.out_dir, spec.run.name, out, force))  # locked
    try:
        return _search_and_evaluate(prepared, eval_prepared if evaluate else None, run_dir, reporter, own,
                                    estimate, resume=False)
    finally:
        release_run_dir(run_dir)


def _prepare(spec: "Spec", preflight: bool, reporter: Reporter) -> tuple[Any, Any, Any]:
    """Every check that can fail on the user's input, before a run directory exists; the
    pre-flight line goes to ``reporter.preflight`` (rank 0 only) before its memory check."""
    from ._core import distributed as ddp
    from ._core.preflight import preflight as estimate_step
    from ._core.search import prepare

    prepared = prepare(spec, spec.plugins)  # under torchrun: joins the process group
    eval_prepared = _prepare_evaluation(spec, prepared.space)
    main_rank = ddp.current().is_main
    estimate = None
    if preflight:
        estimate = estimate_step(prepared, echo=reporter.preflight if main_rank else None, check=True)
    return prepared, eval_prepared, estimate


def _search_and_evaluate(prepared: Any, eval_prepared: Any, run_dir: Path, reporter: Reporter, own: bool,
                         estimate: Any, *, resume: bool) -> SearchResult:
    from ._core import distributed as ddp
    from ._core.search import run_search

    main_rank = ddp.current().is_main
    active = reporter if main_rank else Reporter()  # torchrun: rank 0 speaks for all
    try:
        summary = run_search(prepared, run_dir, active, resume=resume)
    finally:
        active.close()
        ddp.close_run_dir(run_dir)
        ddp.shutdown()  # [evaluate] below runs on rank 0 alone
    genotype = Genotype.from_dict(summary["genotype"], source=str(run_dir / "genotype.json"))
    result = SearchResult(genotype=genotype, summary=summary, run_dir=RunDir(run_dir), preflight=estimate)
    if not main_rank:
        return result
    active.search_end(summary)
    try:
        if eval_prepared is not None:
            result.evaluation = _evaluate_found(eval_prepared, summary, run_dir, reporter)
    finally:
        if own:
            reporter.close()
    return result


def _prepare_evaluation(spec: "Spec", space: Any) -> Any:
    """The prepared ``[evaluate]`` of a search spec (checked before the search starts), or None."""
    if spec.evaluate is None:
        return None
    from ._core.evaluate import from_search_spec, prepare_evaluation

    return prepare_evaluation(from_search_spec(spec, spec.plugins.registries), spec.plugins, space)


def _evaluate_found(prepared: Any, summary: dict[str, Any], run_dir: Path, reporter: Reporter,
                    notice: str | None = None) -> TrainResult:
    """Train the genotype a search found, into ``RUN_DIR/eval``; a stopped evaluation continues
    from its checkpoint exactly (checked first: nothing is deleted). A stop requested after the
    search's last step is honoured here, before the evaluation starts. ``notice``: a line shown
    once the evaluation's checks have passed."""
    from ._core.errors import Interrupted
    from ._core.evaluate import EVAL_DIR, run_evaluation, search_cost
    from ._core.rundir import GENOTYPE_FILE
    from ._core.stop import take_unhonoured

    source = str(run_dir / GENOTYPE_FILE)
    genotype = Genotype.from_dict(summary["genotype"], source=source)
    eval_dir = run_dir / EVAL_DIR
    if take_unhonoured():
        raise Interrupted(f"interrupted after the search, before its evaluation; "
                          f"continue with: nasreg resume {run_dir}")
    reporter.evaluation_start(eval_dir)
    try:
        results = run_evaluation(prepared, genotype, eval_dir, reporter, source=source,
                                 search_cost=search_cost(summary), resume=True,
                                 continue_with=f"nasreg resume {run_dir}", notice=notice)
    finally:
        reporter.close()
    reporter.train_end(results)
    return TrainResult(genotype=genotype, results=results, run_dir=RunDir(eval_dir))


def resume(run_dir: str | Path, *, plugins: PluginRefs = (), progress: Progress = False,
           preflight: bool = True, evaluate: bool = True) -> "SearchResult | TrainResult":
    """Continue a stopped search from its last checkpoint (the same results as an uninterrupted
    run), then run its ``[evaluate]``. A run whose search finished but whose evaluation did not
    (no ``eval/results.json``) continues the evaluation from its checkpoint (or starts it); a
    stopped ``nasreg train`` run continues from its checkpoint (a :class:`TrainResult`); a
    finished run is a :class:`nasreg.RunDirError`. Before anything is written the checkpoint is
    checked against ``spec.toml`` (edited after the run: refused, naming what differs), and the
    run directory is locked (another process in it: refused, naming its PID)."""
    from ._core import rundir as rd

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    if not (run_dir / rd.SPEC_FILE).is_file():
        raise RunDirError(f"{run_dir}: not a nasreg run directory (no {rd.SPEC_FILE})")
    # One process at a time in a run directory (under torchrun: rank 0 holds it for all).
    lock = rd.lock_run_dir(run_dir) if _launch_rank() == 0 else None
    try:
        return _resume_locked(run_dir, plugins, progress, preflight, evaluate)
    finally:
        if lock is not None:
            lock.release()


def _search_finished(run_dir: Path) -> bool:
    """Whether the run's search ended with a genotype (a ``summary.json`` that is not a failure
    record: a failed search resumes from its last checkpoint)."""
    files = RunDir(run_dir)
    if not files.exists(files.SUMMARY_FILE):
        return False
    return files.read_json(files.SUMMARY_FILE).get("status") != "failed"


def _launch_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun), before any process group."""
    import os

    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _resume_locked(run_dir: Path, plugins: PluginRefs, progress: Progress, preflight: bool,
                   evaluate: bool) -> SearchResult:
    """:func:`resume`, with the run directory's lock held."""
    from ._core import distributed as ddp
    from ._core import rundir as rd
    from ._core import spec as spec_mod
    from ._core.evaluate import EVAL_DIR, RESULTS_FILE

    finished = _search_finished(run_dir)
    if finished and (run_dir / EVAL_DIR / RESULTS_FILE).is_file():
        raise RunDirError(f"{run_dir}: this run has finished; nothing to resume")
    refs, objects = _split_plugins(plugins)
    if _is_training_run(run_dir):
        return _resume_training(run_dir, refs, progress)  # type: ignore[return-value]
    spec = spec_mod.load(run_dir / rd.SPEC_FILE, (), refs, objects=objects)[0]
    reporter, own = _reporter(progress)
    if finished:
        return _evaluate_finished(spec, run_dir, reporter, own, evaluate)
    from ._core.resumecheck import check_resumable

    check_resumable(run_dir, spec)  # the checkpoint belongs to this spec: refused before anything runs
    prepared, eval_prepared, estimate = _prepare(spec, preflight, reporter)
    given = run_dir
    run_dir = ddp.open_run_dir(lambda: given)  # other ranks: a scratch directory
    return _search_and_evaluate(prepared, eval_prepared if evaluate else None, run_dir, reporter, own,
                                estimate, resume=True)


def _is_training_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a ``nasreg train`` run (its ``spec.toml`` an evaluation spec)."""
    from ._core import rundir as rd
    from ._core import spec as spec_mod
    from ._core.evalspec import is_eval_spec

    return is_eval_spec(spec_mod.read_toml(run_dir / rd.SPEC_FILE))


def _resume_training(run_dir: Path, refs: list[str], progress: Progress) -> TrainResult:
    """Continue a stopped ``nasreg train`` from its checkpoint (exactly), or refuse a finished one."""
    from ._core import rundir as rd
    from ._core.evalspec import load_eval_spec
    from ._core.evaluate import prepare_evaluation, run_evaluation, space_for

    files = RunDir(run_dir)
    if files.exists(rd.RESULTS_FILE):
        raise RunDirError(f"{run_dir}: this training run has finished; nothing to resume")
    espec, plugins_ = load_eval_spec(files.spec, (), refs)
    source = str(files.genotype)
    genotype = Genotype.load(files.genotype, plugins_.registries)
    space = space_for(genotype, plugins_.registries, espec.search_space, source)
    prepared = prepare_evaluation(espec, plugins_, space, space_name=genotype.space, genotype=genotype)
    reporter, own = _reporter(progress)
    try:  # (the engine says where it continues from, once every check has passed)
        results = run_evaluation(prepared, genotype, run_dir, reporter, source=source, resume=True,
                                 continue_with=f"nasreg resume {run_dir}")
    finally:
        reporter.close()
    reporter.train_end(results)
    return TrainResult(genotype=genotype, results=results, run_dir=files)


def _evaluate_finished(spec: "Spec", run_dir: Path, reporter: Reporter, own: bool, evaluate: bool) -> SearchResult:
    from ._core import distributed as ddp
    from ._core import rundir as rd

    if spec.evaluate is None:
        raise RunDirError(f"{run_dir}: this run has finished; nothing to resume")
    if ddp.env_world_size() > 1:  # [evaluate] runs in one process
        raise RunDirError(f"{run_dir}: the search has finished and its evaluation runs in one process; "
                          f"run `nasreg resume {run_dir}` without torchrun")
    summary = read_summary(run_dir / rd.SUMMARY_FILE)
    # spec.toml must be the spec the search ran under (its summary's spec_hash), before eval/ is touched.
    from ._core.resumecheck import check_finished

    check_finished(spec, summary, run_dir / rd.SUMMARY_FILE, run_dir / rd.CHECKPOINT_FILE)
    genotype = Genotype.from_dict(summary["genotype"], source=str(run_dir / rd.GENOTYPE_FILE))
    result = SearchResult(genotype=genotype, summary=summary, run_dir=RunDir(run_dir))
    if not evaluate:
        return result
    eval_prepared = _prepare_evaluation(spec, spec.search_space.build())
    from ._core.stop import take_unhonoured

    take_unhonoured()  # a stop left by an earlier call of this process is not this run's
    started = RunDir(run_dir).eval.exists(rd.CHECKPOINT_FILE)
    notice = (f"{run_dir}: the search has finished; its evaluation has not: "
              + ("continuing the evaluation from its checkpoint" if started else "running the evaluation from its start"))
    try:
        result.evaluation = _evaluate_found(eval_prepared, summary, run_dir, reporter, notice)
    finally:
        if own:
            reporter.close()
    return result


def read_summary(path: Path) -> dict[str, Any]:
    """A search's ``summary.json``, checked (a dict with a genotype)."""
    path = Path(path)
    summary = RunDir(path.parent).read_json(path.name, expect=dict)
    if not isinstance(summary.get("genotype"), dict):
        raise RunDirError(f"{path}: not a search summary (no genotype)")
    return summary


# --- genotypes: networks and their training -----------------------------------------------------


def _eval_spec(spec: Any, overrides: Iterable[str], plugins: PluginRefs) -> tuple[Any, "Plugins"]:
    """An evaluation spec from: None (the defaults of the genotype's space), a path (evaluation or
    search spec), a dict, a validated search :class:`nasreg.Spec`, or an evaluation
    spec. A search spec's is bound to its space; an evaluation spec's ``[evaluate]`` is resolved
    for the genotype's space when the genotype is read (:meth:`EvalSpec.bind`)."""
    from ._core.evalspec import from_search_spec, load_eval_spec

    overrides = tuple(overrides)
    refs, objects = _split_plugins(plugins)
    if isinstance(spec, Spec) and not overrides and not plugins:
        return from_search_spec(spec, spec.plugins.registries), spec.plugins
    if isinstance(spec, EvalSpec):
        return spec, spec.plugins  # an evaluation spec from validate()
    if isinstance(spec, (Mapping, Spec)):
        loaded = load_spec(spec, overrides=overrides, plugins=plugins)
        return from_search_spec(loaded, loaded.plugins.registries), loaded.plugins
    if objects:
        raise NasregError("train/build_network: plugin objects need a spec given as a dict or a Spec; "
                          "pass plugin modules by name")
    return load_eval_spec(Path(spec) if spec is not None else None, overrides, refs)


def _searched_data(espec: Any, genotype: Genotype, spec: Any, overrides: Iterable[str]) -> str | None:
    """Without a spec, train on the data the genotype was searched on (its provenance's ``data``)
    in place of the space's default dataset; the line saying so, or None when nothing changed.
    ``--set evaluate.data...`` still wins (it is the spec's ``[evaluate.data]``)."""
    data = genotype.provenance.get("data")
    if spec is not None or not isinstance(data, dict) or not isinstance(data.get("dataset"), str):
        return None
    if isinstance(espec.table.get("data"), dict) and "dataset" in espec.table["data"]:
        return None
    espec.default_data, espec.space = dict(data), None  # bound again with the searched data
    return (f"no --spec: training on {data['dataset']!r}, the dataset the genotype was searched on "
            f"(its provenance), with its space's evaluation recipe; --spec or --set evaluate.data.dataset=... "
            f"chooses otherwise")


def _genotype(genotype: Genotype | str | Path, registries: Any) -> tuple[Genotype, str]:
    if isinstance(genotype, Genotype):
        genotype.validate(registries)
        return genotype, "genotype"
    if isinstance(genotype, (str, Path)):
        return Genotype.load(Path(genotype), registries), str(genotype)
    raise GenotypeError(f"expected a Genotype or the path of a genotype JSON file, got {type(genotype).__name__}")


def build_network(genotype: Genotype | str | Path, *, spec: Any = None, overrides: Iterable[str] = (),
                  plugins: PluginRefs = (), input_shape: tuple[int, int, int] | None = None,
                  num_classes: int | None = None, **network: Any) -> "nn.Module":
    """The network ``genotype`` describes, as a ready ``torch.nn.Module`` (freshly initialized,
    in training mode, on the CPU): for training it yourself, loading weights (an evaluation's
    ``checkpoint.pt`` ``"model"`` state) or export.

    Its keys are the evaluation network's keys of ``spec``'s ``[evaluate]`` (a search spec, an
    evaluation spec or a path to one; None: the defaults of the genotype's space), the keyword
    arguments ``network`` on top of them (``darts-cell``: ``cells=8, auxiliary=False``; checked
    against the space's keys as ``[evaluate]`` is), and the image shape and classes come from
    its dataset's registry metadata, unless ``input_shape`` (C, H, W) and ``num_classes`` are
    given. In training mode a network with an auxiliary head returns ``(logits,
    auxiliary_logits)``; in eval mode the logits."""
    from ._core.evaluate import build_network as _build, dataset_shape, space_for

    espec, plugins_ = _eval_spec(spec, overrides, plugins)
    regs = plugins_.registries
    genotype, source = _genotype(genotype, regs)
    _searched_data(espec, genotype, spec, overrides)
    space = space_for(genotype, regs, espec.search_space, source)
    if network:  # on top of the spec's [evaluate] keys, resolved again for the genotype's space
        espec = dataclasses.replace(espec, table={**espec.table, **network}, space=None)
    espec.bind(genotype.space, regs)
    if input_shape is None or num_classes is None:
        known = dataset_shape(espec.dataset)
        if known is None:
            from ._core.evaluate import bundle_shape

            known = bundle_shape(espec.dataset.build())
        input_shape = input_shape or known[0]
        num_classes = num_classes or known[1]
    return _build(space, genotype, regs, espec.network, tuple(input_shape), int(num_classes), source=source)


def describe_network(genotype: Genotype | str | Path, *, spec: Any = None, overrides: Iterable[str] = (),
                     plugins: PluginRefs = ()) -> dict[str, Any]:
    """``nasreg train --dry-run``: the network's parameters (with and without the auxiliary head)
    and the FLOPs of one forward pass of one image, without data or training."""
    from ._core.evaluate import describe_network as _describe

    espec, plugins_ = _eval_spec(spec, overrides, plugins)
    genotype, source = _genotype(genotype, plugins_.registries)
    _searched_data(espec, genotype, spec, overrides)
    return _describe(espec, plugins_, genotype, source)


def train(genotype: Genotype | str | Path, *, spec: Any = None, overrides: Iterable[str] = (),
          plugins: PluginRefs = (), out: str | Path | None = None, force: bool = False,
          progress: Progress = False) -> TrainResult:
    """Train the network ``genotype`` describes from scratch and test it (``nasreg train``).

    ``spec`` is an evaluation spec (``[run]``, ``[evaluate]``), a search spec (its ``[evaluate]``
    on its dataset), a path to either, or None: the defaults the genotype's space supplies (for
    ``darts-cell``: DARTS's recipe) on the dataset the genotype was searched on (its provenance's
    ``data``; a genotype without one: the recipe's dataset, CIFAR-10 for ``darts-cell``).
    The run directory is ``out`` or ``[run] out_dir / ([run] name or train-GENOTYPE)``."""
    from ._core.evaluate import prepare_evaluation, run_evaluation, space_for
    from ._core.rundir import create_run_dir, release_run_dir

    espec, plugins_ = _eval_spec(spec, overrides, plugins)
    genotype, source = _genotype(genotype, plugins_.registries)
    chose = _searched_data(espec, genotype, spec, overrides)
    space = space_for(genotype, plugins_.registries, espec.search_space, source)
    prepared = prepare_evaluation(espec, plugins_, space, space_name=genotype.space, genotype=genotype)
    stem = Path(source).stem if source != "genotype" else "genotype"
    name = espec.run.name or f"train-{stem}"
    run_dir = create_run_dir(espec.run.out_dir, name, out, force)  # locked
    espec.run = dataclasses.replace(espec.run, name=name)
    reporter, own = _reporter(progress)
    if chose:
        reporter.message(chose)
    try:
        results = run_evaluation(prepared, genotype, run_dir, reporter, source=source,
                                 continue_with=f"nasreg resume {run_dir}")
    finally:
        reporter.close()
        release_run_dir(run_dir)
    reporter.train_end(results)
    return TrainResult(genotype=genotype, results=results, run_dir=RunDir(run_dir))


def export_network(genotype: Genotype | str | Path, *, format: str, weights: str | Path | None = None,
                   out: str | Path | None = None, force: bool = False, untrained: bool = False, spec: Any = None,
                   overrides: Iterable[str] = (), plugins: PluginRefs = (), tolerance: float | None = None) -> Any:
    """Export the evaluation network of ``genotype`` with its trained weights (``nasreg export``)
    as ``format`` ``"onnx"`` or ``"torchscript"``, and check it: the exported model (onnxruntime
    for ONNX, the reloaded module for TorchScript) against PyTorch on a random batch of 8 images,
    max |diff| within ``tolerance`` (default 1e-4).

    ``weights``: a ``weights.pt`` (what ``nasreg train`` and ``[evaluate]`` leave), a training's
    or a search's run directory, or a training ``checkpoint.pt`` (its ``"model"``); None: the
    ``weights.pt`` beside ``genotype`` (its folder, or its folder's ``eval/``), else an error
    unless ``untrained`` (freshly initialized, seeded by ``[run] seed``). The network is the one
    the weights were trained as: the ``spec.toml`` beside them (``spec`` replaces it; ``overrides``
    go on top), with the input shape and classes of the ``results.json`` beside them. ``out``:
    default ``model.onnx`` / ``model.torchscript.pt`` beside the weights; an existing one is
    refused unless ``force``. Returns a :class:`nasreg.ExportResult` (``.path``, ``.max_diff``,
    ``.params``, ``.weights``, ``.line()``); a check above the tolerance writes the file as
    ``NAME.mismatch.SUFFIX`` instead and raises :class:`nasreg.ExportMismatch` (exit status 1)."""
    import torch

    from ._core import export as ex
    from ._core.evaluate import _genotype_digest, bundle_shape, count_parameters, dataset_shape

    if format not in ex.FORMATS:
        raise NasregError(f"--format {format}: expected one of {', '.join(ex.FORMATS)}")
    if format == "onnx":
        ex.require_onnx()  # before anything is read: a missing extra is the only line
    if untrained and weights is not None:
        raise NasregError("--untrained and --weights exclude each other")
    overrides = tuple(overrides)
    genotype_path = Path(genotype) if isinstance(genotype, (str, Path)) else None
    found = None if untrained else ex.find_weights(weights, genotype_path)
    if found is None and not untrained:
        where = f"{genotype_path}: no trained weights beside it (no {ex.WEIGHTS_FILE}, nor eval/{ex.WEIGHTS_FILE})" \
            if genotype_path is not None else "no weights given"
        raise RunDirError(f"{where}; pass --weights WEIGHTS.pt|RUN_DIR|CHECKPOINT.pt, or --untrained to export "
                          "the untrained network")
    out = Path(out) if out is not None else ex.default_out(format, found, genotype_path)
    ex.check_out(out, force)
    beside = found.run_dir / "spec.toml" if found is not None and found.run_dir is not None else None
    spec_source = spec if spec is not None else (beside if beside is not None and _is_training_spec(beside) else None)
    espec, plugins_ = _eval_spec(spec_source, overrides, plugins)
    espec.plugins = plugins_
    regs = plugins_.registries
    genotype_obj, source = _genotype(genotype, regs)
    if found is not None:
        ex.check_genotype(found, genotype_obj, source, _genotype_digest(genotype_obj), regs)
    espec.bind(genotype_obj.space, regs)
    known = ex.shape_from_results(found) if spec is None and not overrides else None
    known = known or dataset_shape(espec.dataset) or bundle_shape(espec.dataset.build())
    (shape, classes), seed = known, espec.run.seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(genotype_obj if genotype_path is None else genotype_path, spec=espec,
                            input_shape=shape, num_classes=classes)
    if found is not None:
        ex.load_into(net, found, source)
    params = count_parameters(net)[0]
    return ex.export_module(net, format, out, shape, params=params, weights=found,
                            tolerance=ex.TOLERANCE if tolerance is None else float(tolerance))


def _is_training_spec(path: Path) -> bool:
    """Whether ``path`` is the evaluation spec a training wrote (``[run]`` and ``[evaluate]``)."""
    from ._core import spec as spec_mod
    from ._core.evalspec import is_eval_spec

    try:
        return is_eval_spec(spec_mod.read_toml(path))
    except NasregError:
        return False


# --- studies ----------------------------------------------------------------------------------------


def validate_study(path: str | Path, *, overrides: Iterable[str] = (), plugins: PluginRefs = ()) -> Any:
    """Check a study file (``nasreg study validate``): its keys, seeds, arms and executor, and
    every arm's spec with the study's and the arm's overrides, as :func:`run_study` runs them.
    Returns the validated study; an arm that does not validate raises its one-line error."""
    from ._core.study import _arm_tables, trial_threads
    from ._core.studyspec import load_study

    refs, _ = _split_plugins(plugins)
    study = load_study(path, tuple(overrides), load_plugins(refs).registries)
    study.executor.build().close()  # as run_study builds it (a missing optional extra is caught here)
    _, errors = _arm_tables(study, refs, 0)
    if errors:
        from ._core.errors import SpecError

        raise SpecError(next(iter(errors.values())))
    return study


def run_study(path: str | Path, *, overrides: Iterable[str] = (), plugins: PluginRefs = (),
              out: str | Path | None = None, force: bool = False, reporter: Any = None) -> Any:
    """Run a study file (``nasreg study run``): every (arm, seed) trial into
    ``STUDY_DIR/<arm>/seed-<n>/`` through the study's executor, then ``report.json``,
    ``report.md`` and the plots. An arm whose spec does not validate, or a trial that fails, is
    recorded with its one-line error and the others run. Returns a :class:`nasreg.StudyResult`
    (``.report``: report.json as a dict, ``.trials``, ``.failed``)."""
    from ._core.study import run_study as _run

    refs, _ = _split_plugins(plugins)
    return _run(path, overrides=overrides, plugins=refs, out=out, force=force, reporter=reporter)


def resume_study(study_dir: str | Path, *, reporter: Any = None) -> Any:
    """Continue a study (``nasreg study resume``): finished trials kept, interrupted ones resumed
    from their checkpoints, failed ones retried, missing ones started; then its report."""
    from ._core.study import resume_study as _resume

    return _resume(study_dir, reporter=reporter)


def study_report(study_dir: str | Path) -> Any:
    """A study's report from its run directories as they stand (``nasreg study report``), written again."""
    from ._core.study import study_report as _report

    return _report(study_dir)


def compare_runs(run_dirs: Iterable[str | Path], *, out: str | Path | None = None, plugins: PluginRefs = ()) -> Any:
    """Runs made by hand compared as a study's report (``nasreg compare``)."""
    from ._core.study import compare_runs as _compare

    refs, _ = _split_plugins(plugins)
    return _compare(list(run_dirs), out=out, plugins=refs)
