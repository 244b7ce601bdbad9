"""The epoch loop shared by every gradient-based strategy and every stage.

A search is a sequence of stages (as many as the selector asks for). Each stage builds a fresh
supernet over its per-edge candidate sets, trains it with the strategy (warm-up epochs with the
architecture frozen, then joint epochs), records the architecture gradients and weights per epoch,
and hands a :class:`~nasreg.selector.StageResult` to the selector, which picks the next stage's
candidates or derives the genotype.
"""

from __future__ import annotations

import json
import random
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import checkpoint
from . import distributed as ddp
from . import rundir as rd
from .data import DatasetBundle, split_train_val
from .device_loader import DeviceLoader, build_device_loader, choose as choose_loader
from .errors import NasregError, SpecError
from .genotype import Genotype
from .plugins import Plugins
from .progress import QuietReporter
from .run import Run
from .selector import StageResult
from .strategy import SamplingStrategy
from .spec import Spec, check_stages
from .supernet import SearchSpace, Supernet


class DivergenceError(NasregError):
    """The loss became NaN or infinite."""


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    """Call a lifecycle hook on every plugin separately; a failing observer is reported, never fatal."""
    caller = getattr(plugins.hook, hook_name)
    for impl in caller.get_hookimpls():
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
    seed; under torchrun every rank gets its slice of each global batch (:mod:`nasreg.distributed`).

    ``kind`` ("device" | "dataloader") overrides ``[data] loader`` (a resumed run keeps the kind
    its checkpoint was written with: the two draw different random streams)."""
    train, val = split_train_val(bundle, spec.data.train_portion, spec.run.seed, spec.data.limit)
    ctx = ddp.current()
    where, name = f"{spec.path}: [data] loader", spec.data.dataset
    value = kind or spec.data.loader
    use_device = all(choose_loader(value, ds, device, where=where, name=name) for ds in (train, val))
    if ddp.broadcast_object(use_device):  # "auto" looks at free memory: rank 0 decides for all
        # The whole split on the device; batches made (and, for train, augmented) there.
        kw = dict(batch_size=spec.data.batch_size, device=device, rank=ctx.rank, world_size=ctx.world_size,
                  drop_last=False, shuffle=True)
        return (build_device_loader(train, generator=torch.Generator().manual_seed(spec.run.seed + 1),
                                    train=True, **kw),
                build_device_loader(val, generator=torch.Generator().manual_seed(spec.run.seed + 2),
                                    train=False, **kw))
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
                                      drop_last=False, **common))
    return loaders[0], loaders[1]


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device,
             batch_norm_stats: bool = True) -> tuple[float, float]:
    """Mean loss and accuracy over ``loader`` in eval mode (no drop path).

    With ``batch_norm_stats`` batch-norm layers normalize with each batch's statistics instead
    of their running averages (left untouched): a supernet trained for a few hundred steps has
    running averages far from its weights' current statistics, which makes eval-mode accuracy of
    short searches meaningless. ``[search] eval_batch_norm = "running"`` restores plain eval mode.
    """
    model.eval()
    saved = []
    if batch_norm_stats:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                saved.append((m, m.momentum))
                m.train()
                m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += y.numel()
    for m, momentum in saved:
        m.momentum = momentum
    model.train()
    loss_sum, correct, count = ddp.all_sum([loss_sum, correct, count])  # every rank's share (torchrun)
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


def prepare(spec: Spec, plugins: Plugins) -> Prepared:
    """Pick the device, build the space, selector and dataset: every check that can fail on the
    user's input happens here, before a run directory exists."""
    device = pick_device(spec.run.device, f"{spec.path}: [run] device")
    space: SearchSpace = spec.search_space.build()
    selector = spec.selector.build() if spec.selector is not None else None
    strategy = spec.strategy.build()
    if isinstance(strategy, SamplingStrategy) and ddp.env_world_size() > 1:
        raise SpecError(f"{spec.path}: [strategy] name: {spec.strategy.name!r} samples and trains child "
                        "networks itself and cannot run under torchrun; run it in one process")
    _ctx, device = ddp.init_from_env(device, f"{spec.path}: [run] device")
    if not isinstance(strategy, SamplingStrategy) and selector is None:
        raise SpecError(f"{spec.path}: [selector] name: missing required key (strategy "
                        f"{spec.strategy.name!r} derives the genotype through a selector, e.g. 'argmax')")
    stages = check_stages(spec, selector)
    bundle: DatasetBundle = spec.dataset.build()
    if spec.data.loader == "device":  # a dataset that cannot be held in memory: say so now
        choose_loader("device", bundle.train, device, where=f"{spec.path}: [data] loader", name=spec.data.dataset)
    return Prepared(spec, plugins, device, space, selector, stages, bundle)


