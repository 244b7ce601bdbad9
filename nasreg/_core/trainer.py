"""The training engine: one loop for every network trained from scratch.

``[evaluate]`` after a search, ``nasreg train`` and the children of the sampling strategies
(``nasreg_rl``) all train with :class:`Trainer`; what differs between them is a
:class:`TrainRecipe` (optimizer settings, when the cosine schedule steps, augmentation, how the
test pass normalizes, what a diverging loss does) and the callbacks they pass, never a copy of
the loop. The engine writes no file and fires no plugin hook itself: a callback does that
(:mod:`nasreg._core.evaluate` writes ``metrics.jsonl``, the checkpoint and calls the ``on_train_*``
hooks from one).

What the loop relies on from the model:

* ``model(x)`` returns the logits, or ``(logits, auxiliary_logits)`` in training mode when the
  network has an auxiliary head (its loss is added with ``auxiliary_weight``);
* an optional ``drop_path_prob`` attribute, set before every epoch to
  ``drop_path * epoch / epochs`` when the recipe has a ``drop_path``.

The optimizer is SGD with momentum and the learning rate follows a cosine from ``lr`` to
``lr_min``, stepped once per epoch (``schedule = "epoch"``, DARTS's evaluation) or once per step
(``"step"``, the RL children).

Stopping and continuing: with ``stop`` (a :class:`nasreg._core.stop.StopRequests`, whose first
Ctrl-C / SIGTERM sets ``requested``) the loop honours a request between two steps: it calls the
callbacks' ``on_stop`` (a callback writes :meth:`Trainer.state_dict` there) and raises
:class:`nasreg.Interrupted`. ``fit(..., resume=state)`` continues from such a state, or from one
taken in ``on_epoch_end``, exactly: the weights, optimizer and scheduler, the position (epoch,
step, the epoch's running sums), the training loader's data order and every RNG state.

Example (a callback is any object with some of the methods of :class:`TrainCallback`)::

    recipe = nasreg.TrainRecipe(epochs=2, lr=0.05, weight_decay=3e-4, grad_clip=5.0, test="end")
    result = nasreg.Trainer(model, recipe, device="cpu").fit(train_loader, test_loader)
    print(result.test_acc, result.diverged)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DivergenceError, Interrupted

__all__ = ["EpochStats", "TrainCallback", "TrainRecipe", "FitResult", "Trainer", "ResumeError", "resume_position",
           "cutout", "drop_path_schedule", "score", "seed_everything"]


@dataclass(frozen=True)
class TrainRecipe:
    """How a network is trained: the optimizer, the schedule, augmentation, the test pass.

    ``auxiliary_weight``: the weight of an auxiliary head's loss (None: its logits are ignored);
    ``drop_path``: the final drop-path probability of the linear schedule (None: the model's
    ``drop_path_prob`` is never set); ``cutout_length``: DARTS's cutout on every training batch
    (0: none); ``amp``: bfloat16 autocast; ``batch_norm``: how the test pass normalizes
    (``"running"``: plain eval mode; ``"batch"``: each batch's own statistics, running averages
    untouched, which suits networks trained for a few steps); ``test``: after every epoch, once
    at the ``"end"``, or ``"never"``; ``on_divergence``: ``"raise"`` a :class:`nasreg.DivergenceError`
    (with ``divergence_hint`` appended) or ``"stop"`` training and report ``diverged``.
    """

    epochs: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    lr_min: float = 0.0
    schedule: Literal["epoch", "step"] = "epoch"
    label_smoothing: float = 0.0
    auxiliary_weight: float | None = None
    drop_path: float | None = None
    cutout_length: int = 0
    amp: bool = False
    batch_norm: Literal["running", "batch"] = "running"
    test: Literal["epoch", "end", "never"] = "epoch"
    on_divergence: Literal["raise", "stop"] = "raise"
    divergence_hint: str = ""


@dataclass
class EpochStats:
    """One finished epoch: the rate it trained at, its drop-path probability, the mean training
    loss and accuracy over its batches, the test loss and accuracy (None when not tested) and its
    seconds (test pass included)."""

    epoch: int
    lr: float
    drop_path_prob: float
    train_loss: float
    train_acc: float
    test_loss: float | None
    test_acc: float | None
    seconds: float


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns. ``train_loss``/``train_acc`` are the last epoch's (up to
    the diverging step, if any; None when it trained no batch); ``test_loss``/``test_acc`` the
    last test pass's (None if there was none)."""

    epochs: list[EpochStats] = field(default_factory=list)
    diverged: bool = False
    train_loss: float | None = None
    train_acc: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None


