"""The ``tensorboard`` logger: a run's epochs, alphas, gradients, genotype and figures as
TensorBoard events, written with ``torch.utils.tensorboard.SummaryWriter``.

Into ``RUN_DIR/<log_dir>`` (a search; ``nasreg train``) or ``RUN_DIR/eval/<log_dir>`` (a search's
``[evaluate]``: its own folder, so that its epoch steps never meet the search's):

======================================  ===========================================================
``search/<key>``                        every number of a search epoch's ``metrics.jsonl`` line
                                        (``train_loss``, ``val_acc``, ``lr``, seconds, memory), at
                                        the global epoch step (epochs counted across stages)
``alphas/<cell type>/edge<k>/<op>``     the softmax weight of every candidate of every edge, per
                                        epoch (written when the stage ends: the op names are its
                                        ``StageResult.candidates``)
``gradients/<cell type>/edge<k>/<op>``  the architecture-gradient statistic per joint epoch
                                        (``StageResult.grad_history``, DG-DARTS's trajectories)
``genotype``                            the genotype, as text, at the run's end
``plots/<file>``                        the run directory's figures (``alphas.png``,
                                        ``cell_<type>.png``, ``gradients_stage<N>.png``) as images
``evaluate/<key>``, ``train/<key>``     every number of a training epoch's line (``lr``,
                                        ``train_loss``, ``test_acc``, ...) at its epoch; at the
                                        end ``curves.png`` as ``plots/curves``
======================================  ===========================================================

A resumed run reopens the folder with ``purge_step`` at the first epoch it trains: TensorBoard
then drops the events an interrupted process had written from that step on (the epochs after
the last checkpoint, trained again), so no step appears twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nasreg
from nasreg import hookimpl

from .common import SEARCH_POSITION_KEYS, numbers, search_lines, stage_steps

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger:
    """One run's TensorBoard writer, opened at the first event (never by the factory)."""

    def __init__(self, log_dir: str = "tensorboard", flush_secs: int = 30):
        #: The event files' folder, relative to the run directory.
        self.log_dir = log_dir
        self.flush_secs = flush_secs
        #: Open writers by folder (one per run directory this object logs).
        self._writers: dict[Path, Any] = {}
        #: The global epoch step of the search's next epoch (None until its first epoch here).
        self._next_step: int | None = None

    def writer(self, run_dir: str | Path, purge_step: int | None = None) -> Any:
        """The writer of ``run_dir``'s event folder; opened on first use with ``purge_step``."""
        folder = Path(run_dir) / self.log_dir
        if folder not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[folder] = SummaryWriter(log_dir=str(folder), flush_secs=self.flush_secs,
                                                  purge_step=purge_step)
        return self._writers[folder]

    # -- a search --------------------------------------------------------------------------------

    @hookimpl
    def on_epoch_end(self, run, stage, epoch, metrics):
        if self._next_step is None:  # this process's first epoch: its step is the journal's last line
            self._next_step = max(len(search_lines(run.run_dir)) - 1, 0)
        step, self._next_step = self._next_step, self._next_step + 1
        writer = self.writer(run.run_dir, purge_step=step)
        for key, value in numbers(metrics, skip=SEARCH_POSITION_KEYS).items():
            writer.add_scalar(f"search/{key}", value, step)

    @hookimpl
    def on_stage_end(self, run, stage, result):
        epochs = stage_steps(search_lines(run.run_dir), stage)
        writer = self.writer(run.run_dir)
        for step, line in epochs:
            for cell_type, edges in (line.get("alphas") or {}).items():
                _per_op(writer, f"alphas/{cell_type}", edges, result.candidates.get(cell_type, []), step)
        joint = [step for step, line in epochs if line.get("joint")]
        for cell_type, edges in (result.grad_history or {}).items():
            names = result.candidates.get(cell_type, [])
            for e, ops in enumerate(edges):
                for o, values in enumerate(ops):
                    tag = f"gradients/{cell_type}/edge{e}/{_op(names, e, o)}"
                    for step, value in zip(joint, values):
                        writer.add_scalar(tag, float(value), step)
        writer.flush()

    @hookimpl(trylast=True)  # after the plots plugin has drawn its figures
    def on_run_end(self, run, genotype, summary):
        step = max(len(search_lines(run.run_dir)) - 1, 0)
        writer = self.writer(run.run_dir)
        writer.add_text("genotype", genotype.describe(), step)
        _add_images(writer, run.run_dir, step)
        writer.flush()

    # -- a training from scratch ([evaluate], nasreg train) ----------------------------------------

    @hookimpl
    def on_train_epoch_end(self, run, kind, epoch, metrics):
        writer = self.writer(run.run_dir, purge_step=epoch)
        for key, value in numbers(metrics, skip=("epoch",)).items():
            writer.add_scalar(f"{kind}/{key}", value, epoch)

    @hookimpl(trylast=True)
    def on_train_end(self, run, kind, results):
        writer = self.writer(run.run_dir)
        step = max(int(results.get("epochs") or 1) - 1, 0)
        for key in ("test_acc", "test_error", "test_loss", "train_acc"):
            value = results.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(f"{kind}/final_{key}", float(value), step)
        _add_images(writer, run.run_dir, step)
        writer.flush()

    # -- the end -----------------------------------------------------------------------------------

    def close(self, status: str) -> None:
        """Flush and close every writer (called by the engine at the run's end, whatever its status)."""
        writers, self._writers = list(self._writers.values()), {}
        for writer in writers:
            writer.close()


def _op(names: list[list[str]], edge: int, index: int) -> str:
    """The name of candidate ``index`` of ``edge`` (its index where the stage's list lacks it)."""
    try:
        return str(names[edge][index])
    except (IndexError, TypeError):
        return f"op{index}"


def _per_op(writer: Any, prefix: str, edges: list[list[float]], names: list[list[str]], step: int) -> None:
    for e, weights in enumerate(edges):
        for o, weight in enumerate(weights):
            writer.add_scalar(f"{prefix}/edge{e}/{_op(names, e, o)}", float(weight), step)


def _add_images(writer: Any, run_dir: str | Path, step: int) -> None:
    """Every ``*.png`` directly in ``run_dir`` as an image ``plots/<stem>``; a file that cannot be
    read (or no PIL to encode it) is one warning, never a failure."""
    for path in sorted(Path(run_dir).glob("*.png")):
        try:
            import matplotlib.image as mpimg

            pixels = mpimg.imread(path)
            if pixels.ndim == 2:
                pixels = pixels[:, :, None]
            writer.add_image(f"plots/{path.stem}", pixels[:, :, :3] if pixels.shape[2] > 3 else pixels,
                             step, dataformats="HWC")
        except Exception as exc:  # noqa: BLE001 - a figure is evidence, not a result
            nasreg.warn(f"tensorboard: could not log {path.name}: {type(exc).__name__}: {exc}")