def run_search(prepared: Prepared, run_dir: Path, reporter: Any = None, resume: bool = False) -> dict[str, Any]:
    """Run the whole search a prepared spec describes into ``run_dir``; returns the summary.

    With ``resume`` the search continues from ``run_dir``'s checkpoint and ends with the same
    genotype and metrics as an uninterrupted run (on CPU, bit for bit).
    """
    threads = torch.get_num_threads()
    try:
        if isinstance(prepared.spec.strategy.build(), SamplingStrategy):
            return _run_sampling(prepared, run_dir, reporter or QuietReporter())
        with _StopRequests() as stop:
            return _Search(prepared, run_dir, reporter or QuietReporter(), stop).run(resume)
    finally:
        torch.set_num_threads(threads)


def _run_sampling(prepared: Prepared, run_dir: Path, reporter: Any) -> dict[str, Any]:
    """A sampling strategy's search: it trains its own children and returns the genotype."""
    spec, p = prepared.spec, prepared
    t_start = time.perf_counter()
    if spec.run.threads:
        torch.set_num_threads(spec.run.threads)
    configure_determinism(spec.run.deterministic, p.device)
    seed_everything(spec.run.seed)
    run = Run(spec=spec, plugins=p.plugins, run_dir=run_dir, device=p.device, space=p.space)
    rd.write_toml(run_dir / rd.SPEC_FILE, spec.resolved())
    notify(p.plugins, "on_run_start", reporter, run=run)
    out = spec.strategy.build().search(run, p.bundle, reporter)
    extra = dict(out) if isinstance(out, dict) else {"genotype": out}
    genotype: Genotype = extra.pop("genotype")
    genotype.save(run_dir / rd.GENOTYPE_FILE)
    summary = {
        "name": spec.run.name, "run_dir": str(run_dir), "spec_hash": spec.digest(),
        "device": str(p.device), "deterministic": spec.run.deterministic, "seed": spec.run.seed,
        "wall_seconds": time.perf_counter() - t_start, "peak_memory_mb": peak_memory_mb(p.device),
        "stages": [], **extra, "genotype": genotype.to_dict(),
    }
    rd.write_json(run_dir / rd.SUMMARY_FILE, summary)
    notify(p.plugins, "on_run_end", reporter, run=run, genotype=genotype, summary=summary)
    return summary


class Interrupted(NasregError):
    """The user stopped the run (Ctrl-C or SIGTERM); a checkpoint was written."""

    exit_code = 130