class TrainCallback:
    """The callbacks :class:`Trainer` calls (implement any; a plain object with some works too)."""

    def on_train_start(self, trainer: "Trainer", steps_per_epoch: int) -> None:
        """Before the first epoch."""

    def on_epoch_end(self, trainer: "Trainer", stats: EpochStats) -> None:
        """After every epoch (test pass included) that did not diverge; ``trainer.state_dict()``
        is then the state at the next epoch's start."""

    def on_stop(self, trainer: "Trainer", epoch: int, step: int) -> None:
        """A stop request honoured after ``step`` batches of ``epoch`` (not its last one), before
        :class:`nasreg.Interrupted` is raised; ``trainer.state_dict()`` is the state there."""

    def on_train_end(self, trainer: "Trainer", result: FitResult) -> None:
        """After the last epoch, or the diverging step with ``on_divergence = "stop"``."""


class _Tally:
    """Running sums of a training epoch."""

    def __init__(self, loss_sum: float = 0.0, correct: int = 0, count: int = 0) -> None:
        self.loss_sum, self.correct, self.count = float(loss_sum), int(correct), int(count)

    def add(self, value: float, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += value * y.numel()
        self.correct += int((logits.argmax(1) == y).sum())
        self.count += y.numel()


class ResumeError(ValueError):
    """A state handed to ``fit(resume=...)`` that does not fit: damaged, or another network's."""


class _Diverged(Exception):
    """Internal: a step's loss was not finite (``on_divergence = "stop"``)."""


class Trainer:
    """Trains ``model`` (already on ``device``) as ``recipe`` says; see :meth:`fit`.

    ``reporter``: an object with ``step(step, metrics)`` (called after every step with
    ``{"train_loss": value}``), or None; ``callbacks``: :class:`TrainCallback`-like objects;
    ``stop``: an object whose ``requested`` attribute asks the loop to stop between two steps
    (see the module's docstring), or None. ``optimizer`` and ``scheduler`` exist once :meth:`fit`
    has started; ``epoch`` and ``step`` say where it stands (the epoch running, its batches done).
    """

    def __init__(self, model: nn.Module, recipe: TrainRecipe, device: torch.device | str = "cpu", *,
                 reporter: Any = None, callbacks: Sequence[Any] = (), stop: Any = None):
        self.model, self.recipe, self.device = model, recipe, torch.device(device)
        self.reporter, self.callbacks, self.stop = reporter, list(callbacks), stop
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.epoch, self.step = 0, 0
        self._tally, self._loader_state, self._epoch_t0 = _Tally(), None, time.perf_counter()
        self._resume_rng: Any = None  # set by a resume: restored once the epoch's batches are replayed

    def fit(self, train_loader: Any, test_loader: Any = None, resume: Mapping[str, Any] | None = None) -> FitResult:
        """Train for ``recipe.epochs`` epochs on ``train_loader``, test on ``test_loader``; with
        ``resume`` (a :meth:`state_dict`) continue from where that state was taken."""
        r = self.recipe
        self._make_optimizer(len(train_loader))
        if resume is not None:
            self._load_state_dict(resume)
        self._call("on_train_start", len(train_loader))
        result, tally = FitResult(), self._tally
        self.model.train()
        for epoch in range(self.epoch, r.epochs):
            try:
                stats, tally = self._epoch(epoch, train_loader, test_loader)
            except _Diverged as stop:
                result.diverged, tally = True, stop.args[0]
                break
            result.epochs.append(stats)
            result.test_loss, result.test_acc = stats.test_loss, stats.test_acc
            self.epoch, self.step, self._tally = epoch + 1, 0, _Tally()
            self._loader_state = _generator_state(train_loader)  # the next epoch's data order
            self._call("on_epoch_end", stats)
            if self._stop_requested() and epoch + 1 < r.epochs:
                raise Interrupted(f"interrupted after epoch {epoch}")
        result.train_loss = tally.loss_sum / tally.count if tally.count else None
        result.train_acc = tally.correct / tally.count if tally.count else None
        if r.test == "end" and not result.diverged and test_loader is not None:
            result.test_loss, result.test_acc = self.test(test_loader)
        self._call("on_train_end", result)
        return result

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`fit` needs to continue from where it stands (between two steps):
        ``model``, ``optimizer``, ``scheduler`` and ``position`` (``epoch``, ``step``, the epoch's
        running sums ``tally``, its training loader's generator state at its start ``loader``,
        the global RNG states ``rng``, its seconds so far). Tensors and plain data only."""
        from .checkpoint import capture_rng

        t = self._tally
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),  # type: ignore[union-attr]
                "scheduler": self.scheduler.state_dict(),
                "position": {"epoch": self.epoch, "step": self.step, "tally": [t.loss_sum, t.correct, t.count],
                             "loader": self._loader_state, "rng": capture_rng(),
                             "epoch_seconds": time.perf_counter() - self._epoch_t0 if self.step else 0.0}}

    def _load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the optimizer already made); the RNG is restored when the
        epoch resumes (see :meth:`_batches`). A state that does not fit is a :class:`ResumeError`."""
        pos = resume_position(state, self.recipe.epochs)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[union-attr]
            self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ResumeError(f"does not fit this network and recipe: {str(exc).splitlines()[0][:300]}") from None
        self.epoch, self.step = pos["epoch"], pos["step"]
        self._tally = _Tally(*pos["tally"])
        self._loader_state, self._resume_rng = pos["loader"], pos["rng"]
        self._epoch_t0 = time.perf_counter() - float(pos["epoch_seconds"])

    def _stop_requested(self) -> bool:
        return bool(self.stop is not None and self.stop.requested)

    def test(self, loader: Any) -> tuple[float, float]:
        """Mean loss and accuracy on ``loader`` as the recipe says (``batch_norm``, ``amp``)."""
        return score(self.model, loader, self.device, self.recipe.amp, self.recipe.batch_norm == "batch")

    def _make_optimizer(self, steps_per_epoch: int) -> None:
        r = self.recipe
        # foreach: one dispatch per operation for all parameters (CPU too; the same arithmetic)
        self._foreach = True if torch.device(self.device).type in ("cpu", "cuda") else None
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=r.lr, momentum=r.momentum,
                                         weight_decay=r.weight_decay, foreach=self._foreach)
        t_max = r.epochs if r.schedule == "epoch" else max(1, r.epochs * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=t_max, eta_min=r.lr_min)

    def _epoch(self, epoch: int, train_loader: Any, test_loader: Any) -> tuple[EpochStats, _Tally]:
        r = self.recipe
        lr = self.optimizer.param_groups[0]["lr"]  # type: ignore[union-attr]
        drop_prob = drop_path_schedule(r.drop_path or 0.0, epoch, r.epochs)
        if r.drop_path is not None and hasattr(self.model, "drop_path_prob"):
            self.model.drop_path_prob = drop_prob
        self.model.train()
        tally = self._tally
        steps = len(train_loader)
        for step, (x, y) in self._batches(epoch, train_loader):
            self._step(epoch, step, x, y, tally)
            self.step = step + 1
            if self._stop_requested() and step + 1 < steps:
                self._call("on_stop", epoch, step + 1)
                raise Interrupted(f"interrupted at epoch {epoch}, step {step + 1}")
        if r.schedule == "epoch":
            self.scheduler.step()
        test_loss = test_acc = None
        if r.test == "epoch" and test_loader is not None:
            test_loss, test_acc = self.test(test_loader)
        stats = EpochStats(epoch=epoch, lr=lr, drop_path_prob=drop_prob,
                           train_loss=tally.loss_sum / max(tally.count, 1), train_acc=tally.correct / max(tally.count, 1),
                           test_loss=test_loss, test_acc=test_acc, seconds=time.perf_counter() - self._epoch_t0)
        return stats, tally

    def _batches(self, epoch: int, train_loader: Any) -> Any:
        """``(step, batch)`` of ``epoch``. Resuming it, the data order is restored to the epoch's
        start, the batches trained before the stop are drawn again and skipped, then the RNG is
        restored to what it was at the stop (so every later draw is the uninterrupted run's)."""
        resuming = self._resume_rng is not None
        if resuming and self._loader_state is not None:
            generator = getattr(train_loader, "generator", None)
            if generator is not None:
                generator.set_state(self._loader_state)
        if not resuming:
            self._loader_state, self._epoch_t0 = _generator_state(train_loader), time.perf_counter()
        batches = enumerate(train_loader)
        if resuming:
            from .checkpoint import restore_rng

            for _ in range(self.step):
                next(batches)
            restore_rng(self._resume_rng)
            self._resume_rng = None
        return batches

    def _step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor, tally: _Tally) -> None:
        r = self.recipe
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if r.cutout_length:
            x = cutout(x, r.cutout_length)
        logits, loss = self._forward(x, y)
        value = loss.detach().item()
        if not math.isfinite(value):
            self._diverged(value, epoch, step, tally)
        self.optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        loss.backward()
        if r.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), r.grad_clip, foreach=self._foreach)
        self.optimizer.step()  # type: ignore[union-attr]
        if r.schedule == "step":
            self.scheduler.step()
        tally.add(value, logits, y)
        if self.reporter is not None:
            self.reporter.step(step + 1, {"train_loss": value})

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.recipe
        with _autocast(self.device, r.amp):
            out = self.model(x)
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing)
            if aux is not None and r.auxiliary_weight is not None:
                loss = loss + r.auxiliary_weight * F.cross_entropy(aux.float(), y, label_smoothing=r.label_smoothing)
        return logits, loss

    def _diverged(self, value: float, epoch: int, step: int, tally: _Tally) -> None:

        if self.recipe.on_divergence == "stop":
            raise _Diverged(tally)
        raise DivergenceError(f"training diverged: loss is {value} at epoch {epoch}, step {step}"
                              f"{self.recipe.divergence_hint}")

    def _call(self, method: str, *args: Any) -> None:
        for callback in self.callbacks:
            fn = getattr(callback, method, None)
            if fn is not None:
                fn(self, *args)


