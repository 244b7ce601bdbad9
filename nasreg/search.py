"""The epoch loop shared by every gradient-based strategy and every stage.

A search is a sequence of stages (as many as the selector asks for). Each stage builds a fresh
supernet over its per-edge candidate sets, trains it with the strategy (warm-up epochs with the
architecture frozen, then joint epochs), records the architecture gradients and weights per epoch,
and hands a :class:`~nasreg.selector.StageResult` to the selector, which picks the next stage's
candidates or derives the genotype.
"""

from __future__ import annotations

import random
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import rundir as rd
from .data import DatasetBundle, split_train_val
from .errors import NasregError, SpecError
from .genotype import Genotype
from .plugins import Plugins
from .progress import QuietReporter
from .run import Run
from .selector import StageResult
from .spec import Spec, check_stages
from .supernet import Candidates, SearchSpace, Supernet


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


def make_loaders(spec: Spec, bundle: DatasetBundle, device: torch.device) -> tuple[DataLoader, DataLoader]:
    train, val = split_train_val(bundle, spec.data.train_portion, spec.run.seed, spec.data.limit)
    common = dict(batch_size=spec.data.batch_size, num_workers=spec.data.num_workers,
                  pin_memory=device.type == "cuda", drop_last=False,
                  persistent_workers=spec.data.num_workers > 0)
    g_train = torch.Generator().manual_seed(spec.run.seed + 1)
    g_val = torch.Generator().manual_seed(spec.run.seed + 2)
    return (DataLoader(train, shuffle=True, generator=g_train, **common),
            DataLoader(val, shuffle=True, generator=g_val, **common))


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
    selector = spec.selector.build()
    stages = check_stages(spec, selector)
    bundle: DatasetBundle = spec.dataset.build()
    return Prepared(spec, plugins, device, space, selector, stages, bundle)


def run_search(prepared: Prepared, run_dir: Path, reporter: Any = None) -> dict[str, Any]:
    """Run the whole search a prepared spec describes into ``run_dir``; returns the summary."""
    threads = torch.get_num_threads()
    try:
        return _run_search(prepared, run_dir, reporter or QuietReporter())
    finally:
        torch.set_num_threads(threads)