class _StopRequests:
    """Turns the first Ctrl-C / SIGTERM into a request the loop honours between steps (so the
    checkpoint it writes is consistent); a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame):  # noqa: ANN001
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _loader_states(train: DataLoader, val: DataLoader) -> dict[str, torch.Tensor]:
    return {"train": train.generator.get_state(), "val": val.generator.get_state()}


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))


class _Search:
    """One search run: the stage/epoch/step loop with checkpoints at epoch ends and on stop."""

    def __init__(self, prepared: Prepared, run_dir: Path, reporter: Any, stop: _StopRequests):
        self.p, self.run_dir, self.reporter, self.stop = prepared, run_dir, reporter, stop
        self.spec = prepared.spec
        self.ckpt_path = run_dir / rd.CHECKPOINT_FILE
        self.metrics_path = run_dir / rd.METRICS_FILE

    def run(self, resume: bool) -> dict[str, Any]:
        spec, p = self.spec, self.p
        if spec.run.threads:
            torch.set_num_threads(spec.run.threads)
        configure_determinism(spec.run.deterministic, p.device)
        seed_everything(spec.run.seed)
        run = Run(spec=spec, plugins=p.plugins, run_dir=self.run_dir, device=p.device, space=p.space)

        ckpt: dict[str, Any] | None = None
        main = ddp.current().is_main
        # Rank 0 reads the run directory; the other ranks (torchrun) get what it read.
        if resume and not ddp.broadcast_object(self.ckpt_path.exists() if main else None):
            # Stopped before its first checkpoint: nothing to keep, start the same run afresh.
            if main:
                self.reporter.message(f"{self.run_dir}: no checkpoint yet; starting the run from the beginning")
                self.metrics_path.unlink(missing_ok=True)
            resume = False
        if resume:
            ckpt = ddp.broadcast_object(checkpoint.load(self.ckpt_path) if main else None)
            done = (ckpt["stage"], ckpt["epoch"])
            if main:
                kept = [m for m in rd.read_jsonl(self.metrics_path)
                        if (m.get("stage", -1), m.get("epoch", -1)) < done]
                rd.atomic_write_text(self.metrics_path, "".join(json.dumps(m) + "\n" for m in kept))
            candidates, stage_infos, gradients = ckpt["candidates"], ckpt["stage_infos"], ckpt["gradients"]
            elapsed = float(ckpt["elapsed"])
            self.reporter.message(f"resuming {self.run_dir} at stage {ckpt['stage']}, epoch {ckpt['epoch']}"
                                  + (f", step {ckpt['step']}" if ckpt["step"] else ""))
        else:
            rd.write_toml(self.run_dir / rd.SPEC_FILE, spec.resolved())
            candidates, stage_infos, gradients, elapsed = p.space.full_candidates(), [], [], 0.0
        train_loader, val_loader = make_loaders(spec, p.bundle, p.device, ckpt.get("loader") if ckpt else None)
        self.loader_kind = "device" if isinstance(train_loader, DeviceLoader) else "dataloader"
        steps = min(len(train_loader), len(val_loader))
        t_start = time.perf_counter() - elapsed
        if main:
            notify(p.plugins, "on_run_start", self.reporter, run=run)

        previous: Supernet | None = None
        result: StageResult | None = None
        last_metrics: dict[str, Any] = {}
        first_stage = ckpt["stage"] if ckpt else 0
        for stage in range(first_stage, len(p.stages)):
            warmup, epochs = p.stages[stage]
            model = p.space.build_supernet(candidates, ops=p.plugins.registries.operations,
                                           in_channels=p.bundle.in_channels, num_classes=p.bundle.num_classes)
            if previous is not None and getattr(p.selector, "inherit_weights", False):
                inherit(model, previous)
            model = model.to(p.device)
            if ddp.current().enabled:  # one model on every rank: global-batch BatchNorm, rank 0's weights
                ddp.sync_batch_norm_(model)
                ddp.broadcast_module_(model)
            strategy = spec.strategy.build()
            strategy.setup(model, epochs=epochs, steps_per_epoch=steps)
            st = {"grad_history": {}, "alpha_history": {}, "epoch_seconds": [], "step_times": []}
            start_epoch, start_step, accum = 0, 0, None
            recorder = _Recorder(model, spec.search.grad_stat)
            if ckpt is not None and stage == ckpt["stage"]:
                model.load_state_dict(ckpt["model"])
                strategy.load_state_dict(ckpt["strategy"])
                st = ckpt["stage_state"]
                start_epoch, start_step, accum = ckpt["epoch"], ckpt["step"], ckpt["accum"]
                recorder.acc, recorder.count = ckpt["recorder"]["acc"], ckpt["recorder"]["count"]
                if recorder.acc is not None:
                    recorder.acc = recorder.acc.to(p.device)
                # Data order: at an epoch end these are the next epoch's start; mid-epoch, the
                # current epoch's start (its batches up to the stop are replayed below).
                train_loader.generator.set_state(ckpt["loader_states"]["train"])
                val_loader.generator.set_state(ckpt["loader_states"]["val"])
                if not start_step:
                    checkpoint.restore_rng(ckpt["rng"])
            self.reporter.stage_start(stage, epochs, steps, model.num_weights())
            if p.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(p.device)

            for epoch in range(start_epoch, epochs):
                joint = epoch >= warmup
                loader_states = _loader_states(train_loader, val_loader)
                t_epoch = time.perf_counter()
                loss_sum, correct, count = accum if accum is not None else (0.0, 0, 0)
                accum = None
                batches = zip(train_loader, val_loader)
                if start_step:
                    for _ in range(start_step):  # replay the data order up to the stop point
                        next(batches)
                    checkpoint.restore_rng(ckpt["rng"])  # type: ignore[index]
                model.train()
                for i, (train_batch, val_batch) in enumerate(batches, start=start_step):
                    t_step = time.perf_counter()
                    xt, yt = (t.to(p.device, non_blocking=True) for t in train_batch)
                    xv, yv = (t.to(p.device, non_blocking=True) for t in val_batch)
                    out = strategy.step((xt, yt), (xv, yv), update_alpha=joint)
                    if joint:
                        recorder.add()
                    n = int(out.get("train_count", yt.numel()))
                    # The global batch's figures, and a stop request every rank agrees on (torchrun).
                    loss_n, n_correct, n, stops = ddp.all_sum(
                        [float(out["train_loss"]) * n, int(out["train_correct"]), n, self.stop.requested])
                    loss, stop_now = loss_n / max(n, 1), stops > 0
                    if not _finite(loss):
                        raise DivergenceError(
                            f"training diverged: loss is {loss} at stage {stage}, epoch {epoch}, step {i}; "
                            f"{self._last_good()}; try a lower [strategy] w_lr or alpha_lr")
                    loss_sum += loss_n
                    correct += int(n_correct)
                    count += int(n)
                    st["step_times"].append(time.perf_counter() - t_step)
                    self.reporter.step(i + 1, {**out, "train_loss": loss})
                    if stop_now and i + 1 < steps:
                        self._save(stage, epoch, i + 1, candidates, model, strategy, st, recorder,
                                   loader_states, (loss_sum, correct, count), stage_infos, gradients, t_start)
                        raise Interrupted(
                            f"interrupted at stage {stage}, epoch {epoch}, step {i + 1}; checkpoint written; "
                            f"continue with: nasreg resume {self.run_dir}")
                start_step = 0
                lr = strategy.current_lr()  # the rate this epoch trained at (end_epoch advances it)
                strategy.end_epoch()
                val_loss, val_acc = evaluate(model, val_loader, p.device, spec.search.eval_batch_norm == "batch")
                epoch_time = time.perf_counter() - t_epoch
                st["epoch_seconds"].append(epoch_time)
                alphas = model.alpha_softmax()
                if joint:
                    grads = recorder.epoch_value()
                    if grads is not None:
                        _append_history(st["grad_history"], grads)
                    _append_history(st["alpha_history"], alphas)
                if not _finite(val_loss):
                    raise DivergenceError(
                        f"training diverged: validation loss is {val_loss} after stage {stage}, epoch {epoch}; "
                        f"{self._last_good()}; try a lower [strategy] w_lr or alpha_lr")
                last_metrics = {
                    "stage": stage, "epoch": epoch, "joint": joint,
                    "train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1),
                    "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
                    "epoch_seconds": epoch_time, "wall_seconds": time.perf_counter() - t_start,
                    "peak_memory_mb": peak_memory_mb(p.device), "alphas": alphas,
                }
                rd.append_jsonl(self.metrics_path, last_metrics)
                self.reporter.epoch_end(last_metrics)
                if main:
                    notify(p.plugins, "on_epoch_end", self.reporter, run=run, stage=stage, epoch=epoch,
                           metrics=last_metrics)
                last_epoch = epoch + 1 == epochs
                stop_now = ddp.agree(self.stop.requested)
                if (epoch + 1) % spec.run.checkpoint_every == 0 or last_epoch or stop_now:
                    self._save(stage, epoch + 1, 0, candidates, model, strategy, st, recorder,
                               _loader_states(train_loader, val_loader), None, stage_infos, gradients, t_start)
                if stop_now and not last_epoch:
                    raise Interrupted(f"interrupted after stage {stage}, epoch {epoch}; checkpoint written; "
                                      f"continue with: nasreg resume {self.run_dir}")
            ckpt = None

            step_times = st["step_times"]
            result = StageResult(stage=stage, candidates=candidates, edges=p.space.edges(),
                                 alphas=model.alpha_softmax(), grad_history=st["grad_history"],
                                 alpha_history=st["alpha_history"], num_weights=model.num_weights(),
                                 epoch_seconds=st["epoch_seconds"],
                                 step_seconds=float(np.median(step_times)) if step_times else 0.0)
            stage_infos = [*stage_infos[:stage], {
                "stage": stage, "candidates": candidates, "num_weights": result.num_weights,
                "num_candidate_ops": sum(len(c) for e in candidates.values() for c in e),
                "warmup_epochs": warmup, "epochs": epochs,
                "epoch_seconds": st["epoch_seconds"], "step_seconds": result.step_seconds}]
            gradients = [*gradients[:stage], {"stage": stage, "candidates": candidates,
                                              "grad_history": st["grad_history"],
                                              "alpha_history": st["alpha_history"]}]
            rd.write_json(self.run_dir / rd.STAGES_FILE, stage_infos)
            rd.write_json(self.run_dir / rd.GRADIENTS_FILE, {"stat": spec.search.grad_stat, "stages": gradients})
            self.reporter.stage_end(stage)
            if main:
                notify(p.plugins, "on_stage_end", self.reporter, run=run, stage=stage, result=result)
            if stage + 1 < len(p.stages):
                # Every rank asks its selector (it may keep state); rank 0's answer is used.
                candidates = ddp.broadcast_object(p.selector.next_candidates(result, run))
            previous = model
            if ddp.agree(self.stop.requested) and stage + 1 < len(p.stages):
                raise Interrupted(f"interrupted after stage {stage}; checkpoint written; "
                                  f"continue with: nasreg resume {self.run_dir}")

        assert result is not None
        genotype: Genotype = ddp.broadcast_object(p.selector.derive(result, run))
        genotype.save(self.run_dir / rd.GENOTYPE_FILE)
        if not last_metrics:
            done = rd.read_jsonl(self.metrics_path)
            last_metrics = done[-1] if done else {}
        summary = {
            "name": spec.run.name, "run_dir": str(self.run_dir), "spec_hash": spec.digest(),
            "device": str(p.device), "deterministic": spec.run.deterministic, "seed": spec.run.seed,
            "loader": self.loader_kind,
            "final_val_acc": last_metrics.get("val_acc"), "final_val_loss": last_metrics.get("val_loss"),
            "wall_seconds": time.perf_counter() - t_start, "peak_memory_mb": peak_memory_mb(p.device),
            "stages": [{k: v for k, v in s.items() if k != "candidates"} for s in stage_infos],
            "genotype": genotype.to_dict(),
        }
        if ddp.current().enabled:
            summary["world_size"] = ddp.current().world_size
        rd.write_json(self.run_dir / rd.SUMMARY_FILE, summary)
        if main:
            notify(p.plugins, "on_run_end", self.reporter, run=run, genotype=genotype, summary=summary)
        return summary

    def _last_good(self) -> str:
        if self.ckpt_path.exists():
            return f"the last good checkpoint {self.ckpt_path} is intact (nasreg resume {self.run_dir})"
        return f"no checkpoint had been written yet in {self.run_dir}"

    def _save(self, stage, epoch, step, candidates, model, strategy, st, recorder, loader_states, accum,
              stage_infos, gradients, t_start) -> None:
        if not ddp.current().is_main:  # under torchrun only rank 0 writes the checkpoint
            return
        checkpoint.save(self.ckpt_path, {
            "stage": stage, "epoch": epoch, "step": step, "candidates": candidates,
            "model": model.state_dict(), "strategy": strategy.state_dict(), "stage_state": st,
            "recorder": {"acc": recorder.acc.cpu() if recorder.acc is not None else None,
                         "count": recorder.count},
            "loader_states": loader_states, "accum": accum, "stage_infos": stage_infos,
            "gradients": gradients, "elapsed": time.perf_counter() - t_start, "loader": self.loader_kind,
        })
