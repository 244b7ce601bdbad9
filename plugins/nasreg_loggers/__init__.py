"""Built-in plugin ``loggers``: experiment trackers a spec switches on with ``[run] loggers``.

Registers the loggers

- ``tensorboard`` (:mod:`nasreg_loggers.tensorboard_logger`): TensorBoard event files in the run
  directory (``log_dir``, default ``tensorboard/``): per epoch the search's and the training's
  scalars, per stage every edge's alpha softmax and architecture-gradient trajectories, at the
  end the genotype as text and the run directory's figures as images. Needs
  ``pip install 'nasreg[tensorboard]'``.
- ``mlflow`` (:mod:`nasreg_loggers.mlflow_logger`): one MLflow run per run directory (the search
  and its ``[evaluate]`` together): the resolved spec as params, the per-epoch metrics, the run
  directory's files as artifacts; a local file store ``RUN_DIR/mlruns`` unless ``tracking_uri``
  names another. Needs ``pip install 'nasreg[mlflow]'``.

Both are plain lifecycle-hook observers: the engines register the object a factory returns for
one run and call its ``close(status)`` at the end. A factory only checks that its library is
installed (``nasreg validate`` builds it): files and connections are opened by the first hook.
"""

from __future__ import annotations

from typing import Annotated

from nasreg import Range, hookimpl

from .common import require

__all__ = ["tensorboard", "mlflow"]


def tensorboard(log_dir: str = "tensorboard",
                flush_secs: Annotated[int, Range(ge=1, le=86_400)] = 30):
    """TensorBoard event files: scalars per epoch, alphas and gradients per stage, genotype and figures.

    ``log_dir``: the folder of the event files, relative to the run directory (a search's
    ``[evaluate]`` writes its own under ``RUN_DIR/eval/``); ``flush_secs``: how often pending
    events are written to disk (they are also flushed at every stage's and run's end)."""
    if not log_dir.strip() or "\0" in log_dir:
        raise ValueError(f"log_dir: expected a folder path, got {log_dir!r}")
    require("tensorboard", "tensorboard", "TensorBoard")
    from .tensorboard_logger import TensorBoardLogger

    return TensorBoardLogger(log_dir=log_dir, flush_secs=flush_secs)


def mlflow(tracking_uri: str = "", experiment: str = "", run_name: str = "", log_checkpoints: bool = False):
    """MLflow: the resolved spec as params, per-epoch metrics, the run directory's files as artifacts.

    ``tracking_uri``: where runs are tracked (empty: a local file store, ``RUN_DIR/mlruns``);
    ``experiment``: the MLflow experiment (empty: the spec's ``[run] name``); ``run_name``: the
    MLflow run's name (empty: the spec's ``[run] name``); ``log_checkpoints``: also upload the
    ``*.pt`` checkpoints as artifacts."""
    require("mlflow", "mlflow", "MLflow")
    from .mlflow_logger import MlflowLogger

    return MlflowLogger(tracking_uri=tracking_uri, experiment=experiment, run_name=run_name,
                        log_checkpoints=log_checkpoints)


@hookimpl
def register_loggers(register):
    register("tensorboard", tensorboard)
    register("mlflow", mlflow)
