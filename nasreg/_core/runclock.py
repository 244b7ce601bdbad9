"""The run clock: where a run stands in its plan and how long the rest will take.

A :class:`RunClock` follows the reporter events of a search (its stages, each with warm-up and joint
epochs of ``steps`` steps) or of a training from scratch, measures every step and every epoch's
end (validation, checkpoint) by kind, and estimates the whole run's remaining time from those
measurements: a warm-up step (weights only) is much cheaper than a joint one (weights and
architecture), so each kind is estimated from its own steps; a kind not measured yet is guessed
from the other one (a joint step as two warm-up steps).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

#: How many of the latest steps of a kind its estimate uses (a later stage's smaller supernet
#: replaces the earlier stage's figures quickly).
RECENT = 64
#: The guess of a joint step's cost in warm-up steps, until a joint step is measured (and back).
JOINT_PER_WARMUP = 2.0
WARMUP, JOINT, TRAIN = "warm-up", "joint", "train"


@dataclass
class Plan:
    """A run's schedule: per stage ``(warmup_epochs, epochs, steps)``; a training is one stage of
    no warm-up (``kind`` "train")."""

    stages: list[tuple[int, int, int]]
    kind: str = "search"

    @property
    def total_steps(self) -> int:
        return sum(epochs * steps for _w, epochs, steps in self.stages)

    def steps_before(self, stage: int, epoch: int, step: int = 0) -> int:
        """How many steps the plan runs before ``(stage, epoch, step)``."""
        done = sum(e * s for _w, e, s in self.stages[:stage])
        if stage < len(self.stages):
            done += epoch * self.stages[stage][2] + step
        return done


@dataclass
class RunClock:
    """Position and step/epoch timings of one run (see the module docstring)."""

    now: Callable[[], float] = time.perf_counter
    plan: Plan | None = None
    stage: int = 0
    epoch: int = 0
    step: int = 0
    steps: int = 0        # steps per epoch of the current stage
    epochs: int = 0       # epochs of the current stage
    warmup: int = 0       # warm-up epochs of the current stage
    _mark: float | None = None
    _times: dict[str, list[float]] = field(default_factory=dict)
    _epoch_ends: list[float] = field(default_factory=list)
    _resume: tuple[int, int, int] | None = None

    # -- events --------------------------------------------------------------------------------

    def set_plan(self, plan: Plan, start: tuple[int, int, int] = (0, 0, 0)) -> None:
        """The run's plan and where it starts (a resumed run: its checkpoint's stage, epoch, step)."""
        self.plan, self._resume = plan, tuple(start)  # type: ignore[assignment]

    def start_stage(self, stage: int, epochs: int, steps: int, warmup: int | None = None) -> None:
        """A stage (or a training) starts: its position is its first epoch, or the resume point."""
        self.stage, self.epochs, self.steps = stage, epochs, steps
        if warmup is None:
            warmup = self.plan.stages[stage][0] if self.plan and stage < len(self.plan.stages) else 0
        self.warmup = warmup
        self.epoch = self.step = 0
        if self._resume is not None and self._resume[0] == stage:
            _s, self.epoch, self.step = self._resume
        self._resume = None
        self._mark = self.now()

    def step_done(self, done: int) -> None:
        """Step ``done`` (from 1) of the current epoch ended: its time is measured."""
        t = self.now()
        if self._mark is not None and done == self.step + 1:
            self._times.setdefault(self.kind(), []).append(t - self._mark)
        self.step, self._mark = done, t

    def epoch_done(self, stage: int | None = None, epoch: int | None = None) -> None:
        """The current epoch ended (``stage``/``epoch``: the metrics' figures, when given)."""
        t = self.now()
        if self._mark is not None and self.step:
            self._epoch_ends.append(t - self._mark)  # validation after the last step
        if stage is not None:
            self.stage = stage
        self.epoch = (epoch if epoch is not None else self.epoch) + 1
        self.step, self._mark = 0, t

    # -- figures -------------------------------------------------------------------------------

    def kind(self, stage: int | None = None, epoch: int | None = None) -> str:
        """The kind of an epoch (default: the current one): warm-up, joint or train."""
        if self.plan is not None and self.plan.kind == "train":
            return TRAIN
        stage = self.stage if stage is None else stage
        epoch = self.epoch if epoch is None else epoch
        warmup = self.warmup if stage == self.stage else self.plan.stages[stage][0] if self.plan else 0
        return WARMUP if epoch < warmup else JOINT

    def is_warmup(self) -> bool:
        return self.kind() == WARMUP

    def step_seconds(self, kind: str) -> float | None:
        """The estimated time of one step of ``kind`` (None: nothing measured yet)."""
        own = self._times.get(kind)
        if own:
            return statistics.median(own[-RECENT:])
        if kind == JOINT and self._times.get(WARMUP):
            return JOINT_PER_WARMUP * statistics.median(self._times[WARMUP][-RECENT:])
        if kind == WARMUP and self._times.get(JOINT):
            return statistics.median(self._times[JOINT][-RECENT:]) / JOINT_PER_WARMUP
        if self._times.get(TRAIN):
            return statistics.median(self._times[TRAIN][-RECENT:])
        return None

    def epoch_end_seconds(self) -> float:
        return statistics.median(self._epoch_ends[-RECENT:]) if self._epoch_ends else 0.0

    def done_steps(self) -> int:
        if self.plan is None:
            return self.epoch * self.steps + self.step
        return self.plan.steps_before(self.stage, self.epoch, self.step)

    def total_steps(self) -> int:
        return self.plan.total_steps if self.plan is not None else self.epochs * self.steps

    def remaining_seconds(self) -> float | None:
        """The whole run's remaining time (without a plan: the current stage's), or None before
        any step was measured."""
        stages = self.plan.stages if self.plan is not None else [(self.warmup, self.epochs, self.steps)]
        first = self.stage if self.plan is not None else 0
        total, per_epoch_end = 0.0, self.epoch_end_seconds()
        for s in range(first, len(stages)):
            _w, epochs, steps = stages[s]
            if s == first:
                steps = self.steps or steps
            for e in range(self.epoch if s == first else 0, epochs):
                left = steps - self.step if (s == first and e == self.epoch) else steps
                per_step = self.step_seconds(self.kind(s, e))
                if per_step is None:
                    return None
                total += left * per_step + per_epoch_end
        return total


def clock_text(seconds: float | None) -> str:
    """``4:10``, ``1:02:03``; ``-:--`` when unknown."""
    if seconds is None:
        return "-:--"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
