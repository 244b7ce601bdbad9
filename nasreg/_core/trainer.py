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
(``"step"``, the RL children). Example (a callback is any object with some of the methods of
:class:`TrainCallback`)::

    recipe = nasreg.TrainRecipe(epochs=2, lr=0.05, weight_decay=3e-4, grad_clip=5.0, test="end")
    result = nasreg.Trainer(model, recipe, device="cpu").fit(train_loader, test_loader)
    print(result.test_acc, result.diverged)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EpochStats", "TrainCallback", "TrainRecipe", "FitResult", "Trainer",
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
        """After every epoch (test pass included) that did not diverge."""

    def on_train_end(self, trainer: "Trainer", result: FitResult) -> None:
        """After the last epoch, or the diverging step with ``on_divergence = "stop"``."""


class _Tally:
    """Running sums of a training epoch."""

    def __init__(self) -> None:
        self.loss_sum, self.correct, self.count = 0.0, 0, 0

    def add(self, value: float, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += value * y.numel()
        self.correct += int((logits.argmax(1) == y).sum())
        self.count += y.numel()


class _Diverged(Exception):
    """Internal: a step's loss was not finite (``on_divergence = "stop"``)."""


class Trainer:
    """Trains ``model`` (already on ``device``) as ``recipe`` says; see :meth:`fit`.

    ``reporter``: an object with ``step(step, metrics)`` (called after every step with
    ``{"train_loss": value}``), or None; ``callbacks``: :class:`TrainCallback`-like objects.
    ``optimizer`` and ``scheduler`` exist once :meth:`fit` has started.
    """

    def __init__(self, model: nn.Module, recipe: TrainRecipe, device: torch.device | str = "cpu", *,
                 reporter: Any = None, callbacks: Sequence[Any] = ()):
        self.model, self.recipe, self.device = model, recipe, torch.device(device)
        self.reporter, self.callbacks = reporter, list(callbacks)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None

    def fit(self, train_loader: Any, test_loader: Any = None) -> FitResult:
        """Train for ``recipe.epochs`` epochs on ``train_loader``, test on ``test_loader``."""
        r = self.recipe
        self._make_optimizer(len(train_loader))
        self._call("on_train_start", len(train_loader))
        result, tally = FitResult(), _Tally()
        self.model.train()
        for epoch in range(r.epochs):
            try:
                stats, tally = self._epoch(epoch, train_loader, test_loader)
            except _Diverged as stop:
                result.diverged, tally = True, stop.args[0]
                break
            result.epochs.append(stats)
            result.test_loss, result.test_acc = stats.test_loss, stats.test_acc
            self._call("on_epoch_end", stats)
        result.train_loss = tally.loss_sum / tally.count if tally.count else None
        result.train_acc = tally.correct / tally.count if tally.count else None
        if r.test == "end" and not result.diverged and test_loader is not None:
            result.test_loss, result.test_acc = self.test(test_loader)
        self._call("on_train_end", result)
        return result

    def test(self, loader: Any) -> tuple[float, float]:
        """Mean loss and accuracy on ``loader`` as the recipe says (``batch_norm``, ``amp``)."""
        return score(self.model, loader, self.device, self.recipe.amp, self.recipe.batch_norm == "batch")

    def _make_optimizer(self, steps_per_epoch: int) -> None:
        r = self.recipe
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=r.lr, momentum=r.momentum,
                                         weight_decay=r.weight_decay)
        t_max = r.epochs if r.schedule == "epoch" else max(1, r.epochs * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=t_max, eta_min=r.lr_min)

    def _epoch(self, epoch: int, train_loader: Any, test_loader: Any) -> tuple[EpochStats, _Tally]:
        r = self.recipe
        t0 = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]  # type: ignore[union-attr]
        drop_prob = drop_path_schedule(r.drop_path or 0.0, epoch, r.epochs)
        if r.drop_path is not None and hasattr(self.model, "drop_path_prob"):
            self.model.drop_path_prob = drop_prob
        self.model.train()
        tally = _Tally()
        for step, (x, y) in enumerate(train_loader):
            self._step(epoch, step, x, y, tally)
        if r.schedule == "epoch":
            self.scheduler.step()
        test_loss = test_acc = None
        if r.test == "epoch" and test_loader is not None:
            test_loss, test_acc = self.test(test_loader)
        stats = EpochStats(epoch=epoch, lr=lr, drop_path_prob=drop_prob,
                           train_loss=tally.loss_sum / max(tally.count, 1), train_acc=tally.correct / max(tally.count, 1),
                           test_loss=test_loss, test_acc=test_acc, seconds=time.perf_counter() - t0)
        return stats, tally

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
            nn.utils.clip_grad_norm_(self.model.parameters(), r.grad_clip)
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
        from .errors import DivergenceError

        if self.recipe.on_divergence == "stop":
            raise _Diverged(tally)
        raise DivergenceError(f"training diverged: loss is {value} at epoch {epoch}, step {step}"
                              f"{self.recipe.divergence_hint}")

    def _call(self, method: str, *args: Any) -> None:
        for callback in self.callbacks:
            fn = getattr(callback, method, None)
            if fn is not None:
                fn(self, *args)


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
