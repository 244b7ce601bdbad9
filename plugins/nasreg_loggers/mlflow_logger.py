"""The ``mlflow`` logger: one MLflow run per run directory, through ``mlflow.MlflowClient``
(no global tracking URI or active run is set: other code in the process is not affected).

- params: the resolved spec flattened (``search.epochs``, ``selector.clusterer.n_clusters``,
  ``evaluate.lr``, ...; a list as its JSON text), values cut to MLflow's length limit; logged
  when the MLflow run is created;
- metrics: ``search/<key>`` per search epoch at its global epoch step (epochs counted across
  stages), ``evaluate/<key>`` or ``train/<key>`` per training epoch at its epoch;
- artifacts: the run directory's files when the search ends (``genotype.json``, ``spec.toml``,
  ``summary.json``, ``metrics.jsonl``, ``stages.json``, the figures, ...), the evaluation's under
  ``eval/`` when it ends; the ``*.pt`` checkpoints only with ``log_checkpoints``;
- status: FINISHED, FAILED (an error) or KILLED (Ctrl-C, SIGTERM) when the engine closes it.

The MLflow run's id is kept in ``RUN_DIR/mlflow-run.json``: a search's ``[evaluate]`` (run
separately, into ``RUN_DIR/eval/``) and ``nasreg resume`` continue the same MLflow run. A resumed
search trains the epochs after its last checkpoint again: their metrics are logged again at the
same steps (MLflow keeps both values of such a step).

The default store is a local file store, ``file:RUN_DIR/mlruns`` (``mlflow ui --backend-store-uri
RUN_DIR/mlruns``). MLflow 3 refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE`` is true: it is
set (when unset) for a ``file:`` tracking URI.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import nasreg
from nasreg import hookimpl

from .common import SEARCH_POSITION_KEYS, flatten, numbers, run_files, search_lines

__all__ = ["MlflowLogger", "RECORD_FILE"]

#: Where the MLflow run of a run directory is recorded (tracking URI, experiment and run ids).
RECORD_FILE = "mlflow-run.json"
#: MLflow's status for each way a run ends (the engine's ``close(status)``).
STATUSES = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


class MlflowLogger:
    """One nasreg run's MLflow run, opened at the first hook (never by the factory)."""

    def __init__(self, tracking_uri: str = "", experiment: str = "", run_name: str = "",
                 log_checkpoints: bool = False):
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.log_checkpoints = log_checkpoints
        self.client: Any = None
        #: The open MLflow run's id (None: none open, or opening it failed).
        self.run_id: str | None = None
        self._next_step: int | None = None

    # -- opening -----------------------------------------------------------------------------------

    def open(self, record_dir: Path, spec: Any) -> None:
        """Continue the MLflow run ``record_dir`` records, or create one (and log the params)."""
        files = nasreg.RunDir(record_dir)
        record = files.read_json(RECORD_FILE) if files.exists(RECORD_FILE) else None
        if record is not None:
            self.client = _client(str(record["tracking_uri"]))
            self.run_id = str(record["run_id"])
            self.client.update_run(self.run_id, status="RUNNING")
            return
        uri = self.tracking_uri or (Path(record_dir).resolve() / "mlruns").as_uri()
        client = _client(uri)
        name = self.experiment or spec.run.name or Path(record_dir).name
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(name)
        mlrun = client.create_run(experiment_id, run_name=self.run_name or spec.run.name or None,
                                  tags={"nasreg.run_dir": str(record_dir), "nasreg.spec_hash": spec.digest()})
        self.client, self.run_id = client, mlrun.info.run_id
        files.write_json(RECORD_FILE, {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": self.run_id})
        self._log_params(spec.resolved())

    def _log_params(self, resolved: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params = [Param(key, _param_value(value, MAX_PARAM_VAL_LENGTH)) for key, value in flatten(resolved)]
        for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def _log_metrics(self, prefix: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"{prefix}/{k}", v, now, step) for k, v in values.items()])

    def _log_files(self, folder: Path, artifact_path: str | None = None) -> None:
        for path in run_files(folder, self.log_checkpoints):
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    # -- a search --------------------------------------------------------------------------------

    @hookimpl
    def on_run_start(self, run):
        self.open(Path(run.run_dir), run.spec)

    @hookimpl
    def on_epoch_end(self, run, stage, epoch, metrics):
        if self.run_id is None:
            return
        if self._next_step is None:  # this process's first epoch: its step is the journal's last line
            self._next_step = max(len(search_lines(run.run_dir)) - 1, 0)
        step, self._next_step = self._next_step, self._next_step + 1
        self._log_metrics("search", numbers(metrics, skip=SEARCH_POSITION_KEYS), step)

    @hookimpl(trylast=True)  # after the plots plugin has drawn its figures
    def on_run_end(self, run, genotype, summary):
        if self.run_id is None:
            return
        self._log_files(Path(run.run_dir))

    # -- a training from scratch ------------------------------------------------------------------

    @hookimpl
    def on_train_start(self, run, kind, epochs, steps, params):
        # A search's [evaluate] (RUN_DIR/eval) continues the search's MLflow run.
        record_dir = Path(run.run_dir).parent if kind == "evaluate" else Path(run.run_dir)
        self.open(record_dir, run.spec)
        self._log_metrics(kind, {"params": float(params)}, 0)

    @hookimpl
    def on_train_epoch_end(self, run, kind, epoch, metrics):
        if self.run_id is not None:
            self._log_metrics(kind, numbers(metrics, skip=("epoch",)), epoch)

    @hookimpl(trylast=True)
    def on_train_end(self, run, kind, results):
        if self.run_id is not None:
            self._log_files(Path(run.run_dir), "eval" if kind == "evaluate" else None)

    # -- the end -----------------------------------------------------------------------------------

    def close(self, status: str) -> None:
        """End the MLflow run: FINISHED, FAILED or KILLED (called by the engine at the run's end)."""
        if self.run_id is None:
            return
        run_id, self.run_id = self.run_id, None
        self.client.set_terminated(run_id, status=STATUSES.get(status, "FAILED"))


def _client(uri: str) -> Any:
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: file stores are opt-in
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _param_value(value: Any, limit: int) -> str:
    """A param's value as MLflow stores it: text (a list as JSON), cut to ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, bool)) else str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
