"""The epoch loop shared by every gradient-based strategy and every stage.

A search is a sequence of stages (as many as the selector asks for). Each stage builds a fresh
supernet over its per-edge candidate sets, trains it with the strategy (warm-up epochs with the
architecture frozen, then joint epochs), records the architecture gradients and weights per epoch,
and hands a :class:`nasreg.StageResult` to the selector, which picks the next stage's
candidates or derives the genotype.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import checkpoint
from . import distributed as ddp
from . import resumecheck
from . import rundir as rd
from .data import DatasetBundle, check_split, drop_single_last, split_train_val
from .device_loader import DeviceLoader, build_device_loader, choose as choose_loader
from .executor import run_threads
from .errors import (DivergenceError, GenotypeError, Interrupted, NasregError, RunDirError,
                     SpecError)
from .genotype import Genotype
from .loggers import attached as attached_loggers
from .monitor import CollapseMonitor, early_stop_fires, fixed_batch
from .plugins import Plugins
from .progress import QuietReporter
from .rundir import RunDir
from .run import Run
from .selector import StageResult
from .stop import StopRequests
from .strategy import SearchStrategy, Strategy
from .spec import Spec, build_parts, build_strategy, check_stages
from .space import Candidates, SearchSpace
from .supernet import Supernet
from .trainer import score_sums, seed_everything


def pick_device(name: str, where: str = "[run] device") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecError(f"{where}: {name!r} requested but CUDA is not available (use 'auto' or 'cpu')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpecError(f"{where}: {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SpecError(f"{where}: {name!r} requested but MPS is not available")
    return dev


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    # Only touch the global switch when it changes: the call imports torch._inductor (seconds).
    if deterministic or torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic, warn_only=True)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def notify(plugins: Plugins, hook_name: str, reporter: Any = None, **kwargs: Any) -> None:
    """Call a lifecycle hook on every plugin separately; a failing observer is reported, never fatal.

    Implementations marked ``tryfirst`` run first and ``trylast`` last (a logger reading the
    plots plugin's files at ``on_run_end``); the others in the order the plugins were loaded."""
    caller = getattr(plugins.hook, hook_name)
    impls = caller.get_hookimpls()
    impls = ([i for i in impls if i.tryfirst] + [i for i in impls if not (i.tryfirst or i.trylast)]
             + [i for i in impls if i.trylast])
    for impl in impls:
        try:
            impl.function(**{a: kwargs[a] for a in impl.argnames if a in kwargs})
        except Exception as exc:  # noqa: BLE001 - an observer must not kill a multi-hour run
            name = plugins.pm.get_name(impl.plugin)
            msg = f"warning: plugin {name!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
            (reporter.message if reporter is not None else print)(msg)


class _Recorder:
    """Per-epoch statistics of the architecture gradients, kept on the device until epoch end."""

    def __init__(self, model: Supernet, stat: str):
        self.model, self.stat = model, stat
        self.shapes = {ct: [a.numel() for a in params] for ct, params in model.alphas.items()}
        self.acc: torch.Tensor | None = None
        self.count = 0

    def add(self) -> None:
        flat = torch.cat([(a.grad if a.grad is not None else torch.zeros_like(a)).detach().flatten()
                          for a in self.model.arch_parameters()])
        if self.stat == "abs_mean":
            flat = flat.abs()
        if self.acc is None or self.stat == "last":
            self.acc = flat.clone()
        else:
            self.acc += flat
        self.count += 1

    def epoch_value(self) -> dict[str, list[list[float]]] | None:
        if self.acc is None:
            return None
        value = self.acc / self.count if self.stat in ("mean", "abs_mean") else self.acc
        flat = value.double().cpu().tolist()
        self.acc, self.count = None, 0
        out, i = {}, 0
        for ct, sizes in self.shapes.items():
            out[ct] = []
            for n in sizes:
                out[ct].append(flat[i:i + n])
                i += n
        return out


def _append_history(history: dict, per_edge: dict[str, list[list[float]]]) -> None:
    """history[ct][edge][op] gets one more value (the epoch's)."""
    for ct, edges in per_edge.items():
        h = history.setdefault(ct, [[[] for _ in ops] for ops in edges])
        for e, ops in enumerate(edges):
            for o, v in enumerate(ops):
                h[e][o].append(v)


def make_loaders(spec: Spec, bundle: DatasetBundle, device: torch.device, kind: str | None = None
                 ) -> tuple[DataLoader, DataLoader]:
    """The search's train and validation loaders: shuffled by generators seeded from the run's
    seed; under torchrun every rank gets its slice of each global batch (:mod:`nasreg._core.distributed`).

    ``kind`` ("device" | "dataloader") overrides ``[data] loader`` (a resumed run keeps the kind
    its checkpoint was written with: the two draw different random streams). A last batch of a
    single image is dropped (:func:`~nasreg._core.data.drop_single_last`)."""
    train, val = split_train_val(bundle, spec.data.train_portion, spec.run.seed, spec.data.limit)
    ctx = ddp.current()
    where, name = f"{spec.path}: [data] loader", spec.data.dataset
    value = kind or spec.data.loader
    use_device = all(choose_loader(value, ds, device, where=where, name=name) for ds in (train, val))
    if ddp.broadcast_object(use_device):  # "auto" looks at free memory: rank 0 decides for all
        # The whole split on the device; batches made (and, for train, augmented) there.
        kw = dict(batch_size=spec.data.batch_size, device=device, rank=ctx.rank, world_size=ctx.world_size,
                  shuffle=True)
        return (build_device_loader(train, generator=torch.Generator().manual_seed(spec.run.seed + 1),
                                    train=True, drop_last=drop_single_last(len(train), spec.data.batch_size), **kw),
                build_device_loader(val, generator=torch.Generator().manual_seed(spec.run.seed + 2),
                                    train=False, drop_last=drop_single_last(len(val), spec.data.batch_size), **kw))
    common = dict(num_workers=spec.data.num_workers, pin_memory=device.type == "cuda",
                  persistent_workers=spec.data.num_workers > 0)
    loaders = []
    for dataset, seed in ((train, spec.run.seed + 1), (val, spec.run.seed + 2)):
        g = torch.Generator().manual_seed(seed)
        if ctx.enabled:
            sampler = ddp.RankBatchSampler(torch.utils.data.RandomSampler(dataset, generator=g),
                                           spec.data.batch_size, ctx.rank, ctx.world_size)
            loaders.append(DataLoader(dataset, batch_sampler=sampler, generator=g, **common))
        else:
            loaders.append(DataLoader(dataset, batch_size=spec.data.batch_size, shuffle=True, generator=g,
                                      drop_last=drop_single_last(len(dataset), spec.data.batch_size), **common))
    return loaders[0], loaders[1]


def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device,
             batch_norm_stats: bool = True) -> tuple[float, float]:
    """Mean loss and accuracy over ``loader`` in eval mode (no drop path), over every rank's share
    under torchrun (the training engine's :func:`~nasreg._core.trainer.score_sums`, summed).

    With ``batch_norm_stats`` batch-norm layers normalize with each batch's statistics instead
    of their running averages (left untouched): a supernet trained for a few hundred steps has
    running averages far from its weights' current statistics, which makes eval-mode accuracy of
    short searches meaningless. ``[search] eval_batch_norm = "running"`` restores plain eval mode.
    """
    sums = score_sums(model, loader, device, batch_norm_stats=batch_norm_stats)
    loss_sum, correct, count = ddp.all_sum(list(sums))
    return loss_sum / max(count, 1), correct / max(count, 1)


