"""Reporters: what a run shows while it goes (a rich live display, plain lines, or nothing)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from .runclock import WARMUP, Plan, RunClock, clock_text


class Reporter:
    """The reporter protocol (``nasreg.Reporter``); this base shows nothing (the Python API's default).

    Every method is a no-op, so a reporter of your own overrides only what it shows. The engines
    call, in order:

    * a search: ``preflight(line)`` (the pre-flight estimate, one line, when it ran),
      ``run_plan(stages, start)`` once (``stages``: per stage ``(warmup_epochs, epochs, steps)``;
      ``start``: the ``(stage, epoch, step)`` it starts at, not 0 when resumed), then per stage
      ``stage_start(stage, epochs, steps, num_weights)``, ``step(done, info)`` after every step
      (``info["train_loss"]``), ``epoch_end(metrics)`` (the ``metrics.jsonl`` record),
      ``stage_end(stage)``, ``stage_summary(info)`` (the stage's figures: ``stage``, ``stages``,
      ``epochs``, ``warmup_epochs``, ``num_weights``, ``candidate_ops``, ``kept_ops`` (the next
      stage's candidate ops; None after the last stage), ``seconds``); ``close()`` when the
      search's display ends; ``search_end(summary)``;
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
    def run_plan(self, stages: list[tuple[int, int, int]], start: tuple[int, int, int] = (0, 0, 0)) -> None: ...
    def stage_start(self, stage: int, epochs: int, steps: int, num_weights: int) -> None: ...
    def step(self, done: int, info: dict[str, Any]) -> None: ...
    def epoch_end(self, metrics: dict[str, Any]) -> None: ...
    def stage_end(self, stage: int) -> None: ...
    def stage_summary(self, info: dict[str, Any]) -> None: ...
    def search_end(self, summary: dict[str, Any]) -> None: ...
    def evaluation_start(self, run_dir: Any) -> None: ...
    def train_start(self, epochs: int, steps: int, num_params: int) -> None: ...
    def train_end(self, results: dict[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


def chance_level_warning(results: dict[str, Any], margin: float = 1.5) -> str | None:
    """The warning line for a training from scratch whose test accuracy is at chance level
    (``<= margin / num_classes``), with the likely cause its own figures support; None otherwise.

    ``results`` is ``results.json``'s dict (``test_acc``, ``train_acc``, ``num_classes``, ``epochs``).
    """
    acc, classes = results.get("test_acc"), results.get("num_classes")
    if not isinstance(acc, (int, float)) or not isinstance(classes, int) or classes < 2:
        return None
    chance = 1.0 / classes
    if acc > margin * chance:
        return None
    train, epochs = results.get("train_acc"), results.get("epochs")
    few = f"{epochs} epoch{'s' if epochs != 1 else ''}" if isinstance(epochs, int) else "the epochs run"
    if not isinstance(train, (int, float)):
        cause = f"check the number of epochs ({few}) and the learning rate"
    elif train <= margin * chance:
        cause = (f"train accuracy {train:.2f} is at chance too: the network did not learn (too few epochs: "
                 f"{few}; a learning rate too high, so it diverged, or too low; or augmentation such as a "
                 "cutout as large as the image)")
    elif train >= 0.5 or train >= 3 * margin * chance:
        cause = (f"train accuracy {train:.2f} is not: the test images do not match the training ones "
                 "(another dataset, size or normalization), or the network overfits")
    else:
        cause = f"train accuracy {train:.2f} has barely left chance: train longer than {few}"
    return f"warning: test accuracy {acc:.2f} is chance level for {classes} classes (chance {chance:.2f}): {cause}"


class QuietReporter(Reporter):
    """Shows no progress; notices and warnings go to stderr (``nasreg ... -q``), and so does the
    chance-level line of a training whose test accuracy is at chance (:func:`chance_level_warning`)."""

    def message(self, text: str) -> None:
        print(text, file=sys.stderr)

    def train_end(self, results: dict[str, Any]) -> None:
        line = chance_level_warning(results)
        if line is not None:
            self.message(line)


#: The reporter of torchrun's ranks other than 0 (rank 0 speaks for all).
SilentReporter = Reporter


def _stage_label(stage: int, stages: int | None) -> str:
    """``stage 1/2`` (stages count from 1 on screen; ``metrics.jsonl`` keeps the index from 0)."""
    return f"stage {stage + 1}/{stages}" if stages else f"stage {stage + 1}"


def _acc(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def summary_line(info: dict[str, Any], accs: list[float]) -> str:
    """The line left on screen when a stage ends (``accs``: its epochs' validation accuracies)."""
    warm = info.get("warmup_epochs") or 0
    epochs = info.get("epochs", len(accs))
    text = f"{_stage_label(info['stage'], info.get('stages'))} done: {epochs} epochs"
    text += f" ({warm} warm-up)" if warm else ""
    if accs:
        text += f", val acc best {max(accs):.3f} last {accs[-1]:.3f}"
    ops, kept = info.get("candidate_ops"), info.get("kept_ops")
    if ops is not None:
        text += f", candidate ops {ops}" + (f" -> {kept} kept" if kept is not None else "")
    if info.get("seconds") is not None:
        text += f", {info['seconds']:.1f} s"
    return text


class _Lines(QuietReporter):
    """What the plain and the rich reporter share: the run clock and the texts of their lines."""

    def __init__(self) -> None:
        self.now = time.perf_counter  # the clock's time source (a test's fake)
        self.clock = RunClock(self.now)
        self.stages: int | None = None
        self._accs: list[float] = []

    def run_plan(self, stages, start=(0, 0, 0)):
        self.clock = RunClock(self.now)
        self.clock.set_plan(Plan([tuple(s) for s in stages]), start)
        self.stages = len(stages)

    def _begin_stage(self, stage: int, epochs: int, steps: int) -> None:
        self.clock.start_stage(stage, epochs, steps)
        self._accs = []

    def _begin_training(self, epochs: int, steps: int) -> None:
        self.clock = RunClock(self.now)
        self.clock.set_plan(Plan([(0, epochs, steps)], kind="train"))
        self.clock.start_stage(0, epochs, steps, warmup=0)
        self.stages = None

    def _where(self) -> str:
        """``stage 1/2 epoch 3/6 (warm-up)`` (or ``training epoch 3/10``): the current epoch."""
        c = self.clock
        if c.plan is not None and c.plan.kind == "train":
            return f"training epoch {min(c.epoch + 1, c.epochs)}/{c.epochs}"
        text = f"{_stage_label(c.stage, self.stages)} epoch {min(c.epoch + 1, c.epochs)}/{c.epochs}"
        return text + (" (warm-up)" if c.kind() == WARMUP else "")

    def _eta(self) -> str:
        what = "eta run" if self.stages else "eta"
        return f"{what} {clock_text(self.clock.remaining_seconds())}"

    def _epoch_text(self, metrics: dict[str, Any]) -> str:
        split = "test" if "test_acc" in metrics else "val"
        loss = metrics.get("train_loss")
        text = f"train loss {loss:.3f}" if isinstance(loss, (int, float)) else "train loss -"
        text += f" acc {_acc(metrics.get('train_acc'))} {split} acc {_acc(metrics.get(split + '_acc'))}"
        if isinstance(metrics.get("epoch_seconds"), (int, float)):
            text += f" {metrics['epoch_seconds']:.1f} s"
        return text

    def _end_epoch(self, metrics: dict[str, Any]) -> str:
        """Record the epoch; the plain line that tells it (its position, figures and the ETA after it)."""
        if "val_acc" in metrics and isinstance(metrics["val_acc"], (int, float)):
            self._accs.append(metrics["val_acc"])
        c = self.clock
        if isinstance(metrics.get("stage"), int):  # the record's position (a resumed run's too)
            c.stage = metrics["stage"]
        if isinstance(metrics.get("epoch"), int):
            c.epoch = metrics["epoch"]
        where = self._where()
        c.epoch_done()
        return f"{where} {self._epoch_text(metrics)} {self._eta()}"


class PlainReporter(_Lines):
    """Plain lines on a stream (default: stderr), one per stage start and end, per epoch and per
    training start; no animation, no ANSI codes; each line flushed. ``nasreg`` uses it when
    stderr is not a terminal (a log file, CI, nohup), or ``NO_COLOR`` is set, or ``TERM=dumb``::

        stage 1/2 epoch 3/6 (warm-up) train loss 1.234 acc 0.456 val acc 0.789 12.3 s eta run 4:10
    """

    def __init__(self, stream: TextIO | None = None):
        super().__init__()
        self._stream = stream

    @staticmethod
    def wanted(stream: Any = None, environ: Any = None) -> bool:
        """Whether progress on ``stream`` (default: stderr) should be plain lines: it is not a
        terminal (a log file, CI, nohup), or ``NO_COLOR`` is set, or ``TERM=dumb``."""
        stream = sys.stderr if stream is None else stream
        environ = os.environ if environ is None else environ
        try:
            tty = bool(stream.isatty())
        except (AttributeError, ValueError, OSError):
            tty = False
        return not tty or "NO_COLOR" in environ or environ.get("TERM") == "dumb"

    def _print(self, text: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            print(text, file=stream, flush=True)
        except (OSError, ValueError, AttributeError):  # a full or closed stderr: progress is not worth a run
            pass

    def message(self, text: str) -> None:
        self._print(text)

    def stage_start(self, stage, epochs, steps, num_weights):
        self._begin_stage(stage, epochs, steps)
        warm = self.clock.warmup
        self._print(f"{_stage_label(stage, self.stages)}: {epochs} epochs"
                    + (f" ({warm} warm-up)" if warm else "") + f" x {steps} steps, {num_weights:,} weights")

    def train_start(self, epochs, steps, num_params):
        self._begin_training(epochs, steps)
        self._print(f"training: {epochs} epochs x {steps} steps, {num_params:,} parameters")

    def step(self, done, info):
        self.clock.step_done(done)

    def epoch_end(self, metrics):
        self._print(self._end_epoch(metrics))

    def train_end(self, results):
        acc, seconds = results.get("test_acc"), results.get("wall_seconds")
        self._print("training done: " + (f"test acc {acc:.3f}" if isinstance(acc, (int, float)) else "no epoch ran")
                    + (f", {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""))
        super().train_end(results)  # the chance-level line, when it is

    def stage_summary(self, info):
        self._print(summary_line(info, self._accs))


class RichReporter(_Lines):
    """A live display on a rich console (default: stderr): a whole-run line (stage k of N, epoch,
    warm-up epochs marked, the run's ETA from the measured step times), then the epoch and step
    bars with the current losses and accuracies; a line per finished stage stays on screen."""

    def __init__(self, console: Any = None):
        from rich.console import Console

        super().__init__()
        self.console = console or Console(stderr=True)
        self.progress: Any = None
        self._run_task = None
        self._run_plan: Any = None  # the plan the run line shows (it stays from stage to stage)
        self._epoch_task = None
        self._step_task = None

    def _start(self, header: str, epochs_label: str, epochs: int, steps: int) -> None:
        if self.progress is None:  # started on first use: an early error prints no empty display
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            from rich.table import Column

            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True)), TimeElapsedColumn(),
                _eta_column(), console=self.console, transient=False)
            self.progress.start()
        self.console.print(header, highlight=False)
        c = self.clock
        same_run = self._run_task is not None and self._run_plan is c.plan  # a later stage: the run line stays
        for task in (self._epoch_task, self._step_task) + (() if same_run else (self._run_task,)):
            if task is not None:
                self.progress.remove_task(task)
        if same_run:
            self.progress.update(self._run_task, completed=c.done_steps(), info=self._where(), eta=self._eta())
        else:
            self._run_task = self.progress.add_task("run", total=max(c.total_steps(), 1), completed=c.done_steps(),
                                                    info=self._where(), eta=self._eta())
            self._run_plan = c.plan
        self._epoch_task = self.progress.add_task(epochs_label, total=epochs, completed=c.epoch, info="")
        self._step_task = self.progress.add_task("steps", total=steps, completed=c.step, info="")

    def stage_start(self, stage, epochs, steps, num_weights):
        self._begin_stage(stage, epochs, steps)
        warm = self.clock.warmup
        self._start(f"[bold cyan]{_stage_label(stage, self.stages)}[/]: {epochs} epochs"
                    + (f" ({warm} warm-up)" if warm else "") + f" x {steps} steps, {num_weights:,} weights",
                    "epochs", epochs, steps)

    def train_start(self, epochs, steps, num_params):
        self._begin_training(epochs, steps)
        self._start(f"[bold cyan]training[/]: {epochs} epochs x {steps} steps, {num_params:,} parameters",
                    "epochs", epochs, steps)

    def _update_run(self) -> None:
        self.progress.update(self._run_task, info=self._where(), completed=self.clock.done_steps(),
                             eta=self._eta())

    def step(self, done, info):
        self.clock.step_done(done)
        if self.progress is not None and self._step_task is not None:
            text = f"loss {info.get('train_loss', float('nan')):.3f}"
            self.progress.update(self._step_task, completed=done, info=text)
            self._update_run()

    def epoch_end(self, metrics):
        self._end_epoch(metrics)
        if self.progress is None:
            return
        split = "test" if "test_acc" in metrics else "val"
        info = (f"acc train {_acc(metrics.get('train_acc'))} {split} {_acc(metrics.get(split + '_acc'))}  "
                f"{split} loss {_acc(metrics.get(split + '_loss'))}")
        self.progress.update(self._epoch_task, advance=1, info=info)
        self.progress.reset(self._step_task)
        self._update_run()

    def stage_summary(self, info):
        text = summary_line(info, self._accs)
        if self.progress is not None:  # above the live display: it stays when the bars move on
            self.progress.console.print(text, highlight=False, markup=False, soft_wrap=True)
        else:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def message(self, text):
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def close(self):
        if self.progress is not None:
            self.progress.stop()
        self.progress, self._run_task, self._epoch_task, self._step_task = None, None, None, None
        self._run_plan = None


def _eta_column() -> Any:
    from rich.progress import ProgressColumn, TimeRemainingColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        """``eta 4:10``: the whole run's estimate on the run line, rich's own on the bars."""

        def __init__(self) -> None:
            super().__init__()
            self._remaining = TimeRemainingColumn()

        def render(self, task: Any) -> Any:
            eta = task.fields.get("eta")
            if eta is not None:
                return Text(eta, style="progress.remaining", no_wrap=True)
            return Text.assemble("eta ", self._remaining.render(task), no_wrap=True)

    return EtaColumn()



#: The same bars for training a genotype's network (kept for scripts that named it).
RichTrainReporter = RichReporter