def _run_search(prepared: Prepared, run_dir: Path, reporter: Any) -> dict[str, Any]:
    spec, plugins = prepared.spec, prepared.plugins
    device, space, selector, stages, bundle = (prepared.device, prepared.space, prepared.selector,
                                               prepared.stages, prepared.bundle)
    regs = plugins.registries
    t_start = time.perf_counter()
    if spec.run.threads:
        torch.set_num_threads(spec.run.threads)
    configure_determinism(spec.run.deterministic, device)
    seed_everything(spec.run.seed)
    train_loader, val_loader = make_loaders(spec, bundle, device)
    steps = min(len(train_loader), len(val_loader))

    run = Run(spec=spec, plugins=plugins, run_dir=run_dir, device=device, space=space)
    rd.write_toml(run_dir / rd.SPEC_FILE, spec.resolved())
    notify(plugins, "on_run_start", reporter, run=run)

    metrics_path = run_dir / rd.METRICS_FILE
    candidates: Candidates = space.full_candidates()
    stage_infos: list[dict[str, Any]] = []
    gradients: list[dict[str, Any]] = []
    previous: Supernet | None = None
    result: StageResult | None = None
    last_metrics: dict[str, Any] = {}

    for stage, (warmup, epochs) in enumerate(stages):
        model = space.build_supernet(candidates, ops=regs.operations, in_channels=bundle.in_channels,
                                     num_classes=bundle.num_classes)
        if previous is not None and getattr(selector, "inherit_weights", False):
            inherit(model, previous)
        model = model.to(device)
        strategy = spec.strategy.build()
        strategy.setup(model, epochs=epochs, steps_per_epoch=steps)
        recorder = _Recorder(model, spec.search.grad_stat)
        grad_history: dict = {}
        alpha_history: dict = {}
        epoch_seconds: list[float] = []
        step_times: list[float] = []
        reporter.stage_start(stage, epochs, steps, model.num_weights())
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        for epoch in range(epochs):
            joint = epoch >= warmup
            t_epoch = time.perf_counter()
            loss_sum, correct, count, val_loss_sum = 0.0, 0, 0, 0.0
            model.train()
            for i, (train_batch, val_batch) in enumerate(zip(train_loader, val_loader)):
                t_step = time.perf_counter()
                xt, yt = (t.to(device, non_blocking=True) for t in train_batch)
                xv, yv = (t.to(device, non_blocking=True) for t in val_batch)
                out = strategy.step((xt, yt), (xv, yv), update_alpha=joint)
                if joint:
                    recorder.add()
                loss = float(out["train_loss"])
                if loss != loss or loss in (float("inf"), float("-inf")):
                    raise DivergenceError(
                        f"training diverged: loss is {loss} at stage {stage}, epoch {epoch}, step {i} "
                        f"(last good checkpoint: {run_dir / rd.CHECKPOINT_FILE}); "
                        "try a lower [strategy] w_lr or alpha_lr")
                n = int(out.get("train_count", yt.numel()))
                loss_sum += loss * n
                correct += int(out["train_correct"])
                count += n
                val_loss_sum += float(out.get("val_loss", 0.0))
                step_times.append(time.perf_counter() - t_step)
                reporter.step(i + 1, out)
            strategy.end_epoch()
            val_loss, val_acc = evaluate(model, val_loader, device, spec.search.eval_batch_norm == "batch")
            epoch_time = time.perf_counter() - t_epoch
            epoch_seconds.append(epoch_time)
            alphas = model.alpha_softmax()
            if joint:
                grads = recorder.epoch_value()
                if grads is not None:
                    _append_history(grad_history, grads)
                _append_history(alpha_history, alphas)
            last_metrics = {
                "stage": stage, "epoch": epoch, "joint": joint,
                "train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1),
                "val_loss": val_loss, "val_acc": val_acc, "lr": strategy.current_lr(),
                "epoch_seconds": epoch_time, "wall_seconds": time.perf_counter() - t_start,
                "peak_memory_mb": peak_memory_mb(device), "alphas": alphas,
            }
            rd.append_jsonl(metrics_path, last_metrics)
            reporter.epoch_end(last_metrics)
            notify(plugins, "on_epoch_end", reporter, run=run, stage=stage, epoch=epoch, metrics=last_metrics)
            if (epoch + 1) % spec.run.checkpoint_every == 0 or epoch + 1 == epochs:
                save_checkpoint(run_dir, {
                    "stage": stage, "epoch": epoch, "candidates": candidates,
                    "model": model.state_dict(), "strategy": strategy.state_dict(),
                    "grad_history": grad_history, "alpha_history": alpha_history,
                })

        result = StageResult(stage=stage, candidates=candidates, edges=space.edges(),
                             alphas=model.alpha_softmax(), grad_history=grad_history,
                             alpha_history=alpha_history, num_weights=model.num_weights(),
                             epoch_seconds=epoch_seconds,
                             step_seconds=float(np.median(step_times)) if step_times else 0.0)
        stage_infos.append({"stage": stage, "candidates": candidates, "num_weights": result.num_weights,
                            "num_candidate_ops": sum(len(c) for e in candidates.values() for c in e),
                            "warmup_epochs": warmup, "epochs": epochs,
                            "epoch_seconds": epoch_seconds, "step_seconds": result.step_seconds})
        gradients.append({"stage": stage, "candidates": candidates, "grad_history": grad_history,
                          "alpha_history": alpha_history})
        rd.write_json(run_dir / rd.STAGES_FILE, stage_infos)
        rd.write_json(run_dir / rd.GRADIENTS_FILE, {"stat": spec.search.grad_stat, "stages": gradients})
        reporter.stage_end(stage)
        notify(plugins, "on_stage_end", reporter, run=run, stage=stage, result=result)
        if stage + 1 < len(stages):
            candidates = selector.next_candidates(result, run)
        previous = model

    assert result is not None
    genotype: Genotype = selector.derive(result, run)
    genotype.save(run_dir / rd.GENOTYPE_FILE)
    summary = {
        "name": spec.run.name, "run_dir": str(run_dir), "spec_hash": spec.digest(),
        "device": str(device), "deterministic": spec.run.deterministic, "seed": spec.run.seed,
        "final_val_acc": last_metrics.get("val_acc"), "final_val_loss": last_metrics.get("val_loss"),
        "wall_seconds": time.perf_counter() - t_start, "peak_memory_mb": peak_memory_mb(device),
        "stages": [{k: v for k, v in s.items() if k != "candidates"} for s in stage_infos],
        "genotype": genotype.to_dict(),
    }
    rd.write_json(run_dir / rd.SUMMARY_FILE, summary)
    notify(plugins, "on_run_end", reporter, run=run, genotype=genotype, summary=summary)
    return summary


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    import io

    state = dict(state)
    state["rng"] = {"python": random.getstate(), "numpy": np.random.get_state(),
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    buf = io.BytesIO()
    torch.save(state, buf)
    rd.atomic_write_bytes(run_dir / rd.CHECKPOINT_FILE, buf.getvalue())