def inherit(new: Supernet, old: Supernet) -> int:
    """Copy the weights of every op module that persists from ``old`` into ``new``; returns count."""
    old_state = old.state_dict()
    arch = {n for n, p in old.named_parameters() if any(p is a for a in old.arch_parameters())}
    copied = {k: v for k, v in old_state.items()
              if k not in arch and k in new.state_dict() and new.state_dict()[k].shape == v.shape
              and not k.startswith("alphas.")}
    new.load_state_dict(copied, strict=False)
    return len(copied)


@dataclass
class Prepared:
    """Everything a search needs that can fail on bad input, built before the run directory."""

    spec: Spec
    plugins: Plugins
    device: torch.device
    space: SearchSpace
    selector: Any
    stages: list[tuple[int, int]]
    bundle: DatasetBundle
    #: The strategy built when the spec was prepared: what the engine reads (never trained).
    strategy: Strategy
    #: Every stage's search space and the ``[search_space]`` keys it overrides
    #: (:meth:`nasreg.Selector.stage_space_keys`; ``space`` and ``{}`` where the selector changes none).
    stage_spaces: list[SearchSpace] = field(default_factory=list)
    stage_space_keys: list[dict[str, Any]] = field(default_factory=list)

    def stage_space(self, stage: int) -> SearchSpace:
        """The search space stage ``stage`` builds its supernet from."""
        return self.stage_spaces[stage] if stage < len(self.stage_spaces) else self.space

    def space_keys(self, stage: int) -> dict[str, Any]:
        """The ``[search_space]`` keys stage ``stage`` overrides (``{}``: none)."""
        return self.stage_space_keys[stage] if stage < len(self.stage_space_keys) else {}


def prepare(spec: Spec, plugins: Plugins) -> Prepared:
    """Pick the device, build the space, selector, strategy and dataset: every check that can
    fail on the user's input happens here, before a run directory exists."""
    device = pick_device(spec.run.device, f"{spec.path}: [run] device")
    parts = build_parts(spec, plugins.registries)  # the checks `nasreg validate` makes, the same code
    space: SearchSpace = parts.space
    selector, strategy, stages = parts.selector, parts.strategy, parts.stages
    if not strategy.supports_torchrun and ddp.env_world_size() > 1:
        raise SpecError(f"{spec.path}: [strategy] name: {spec.strategy.name!r} cannot run under torchrun "
                        "(it samples and trains child networks itself); run it in one process")
    _ctx, device = ddp.init_from_env(device, f"{spec.path}: [run] device")
    bundle: DatasetBundle = spec.dataset.build()
    check_split(spec, parts, plugins.registries, len(bundle.train),  # type: ignore[arg-type]
                (bundle.in_channels, bundle.image_size, bundle.image_size))
    if spec.data.loader == "device":  # a dataset that cannot be held in memory: say so now
        choose_loader("device", bundle.train, device, where=f"{spec.path}: [data] loader", name=spec.data.dataset)
    return Prepared(spec, plugins, device, space, selector, stages, bundle, strategy,
                    parts.stage_spaces, parts.stage_space_keys)