def resume_position(state: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """The checked ``position`` of a :meth:`Trainer.state_dict` for a recipe of ``epochs``
    epochs; anything missing, of the wrong type or out of bounds is a :class:`ResumeError` saying which."""
    pos = state.get("position") if isinstance(state, Mapping) else None
    if not isinstance(pos, Mapping):
        raise ResumeError("has no training position (written by an older nasreg, or not a training checkpoint)")
    missing = [k for k in ("model", "optimizer", "scheduler") if not isinstance(state.get(k), Mapping)]
    missing += [f"position.{k}" for k in ("epoch", "step", "tally", "loader", "rng", "epoch_seconds") if k not in pos]
    if missing:
        raise ResumeError(f"lacks {', '.join(missing)}")
    epoch, step, tally = pos["epoch"], pos["step"], pos["tally"]
    if not (type(epoch) is int and 0 <= epoch <= epochs):
        raise ResumeError(f"position.epoch: expected an integer from 0 to {epochs} ([evaluate] epochs), got {epoch!r}")
    if not (type(step) is int and step >= 0) or (epoch == epochs and step):
        raise ResumeError(f"position.step: expected an integer >= 0 (0 after the last epoch), got {step!r}")
    if not (isinstance(tally, (list, tuple)) and len(tally) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in tally)):
        raise ResumeError(f"position.tally: expected [loss sum, correct, count], got {tally!r}"[:300])
    if not (isinstance(pos["loader"], torch.Tensor) or pos["loader"] is None):
        raise ResumeError("position.loader: expected a generator state (a tensor) or none")
    if not isinstance(pos["rng"], Mapping) or not isinstance(pos["epoch_seconds"], (int, float)):
        raise ResumeError("position.rng / position.epoch_seconds: damaged")
    return dict(pos)


