"""What a search shows while it runs: a rich live display, or nothing (tests, ``--quiet``)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


class QuietReporter:
    """Shows no progress; warnings still go to stderr."""

    def stage_start(self, stage: int, epochs: int, steps: int, num_weights: int) -> None: ...
    def step(self, done: int, info: dict[str, Any]) -> None: ...
    def epoch_end(self, metrics: dict[str, Any]) -> None: ...
    def stage_end(self, stage: int) -> None: ...
    def train_start(self, epochs: int, steps: int, num_params: int) -> None: ...
    def close(self) -> None: ...
    def message(self, text: str) -> None:
        print(text, file=sys.stderr)


class SilentReporter(QuietReporter):
    """Shows nothing at all: the reporter of torchrun's ranks other than 0 (rank 0 speaks for all)."""

    def message(self, text: str) -> None: ...


class RichReporter(QuietReporter):
    """Epoch and step bars with the current losses, accuracy and ETA."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), console=self.console, transient=False)
        self._started = False
        self._epoch_task = None
        self._step_task = None

    def stage_start(self, stage, epochs, steps, num_weights):
        if not self._started:  # started on first use: an early error prints no empty display
            self.progress.start()
            self._started = True
        self.console.print(f"[bold cyan]stage {stage}[/]: {epochs} epochs x {steps} steps, "
                           f"{num_weights:,} weights")
        for task in (self._epoch_task, self._step_task):
            if task is not None:
                self.progress.remove_task(task)
        self._epoch_task = self.progress.add_task(f"stage {stage} epochs", total=epochs, info="")
        self._step_task = self.progress.add_task("steps", total=steps, info="")

    def step(self, done, info):
        text = f"loss {info.get('train_loss', float('nan')):.3f}"
        self.progress.update(self._step_task, completed=done, info=text)

    def epoch_end(self, metrics):
        info = (f"train acc {metrics['train_acc']:.3f}  val acc {metrics['val_acc']:.3f}  "
                f"val loss {metrics['val_loss']:.3f}")
        self.progress.update(self._epoch_task, advance=1, info=info)
        self.progress.reset(self._step_task)

    def message(self, text):
        self.console.print(text)

    def close(self):
        if self._started:
            self.progress.stop()


class RichTrainReporter(RichReporter):
    """The same bars for training a genotype's network (``nasreg train``, ``[evaluate]``)."""

    def train_start(self, epochs, steps, num_params):
        if not self._started:
            self.progress.start()
            self._started = True
        self.console.print(f"[bold cyan]training[/]: {epochs} epochs x {steps} steps, {num_params:,} parameters")
        self._epoch_task = self.progress.add_task("epochs", total=epochs, info="")
        self._step_task = self.progress.add_task("steps", total=steps, info="")

    def epoch_end(self, metrics):
        info = (f"train acc {metrics['train_acc']:.3f}  test acc {metrics['test_acc']:.3f}  "
                f"test loss {metrics['test_loss']:.3f}")
        self.progress.update(self._epoch_task, advance=1, info=info)
        self.progress.reset(self._step_task)