def run_search(prepared: Prepared, run_dir: Path, reporter: Any = None, resume: bool = False) -> dict[str, Any]:
    """Run the whole search a prepared spec describes into ``run_dir``; returns the summary.

    With ``resume`` the search continues from ``run_dir``'s checkpoint and ends with the same
    genotype and metrics as an uninterrupted run (on CPU, bit for bit). The strategy decides
    how (:meth:`nasreg._core.strategy.Strategy.run_search`).
    """
    threads = torch.get_num_threads()
    try:
        with attached_loggers(prepared.plugins, prepared.spec.loggers, reporter):  # [run] loggers, for this run
            return prepared.strategy.run_search(SearchJob(prepared, run_dir, reporter or QuietReporter(), resume))
    except (Interrupted, RunDirError):
        # A stop (the checkpoint says where to continue), or a fault of the run directory itself
        # (a resume refused, a full disk): nothing more is written into it.
        raise
    except Exception as exc:
        if ddp.current().is_main:
            record_failure(prepared, run_dir, exc)
        raise
    finally:
        torch.set_num_threads(threads)


def record_failure(prepared: Prepared, run_dir: Path, exc: BaseException) -> None:
    """``summary.json`` of a search that failed: ``"status": "failed"`` and the one-line reason
    (a summary without a genotype; ``nasreg resume`` continues such a run from its last
    checkpoint, ``nasreg show`` says why it failed). Never raises: the failure is what counts."""
    error = str(exc) if isinstance(exc, NasregError) else f"{type(exc).__name__}: {exc}"
    summary = {**_summary_head(prepared.spec, prepared, run_dir), "status": "failed",
               "error": " ".join(error.split())[:2000]}
    try:
        files = RunDir(run_dir)
        if files.exists(rd.SPEC_FILE):  # nothing of the run was written: nothing to mark
            files.write_json(rd.SUMMARY_FILE, summary)
    except (OSError, NasregError):
        pass


@dataclass
class SearchJob:
    """One search to run, handed to :meth:`nasreg._core.strategy.Strategy.run_search`: the prepared
    spec, the run directory, the progress reporter and whether to resume. Its methods are the
    core's engines; a strategy calls the one it needs."""

    prepared: Prepared
    run_dir: Path
    reporter: Any
    resume: bool = False

    def train_supernet(self) -> dict[str, Any]:
        """The core's supernet search (stages, epochs, steps, checkpoints); returns the summary."""
        with _StopRequests() as stop:
            return _Search(self.prepared, self.run_dir, self.reporter, stop).run(self.resume)

    def sample(self) -> dict[str, Any]:
        """A sampling strategy's search: it trains its own children and returns the genotype."""
        return _run_sampling(self.prepared, self.run_dir, self.reporter, self.resume)


def _start_run(spec: Spec, p: Prepared, run_dir: Path) -> Run:
    """Threads, determinism and seeds as the spec says; the :class:`Run` handed to plugins."""
    torch.set_num_threads(run_threads(spec.run.threads))  # 0: the free cores
    configure_determinism(spec.run.deterministic, p.device)
    seed_everything(spec.run.seed)
    return Run(spec=spec, plugins=p.plugins, run_dir=run_dir, device=p.device, space=p.space)


def _summary_head(spec: Spec, p: Prepared, run_dir: Path) -> dict[str, Any]:
    """The summary fields every search has, in their order."""
    return {"name": spec.run.name, "run_dir": str(run_dir), "spec_hash": spec.digest(),
            "device": str(p.device), "deterministic": spec.run.deterministic, "seed": spec.run.seed}


def _run_sampling(prepared: Prepared, run_dir: Path, reporter: Any, resume: bool = False) -> dict[str, Any]:
    """Seed, write the spec, let a fresh strategy search, write the genotype and the summary."""
    spec, p = prepared.spec, prepared
    t_start = time.perf_counter()
    run, files = _start_run(spec, p, run_dir), RunDir(run_dir)
    if not resume:  # a resumed run keeps its spec.toml: it is what the journal is checked against
        files.write_toml(rd.SPEC_FILE, spec.resolved())
    notify(p.plugins, "on_run_start", reporter, run=run)
    out = build_strategy(spec).search(run, p.bundle, reporter)
    extra = dict(out) if isinstance(out, dict) else {"genotype": out}
    genotype: Genotype = extra.pop("genotype")
    _save_genotype(genotype, files)
    summary = {
        **_summary_head(spec, p, run_dir),
        "wall_seconds": time.perf_counter() - t_start, "peak_memory_mb": peak_memory_mb(p.device),
        "stages": [], **extra, "genotype": genotype.to_dict(), "status": "finished",
    }
    files.write_json(rd.SUMMARY_FILE, summary)
    notify(p.plugins, "on_run_end", reporter, run=run, genotype=genotype, summary=summary)
    return summary


_StopRequests = StopRequests  # the one stop-request mechanism (nasreg._core.stop), shared with the trainer