def _generator_state(loader: Any) -> torch.Tensor | None:
    """The state of ``loader``'s ``generator`` (its data order), or None when it has none."""
    generator = getattr(loader, "generator", None)
    return generator.get_state() if isinstance(generator, torch.Generator) else None


# ------------------------------------------------------------------------------------------------
# Pieces of the loop


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random number generators with ``seed`` (what
    every training from scratch and every search does first)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cutout(x: torch.Tensor, length: int) -> torch.Tensor:
    """DARTS's cutout on a batch: per image, zero a ``length`` x ``length`` square (clipped at the
    borders) centred on a uniformly random pixel. Applied to normalized images, as DARTS does."""
    n, _c, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    half = length // 2
    hole = (ys >= cy - half) & (ys < cy + half) & (xs >= cx - half) & (xs < cx + half)
    return x * (~hole).unsqueeze(1).to(x.dtype)


def drop_path_schedule(drop_path: float, epoch: int, epochs: int) -> float:
    """The drop-path probability of ``epoch`` (0-based): linear from 0 towards ``drop_path``."""
    return drop_path * epoch / epochs


def _autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast (no loss scaling needed) when enabled; else a no-op."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def score(model: nn.Module, loader: Any, device: torch.device | str, amp: bool = False,
          batch_norm_stats: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy on ``loader`` in eval mode (no drop path), then back to train mode.

    With ``batch_norm_stats`` batch-norm layers normalize with each batch's statistics instead of
    their running averages (which are left untouched)."""
    loss_sum, correct, count = score_sums(model, loader, torch.device(device), amp, batch_norm_stats)
    return loss_sum / max(count, 1), correct / max(count, 1)


@torch.no_grad()
def score_sums(model: nn.Module, loader: Any, device: torch.device, amp: bool = False,
               batch_norm_stats: bool = False) -> tuple[float, int, int]:
    """``(summed loss, correct, count)`` of :func:`score` (to add up over processes)."""
    model.eval()
    saved = _batch_statistics(model) if batch_norm_stats else []
    loss_sum, correct, count = 0.0, 0, 0
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(device, amp):
                out = model(x)
            logits = (out[0] if isinstance(out, tuple) else out).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            count += y.numel()
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train()
    return loss_sum, correct, count


def _batch_statistics(model: nn.Module) -> list[tuple[nn.Module, Any]]:
    """Put batch-norm layers in training mode with momentum 0 (running averages unchanged:
    ``(1 - 0) * running + 0 * batch``); returns what to restore."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, m.momentum))
            m.train()
            m.momentum = 0.0
    return saved
