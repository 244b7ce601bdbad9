"""Reporters: what a run shows while it goes (a rich live display, plain lines, or nothing)."""

from __future__ import annotations

import sys
from typing import Any


class Reporter:
    """The reporter protocol (``nasreg.Reporter``); this base shows nothing (the Python API's default).

    Every method is a no-op, so a reporter of your own overrides only what it shows. The engines
    call, in order:

    * a search: ``preflight(line)`` (the pre-flight estimate, one line, when it ran), then per stage
      ``stage_start(stage, epochs, steps, num_weights)``, ``step(done, info)`` after every step
      (``info["train_loss"]``), ``epoch_end(metrics)`` (the ``metrics.jsonl`` record),
      ``stage_end(stage)``; ``close()`` when the search's display ends; ``search_end(summary)``;
    * a training from scratch (``[evaluate]``, ``nasreg train``): ``evaluation_start(run_dir)``
      (after a search only), ``train_start(epochs, steps, num_params)``, ``step``, ``epoch_end``
      (with ``test_acc``, ``test_loss``), ``close()``, ``train_end(results)``;
    * a sampling strategy (REINFORCE, random search) reports children through ``message(text)``
      and may call ``step``;
    * ``message(text)`` for a notice or warning at any time (a plugin whose hook failed, a resumed
      run).

    ``close()`` may be called more than once; a reporter that is closed and used again starts
    afresh (the search's bars, then the evaluation's).
    """

    def preflight(self, line: str) -> None: ...
    def stage_start(self, stage: int, epochs: int, steps: int, num_weights: int) -> None: ...
    def step(self, done: int, info: dict[str, Any]) -> None: ...
    def epoch_end(self, metrics: dict[str, Any]) -> None: ...
    def stage_end(self, stage: int) -> None: ...
    def search_end(self, summary: dict[str, Any]) -> None: ...
    def evaluation_start(self, run_dir: Any) -> None: ...
    def train_start(self, epochs: int, steps: int, num_params: int) -> None: ...
    def train_end(self, results: dict[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class QuietReporter(Reporter):
    """Shows no progress; notices and warnings go to stderr (``nasreg ... -q``)."""

    def message(self, text: str) -> None:
        print(text, file=sys.stderr)


#: The reporter of torchrun's ranks other than 0 (rank 0 speaks for all).
SilentReporter = Reporter


class RichReporter(QuietReporter):
    """Epoch and step bars with the current losses, accuracy and ETA, for searches and trainings."""

    def __init__(self, console: Any = None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.progress: Any = None
        self._epoch_task = None
        self._step_task = None

    def _start(self, header: str, epochs_label: str, epochs: int, steps: int) -> None:
        if self.progress is None:  # started on first use: an early error prints no empty display
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), console=self.console, transient=False)
            self.progress.start()
        self.console.print(header)
        for task in (self._epoch_task, self._step_task):
            if task is not None:
                self.progress.remove_task(task)
        self._epoch_task = self.progress.add_task(epochs_label, total=epochs, info="")
        self._step_task = self.progress.add_task("steps", total=steps, info="")

    def stage_start(self, stage, epochs, steps, num_weights):
        self._start(f"[bold cyan]stage {stage}[/]: {epochs} epochs x {steps} steps, {num_weights:,} weights",
                    f"stage {stage} epochs", epochs, steps)

    def train_start(self, epochs, steps, num_params):
        self._start(f"[bold cyan]training[/]: {epochs} epochs x {steps} steps, {num_params:,} parameters",
                    "epochs", epochs, steps)

    def step(self, done, info):
        if self.progress is not None:
            text = f"loss {info.get('train_loss', float('nan')):.3f}"
            self.progress.update(self._step_task, completed=done, info=text)

    def epoch_end(self, metrics):
        if self.progress is None:
            return
        split = "test" if "test_acc" in metrics else "val"
        info = (f"train acc {metrics['train_acc']:.3f}  {split} acc {metrics[split + '_acc']:.3f}  "
                f"{split} loss {metrics[split + '_loss']:.3f}")
        self.progress.update(self._epoch_task, advance=1, info=info)
        self.progress.reset(self._step_task)

    def message(self, text):
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def close(self):
        if self.progress is not None:
            self.progress.stop()
        self.progress, self._epoch_task, self._step_task = None, None, None


#: The same bars for training a genotype's network (kept for scripts that named it).
RichTrainReporter = RichReporter