def _save_genotype(genotype: Genotype, files: RunDir) -> None:
    """Write the genotype found, if it is one nasreg can read back; else the search failed."""
    try:
        genotype.save(files.genotype)
    except GenotypeError as exc:
        why = str(exc).split(": ", 1)[-1]
        raise GenotypeError(f"the search derived a genotype nasreg cannot use: {why} (not written; the "
                            "selector's derive() made it)") from None


def _loader_states(train: DataLoader, val: DataLoader) -> dict[str, torch.Tensor]:
    return {"train": train.generator.get_state(), "val": val.generator.get_state()}


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))


# --- the supernet search: typed state, then the engine's stage / epoch / step methods ----------


@dataclass
class _StageState:
    """What the current stage has recorded so far; checkpointed as ``stage_state`` (same keys)."""

    grad_history: dict[str, Any] = field(default_factory=dict)   # [cell type][edge][op] -> per joint epoch
    alpha_history: dict[str, Any] = field(default_factory=dict)  # same shape: softmax per joint epoch
    epoch_seconds: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    #: [search] monitor: the joint epochs' eigenvalues ("eigenvalues") and, once the early stop
    #: fired, "stopped" ({"epoch", "reason", "alphas_epoch"}: stages.json's stopped_early).
    monitor: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"grad_history": self.grad_history, "alpha_history": self.alpha_history,
                "epoch_seconds": self.epoch_seconds, "step_times": self.step_times, "monitor": self.monitor}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "_StageState":
        return cls(d["grad_history"], d["alpha_history"], d["epoch_seconds"], d["step_times"], d.get("monitor") or {})

    def stopped_early(self) -> dict[str, Any] | None:
        return self.monitor.get("stopped")


@dataclass
class _ResumePoint:
    """The parts of a checkpoint the resumed stage restores once its objects exist."""

    model: dict[str, Any]
    strategy: dict[str, Any]
    recorder: dict[str, Any]
    loader_states: dict[str, torch.Tensor]
    rng: dict[str, Any]
    #: The stage plan and steps per epoch the checkpoint was written with (None: an older nasreg).
    plan: dict[str, Any] | None = None
    #: Written by an older nasreg, without the spec digest (its spec cannot be checked).
    legacy: bool = False


@dataclass
class SearchState:
    """Where a supernet search is and what it has produced: what a checkpoint holds.

    ``stage`` / ``epoch`` / ``step`` is the position the loop continues from (``step`` > 0 only
    when resuming mid-epoch); ``running`` the current epoch's (loss sum, correct, count) up to
    there."""

    candidates: Candidates
    stage: int = 0
    epoch: int = 0
    step: int = 0
    stage_infos: list[dict[str, Any]] = field(default_factory=list)
    gradients: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0                      # seconds the run had taken before this process
    records: _StageState = field(default_factory=_StageState)
    running: tuple[float, int, int] | None = None
    loader: str | None = None                 # the loader kind ("device" | "dataloader")
    resume: _ResumePoint | None = None        # a checkpoint's objects, until the stage restores them
    t_start: float = 0.0                      # perf_counter() at the run's (virtual) start
    result: StageResult | None = None         # the last finished stage's
    previous: Supernet | None = None          # the last finished stage's supernet
    last_metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Stage:
    """The live objects of the stage being trained."""

    index: int
    warmup: int
    epochs: int
    model: Supernet
    strategy: SearchStrategy
    recorder: _Recorder
    monitor: CollapseMonitor | None = None   # [search] monitor


def _report(reporter: Any, event: str, *args: Any, **kwargs: Any) -> None:
    """Call a reporter event that a reporter written before it existed may lack (``run_plan``,
    ``stage_summary``: a duck-typed reporter need not subclass :class:`nasreg.Reporter`)."""
    method = getattr(reporter, event, None)
    if method is not None:
        method(*args, **kwargs)


class _Search:
    """One supernet search: the stage/epoch/step loop with checkpoints at epoch ends and on stop."""

    def __init__(self, prepared: Prepared, run_dir: Path, reporter: Any, stop: _StopRequests):
        self.p, self.run_dir, self.reporter, self.stop = prepared, run_dir, reporter, stop
        self.spec = prepared.spec
        self.files = RunDir(run_dir)
        self.ckpt_path, self.metrics_path = self.files.checkpoint, self.files.metrics
        self.main = ddp.current().is_main

    def run(self, resume: bool) -> dict[str, Any]:
        """The whole search: a fresh start or the checkpoint's state, every stage, the genotype."""
        self.run_ctx = _start_run(self.spec, self.p, self.run_dir)
        state = self._resume() if resume else None
        if state is None:
            self.files.write_toml(rd.SPEC_FILE, self.spec.resolved())
            state = SearchState(candidates=self.p.space.full_candidates())
        self.train_loader, self.val_loader = make_loaders(self.spec, self.p.bundle, self.p.device, state.loader)
        state.loader = "device" if isinstance(self.train_loader, DeviceLoader) else "dataloader"
        self.steps = min(len(self.train_loader), len(self.val_loader))
        state.t_start = time.perf_counter() - state.elapsed
        _report(self.reporter, "run_plan", stages=[(w, e, self.steps) for w, e in self.p.stages],
                start=(state.stage, state.epoch, state.step))
        if self.main:
            notify(self.p.plugins, "on_run_start", self.reporter, run=self.run_ctx)
        while state.stage < len(self.p.stages):
            self._run_stage(state)
        return self._finish(state)

    # -- resume -----------------------------------------------------------------------------------

    def _resume(self) -> SearchState | None:
        """The state the run directory's checkpoint holds, checked against the spec (its digest,
        keys, types, stage plan and position: :mod:`nasreg._core.resumecheck`), or None when the run
        stopped before its first checkpoint (then it starts afresh). Nothing in the run directory
        changes here: the metrics after the checkpoint are dropped once the stage is restored.

        Rank 0 reads the run directory; the other ranks (torchrun) get what it read and check it
        too (the same checks, so every rank refuses alike)."""
        if not ddp.broadcast_object(self.ckpt_path.exists() if self.main else None):
            if self.main:
                self.reporter.message(f"{self.run_dir}: no checkpoint yet; starting the run from the beginning")
                self.metrics_path.unlink(missing_ok=True)
            return None
        ckpt = ddp.broadcast_object(checkpoint.load(self.ckpt_path) if self.main else None)
        resumecheck.check_checkpoint(ckpt, self.ckpt_path, self.spec, self.p.stages, self.p.space.full_candidates())
        return SearchState(
            candidates=ckpt["candidates"], stage=ckpt["stage"], epoch=ckpt["epoch"], step=ckpt["step"],
            stage_infos=ckpt["stage_infos"], gradients=ckpt["gradients"], elapsed=float(ckpt["elapsed"]),
            records=_StageState.from_dict(ckpt["stage_state"]), running=ckpt["accum"], loader=ckpt.get("loader"),
            resume=_ResumePoint(ckpt["model"], ckpt["strategy"], ckpt["recorder"], ckpt["loader_states"],
                                ckpt["rng"], plan=ckpt.get("plan"), legacy=ckpt.get("spec_digest") is None))

    def _restore(self, state: SearchState, stage: _Stage) -> None:
        """Load the checkpoint's model, strategy, recorder and data order into the new stage (a
        step outside the epoch, or a state that does not fit the supernet or the strategy the spec
        builds, is refused first); then drop the metrics written after the checkpoint."""
        point, path = state.resume, self.ckpt_path
        assert point is not None
        resumecheck.check_step(state.step, self.steps, point.plan, path)
        resumecheck.check_fits(path, "model", stage.model.state_dict(), point.model,
                               f"the supernet {self.spec.path} builds")
        arch_size = sum(a.numel() for a in stage.model.arch_parameters())
        acc = point.recorder["acc"]
        if acc is not None and acc.numel() != arch_size:
            raise resumecheck.ResumeRefused(f"{path}: 'recorder' holds {acc.numel()} architecture gradients, "
                                            f"the supernet has {arch_size}; resume refuses")
        resumecheck.load_state(path, "model", lambda: stage.model.load_state_dict(point.model))
        resumecheck.load_state(path, "strategy", lambda: stage.strategy.load_state_dict(point.strategy))
        rec = stage.recorder
        rec.acc, rec.count = (acc.to(self.p.device) if acc is not None else None), point.recorder["count"]
        # Data order: at an epoch end these are the next epoch's start; mid-epoch, the current
        # epoch's start (its batches up to the stop are replayed by _batches).
        self.train_loader.generator.set_state(point.loader_states["train"])
        self.val_loader.generator.set_state(point.loader_states["val"])
        if not state.step:
            checkpoint.restore_rng(point.rng)
        if self.main:
            done = (state.stage, state.epoch)
            kept = [m for m in self.files.read_jsonl(rd.METRICS_FILE)
                    if (m.get("stage", -1), m.get("epoch", -1)) < done]
            self.files.write_jsonl(rd.METRICS_FILE, kept)
            if point.legacy:
                self.reporter.message(f"{path}: written by an older nasreg (no spec digest): spec.toml is not "
                                      "checked against it, only its shapes")
        self.reporter.message(f"resuming {self.run_dir} at stage {state.stage}, epoch {state.epoch}"
                              + (f", step {state.step}" if state.step else ""))

    # -- stages -----------------------------------------------------------------------------------

    def _run_stage(self, state: SearchState) -> None:
        """Build the stage's supernet and strategy, train its remaining epochs, finish it."""
        stage = self._build_stage(state)
        stage.monitor = self._monitor(stage)
        self.reporter.stage_start(stage.index, stage.epochs, self.steps, stage.model.num_weights())
        if self.p.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.p.device)
        while state.epoch < stage.epochs and not state.records.stopped_early():
            self._run_epoch(state, stage)
        self._finish_stage(state, stage)

    def _build_stage(self, state: SearchState) -> _Stage:
        """A fresh supernet of the stage's search space (:meth:`Prepared.stage_space`) over the
        stage's candidates (weights inherited when the selector asks), the same on every rank, and
        a fresh strategy set up on it; a resume point restored."""
        p, index = self.p, state.stage
        warmup, epochs = p.stages[index]
        model = p.stage_space(index).build_supernet(state.candidates, ops=p.plugins.registries.operations,
                                                    in_channels=p.bundle.in_channels,
                                                    num_classes=p.bundle.num_classes)
        if state.previous is not None and getattr(p.selector, "inherit_weights", False):
            inherit(model, state.previous)
        model = model.to(p.device)
        if ddp.current().enabled:  # one model on every rank: global-batch BatchNorm, rank 0's weights
            ddp.sync_batch_norm_(model)
            ddp.broadcast_module_(model)
        strategy = build_strategy(self.spec)
        strategy.setup(model, epochs=epochs, steps_per_epoch=self.steps)
        stage = _Stage(index, warmup, epochs, model, strategy, _Recorder(model, self.spec.search.grad_stat))
        if state.resume is not None:
            self._restore(state, stage)
        return stage

    def _monitor(self, stage: _Stage) -> CollapseMonitor | None:
        """``[search] monitor``: the stage's collapse monitor over its fixed validation batch."""
        search = self.spec.search
        if not search.monitor:
            return None
        CollapseMonitor.check(stage.model, f"{self.spec.path}: [search] monitor")
        _train, val = split_train_val(self.p.bundle, self.spec.data.train_portion, self.spec.run.seed, self.spec.data.limit)
        batch = fixed_batch(val, self.spec.data.batch_size, self.spec.run.seed + 3 + stage.index)
        return CollapseMonitor(batch, iterations=search.monitor_iterations, tol=search.monitor_tol,
                               batch_norm_stats=search.eval_batch_norm == "batch", space=self.p.space,
                               operations=self.p.plugins.registries.operations, zero_ops=self.run_ctx.zero_ops(),
                               seed=self.spec.run.seed)

    def _monitor_epoch(self, state: SearchState, stage: _Stage, joint: bool) -> dict[str, Any]:
        """The monitor's figures of the epoch; on a joint epoch with ``monitor_early_stop``, the
        DARTS-ES rule (:func:`nasreg._core.monitor.early_stop_fires`), recorded when it fires."""
        if stage.monitor is None:
            return {}
        t = time.perf_counter()
        figures = stage.monitor.measure(stage.model, self.p.device)
        figures["monitor_seconds"] = time.perf_counter() - t
        search, mon = self.spec.search, state.records.monitor
        if joint:
            mon.setdefault("eigenvalues", []).append(figures["hessian_max_eig"])
            eig = mon["eigenvalues"]
            if search.monitor_early_stop and early_stop_fires(eig, search.monitor_window, search.monitor_ratio):
                w = search.monitor_window
                recent, before = sum(eig[-w:]) / w, sum(eig[-2 * w:-w]) / w
                mon["stopped"] = {
                    "epoch": state.epoch, "alphas_epoch": state.epoch - w,
                    "reason": f"dominant Hessian eigenvalue: mean {recent:.4g} over the last {w} joint epochs is "
                              f"{recent / before:.3g} x the mean {before:.4g} of the {w} before "
                              f"(monitor_ratio {search.monitor_ratio:g})"}
        return figures

    def _finish_stage(self, state: SearchState, stage: _Stage) -> None:
        """Record the stage (stages.json, gradients.json, hooks), ask the selector for the next
        stage's candidates and move the state to the next stage."""
        state.resume = None
        result = self._stage_result(state, stage)
        self._record_stage(state, stage, result)
        self.reporter.stage_end(stage.index)
        if self.main:
            notify(self.p.plugins, "on_stage_end", self.reporter, run=self.run_ctx, stage=stage.index, result=result)
        more = stage.index + 1 < len(self.p.stages)
        if more:
            # Every rank asks its selector (it may keep state); rank 0's answer is used.
            state.candidates = ddp.broadcast_object(self.p.selector.next_candidates(result, self.run_ctx))
        _report(self.reporter, "stage_summary", {
            "stage": stage.index, "stages": len(self.p.stages), "epochs": stage.epochs,
            "warmup_epochs": stage.warmup, "num_weights": result.num_weights,
            "candidate_ops": state.stage_infos[stage.index]["num_candidate_ops"],
            "kept_ops": sum(len(c) for e in state.candidates.values() for c in e) if more else None,
            "seconds": sum(result.epoch_seconds)})
        state.result, state.previous = result, stage.model
        if ddp.agree(self.stop.requested) and more:
            raise Interrupted(f"interrupted after stage {stage.index}; checkpoint written; "
                              f"continue with: nasreg resume {self.run_dir}")
        state.stage, state.epoch, state.step = stage.index + 1, 0, 0
        state.records, state.running = _StageState(), None

    def _stage_result(self, state: SearchState, stage: _Stage) -> StageResult:
        """What the selector gets from a finished stage."""
        rec, step_times = state.records, state.records.step_times
        return StageResult(stage=stage.index, candidates=state.candidates, edges=self.p.space.edges(),
                           alphas=self._stage_alphas(state, stage), grad_history=rec.grad_history,
                           alpha_history=rec.alpha_history, num_weights=stage.model.num_weights(),
                           epoch_seconds=rec.epoch_seconds,
                           step_seconds=float(np.median(step_times)) if step_times else 0.0)

    def _stage_alphas(self, state: SearchState, stage: _Stage) -> dict[str, list[list[float]]]:
        """The stage's final alphas; after an early stop, those recorded ``monitor_window`` joint
        epochs before the stop (the alpha history's entry of that epoch)."""
        stopped = state.records.stopped_early()
        if not stopped:
            return stage.model.alpha_softmax()
        back = self.spec.search.monitor_window + 1  # the stop epoch is the history's last entry
        return {ct: [[ops[-back] for ops in edge] for edge in edges]
                for ct, edges in state.records.alpha_history.items()}

    def _record_stage(self, state: SearchState, stage: _Stage, result: StageResult) -> None:
        """The stage's entries in ``stages.json`` and ``gradients.json`` (replacing a resumed one's)."""
        i, cands, rec = stage.index, state.candidates, state.records
        state.stage_infos = [*state.stage_infos[:i], {
            "stage": i, "candidates": cands, "space_keys": self.p.space_keys(i), "num_weights": result.num_weights,
            "num_candidate_ops": sum(len(c) for e in cands.values() for c in e),
            "warmup_epochs": stage.warmup, "epochs": stage.epochs,
            "epoch_seconds": rec.epoch_seconds, "step_seconds": result.step_seconds,
            **({"stopped_early": rec.stopped_early()} if rec.stopped_early() else {})}]
        state.gradients = [*state.gradients[:i], {"stage": i, "candidates": cands, "grad_history": rec.grad_history,
                                                  "alpha_history": rec.alpha_history}]
        self.files.write_json(rd.STAGES_FILE, state.stage_infos)
        self.files.write_json(rd.GRADIENTS_FILE, {"stat": self.spec.search.grad_stat, "stages": state.gradients})

    # -- epochs and steps -------------------------------------------------------------------------

    def _run_epoch(self, state: SearchState, stage: _Stage) -> None:
        """Train one epoch from ``state.step`` on, then validate, log and checkpoint it."""
        joint = state.epoch >= stage.warmup
        loader_states = _loader_states(self.train_loader, self.val_loader)
        t_epoch = time.perf_counter()
        if state.running is None:
            state.running = (0.0, 0, 0)
        batches = self._batches(state)
        stage.model.start_epoch(state.epoch, stage.epochs, stage.warmup)
        stage.model.train()
        for i, (train_batch, val_batch) in enumerate(batches, start=state.step):
            self._step(state, stage, i, train_batch, val_batch, joint=joint, loader_states=loader_states)
        state.step = 0
        self._end_epoch(state, stage, joint=joint, t_epoch=t_epoch)

    def _batches(self, state: SearchState) -> Iterator[tuple[Any, Any]]:
        """The epoch's (train, val) batch pairs; resuming mid-epoch, the data order is replayed up
        to the stop point and then the RNG restored to what it was there."""
        batches = zip(self.train_loader, self.val_loader)
        if state.step:
            for _ in range(state.step):
                next(batches)
            checkpoint.restore_rng(state.resume.rng)  # type: ignore[union-attr]
        return batches

    def _step(self, state: SearchState, stage: _Stage, i: int, train_batch: Any, val_batch: Any, *,
              joint: bool, loader_states: dict[str, torch.Tensor]) -> None:
        """One strategy step on a batch pair; the global batch's figures; a stop at this step."""
        t_step = time.perf_counter()
        xt, yt = (t.to(self.p.device, non_blocking=True) for t in train_batch)
        xv, yv = (t.to(self.p.device, non_blocking=True) for t in val_batch)
        out = stage.strategy.step((xt, yt), (xv, yv), update_alpha=joint)
        if joint:
            stage.recorder.add()
        n = int(out.get("train_count", yt.numel()))
        # The global batch's figures, and a stop request every rank agrees on (torchrun).
        loss_n, n_correct, n, stops = ddp.all_sum(
            [float(out["train_loss"]) * n, int(out["train_correct"]), n, self.stop.requested])
        loss, stop_now = loss_n / max(n, 1), stops > 0
        if not _finite(loss):
            raise self._diverged(f"loss is {loss} at stage {stage.index}, epoch {state.epoch}, step {i}", stage)
        loss_sum, correct, count = state.running  # type: ignore[misc]
        state.running = (loss_sum + loss_n, correct + int(n_correct), count + int(n))
        state.records.step_times.append(time.perf_counter() - t_step)
        self.reporter.step(i + 1, {**out, "train_loss": loss})
        if stop_now and i + 1 < self.steps:
            state.step = i + 1
            self._save(state, stage, loader_states, state.running)
            raise Interrupted(f"interrupted at stage {stage.index}, epoch {state.epoch}, step {i + 1}; "
                              f"checkpoint written; continue with: nasreg resume {self.run_dir}")

    def _end_epoch(self, state: SearchState, stage: _Stage, *, joint: bool, t_epoch: float) -> None:
        """Validate, record, log and hand the epoch's metrics to the hooks; checkpoint when due;
        stop here when asked."""
        metrics = self._validate_epoch(state, stage, joint=joint, t_epoch=t_epoch)
        state.last_metrics = metrics
        self.files.append_jsonl(rd.METRICS_FILE, metrics)
        self.reporter.epoch_end(metrics)
        epoch = state.epoch
        if self.main:
            notify(self.p.plugins, "on_epoch_end", self.reporter, run=self.run_ctx, stage=stage.index,
                   epoch=epoch, metrics=metrics)
        last_epoch = epoch + 1 == stage.epochs or bool(state.records.stopped_early())
        stop_now = ddp.agree(self.stop.requested)
        state.epoch, state.running = epoch + 1, None
        if (epoch + 1) % self.spec.run.checkpoint_every == 0 or last_epoch or stop_now:
            self._save(state, stage, _loader_states(self.train_loader, self.val_loader), None)
        if stop_now and not last_epoch:
            raise Interrupted(f"interrupted after stage {stage.index}, epoch {epoch}; checkpoint written; "
                              f"continue with: nasreg resume {self.run_dir}")

    def _validate_epoch(self, state: SearchState, stage: _Stage, *, joint: bool, t_epoch: float) -> dict[str, Any]:
        """Close the epoch (schedules, validation, gradient and alpha histories); its metrics."""
        lr = stage.strategy.current_lr()  # the rate this epoch trained at (end_epoch advances it)
        stage.strategy.end_epoch()
        val_loss, val_acc = evaluate(stage.model, self.val_loader, self.p.device,
                                     self.spec.search.eval_batch_norm == "batch")
        epoch_time = time.perf_counter() - t_epoch
        state.records.epoch_seconds.append(epoch_time)
        alphas = stage.model.alpha_softmax()
        if joint:
            grads = stage.recorder.epoch_value()
            if grads is not None:
                _append_history(state.records.grad_history, grads)
            _append_history(state.records.alpha_history, alphas)
        if not _finite(val_loss):
            raise self._diverged(f"validation loss is {val_loss} after stage {stage.index}, epoch {state.epoch}", stage)
        loss_sum, correct, count = state.running  # type: ignore[misc]
        return {
            "stage": stage.index, "epoch": state.epoch, "joint": joint,
            "train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1),
            "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
            "epoch_seconds": epoch_time, "wall_seconds": time.perf_counter() - state.t_start,
            "peak_memory_mb": peak_memory_mb(self.p.device), "alphas": alphas,
            **self._monitor_epoch(state, stage, joint),
        }

    # -- the end ----------------------------------------------------------------------------------

    def _finish(self, state: SearchState) -> dict[str, Any]:
        """Derive and save the genotype; write the summary; the run-end hook."""
        assert state.result is not None
        genotype: Genotype = ddp.broadcast_object(self.p.selector.derive(state.result, self.run_ctx))
        _save_genotype(genotype, self.files)
        last = state.last_metrics
        if not last:
            done = self.files.read_jsonl(rd.METRICS_FILE)
            last = done[-1] if done else {}
        summary = {
            **_summary_head(self.spec, self.p, self.run_dir), "loader": state.loader,
            "final_val_acc": last.get("val_acc"), "final_val_loss": last.get("val_loss"),
            "wall_seconds": time.perf_counter() - state.t_start, "peak_memory_mb": peak_memory_mb(self.p.device),
            "stages": [{k: v for k, v in s.items() if k != "candidates"} for s in state.stage_infos],
            "genotype": genotype.to_dict(), "status": "finished",
        }
        if ddp.current().enabled:
            summary["world_size"] = ddp.current().world_size
        self.files.write_json(rd.SUMMARY_FILE, summary)
        if self.main:
            notify(self.p.plugins, "on_run_end", self.reporter, run=self.run_ctx, genotype=genotype, summary=summary)
        return summary

    def _diverged(self, what: str, stage: _Stage) -> DivergenceError:
        """The divergence error: what became non-finite, where the last good checkpoint is, and the
        strategy's hint, if it has one."""
        hint = stage.strategy.divergence_hint()
        return DivergenceError(f"training diverged: {what}; {self._last_good()}" + (f"; {hint}" if hint else ""))

    def _last_good(self) -> str:
        if self.ckpt_path.exists():
            return f"the last good checkpoint {self.ckpt_path} is intact (nasreg resume {self.run_dir})"
        return f"no checkpoint had been written yet in {self.run_dir}"

    def _save(self, state: SearchState, stage: _Stage, loader_states: dict[str, torch.Tensor],
              accum: tuple[float, int, int] | None) -> None:
        """Checkpoint the state at its position (under torchrun only rank 0 writes)."""
        if not self.main:
            return
        rec = stage.recorder
        state_dict = {
            "stage": state.stage, "epoch": state.epoch, "step": state.step, "candidates": state.candidates,
            "model": stage.model.state_dict(), "strategy": stage.strategy.state_dict(),
            "stage_state": state.records.to_dict(),
            "recorder": {"acc": rec.acc.cpu() if rec.acc is not None else None, "count": rec.count},
            "loader_states": loader_states, "accum": accum, "stage_infos": state.stage_infos,
            "gradients": state.gradients, "elapsed": time.perf_counter() - state.t_start, "loader": state.loader,
            # What it belongs to: resume refuses a checkpoint whose spec or plan differ.
            **resumecheck.identity(self.spec, self.p.stages, self.steps),
        }
        checkpoint.save(self.ckpt_path, state_dict)  # with the RNG states
