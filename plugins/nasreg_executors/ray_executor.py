"""The ``ray`` executor: one Ray task per trial or child, its CPUs and GPUs declared.

Ray is imported when the executor first runs tasks (``pip install 'nasreg[ray]'``); building the
executor only checks that it is installed, so ``nasreg validate`` catches a missing extra
without connecting anywhere. ``address`` empty starts a Ray instance on this machine for the run
(and stops it at the end); otherwise the executor connects to that cluster (``"auto"``: the one
this machine belongs to; ``"ray://host:10001"``: a remote one) and leaves it running.

Each task calls :meth:`nasreg.Executor.run_task` in a Ray worker process, which keeps the
task's ``setup(payload)`` between the tasks it runs (a child trainer's dataset is loaded once
per worker). The payload is put into Ray's object store once per :meth:`map`.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from typing import Any, Iterator

import nasreg

__all__ = ["RayExecutor"]

INSTALL = "executor 'ray' needs Ray: pip install 'nasreg[ray]'"


def _call(fn: Any, setup: Any, payload: Any, key: Any, task: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = nasreg.Executor.run_task(fn, setup, payload, key, task)
    return value, time.perf_counter() - t0


class RayExecutor(nasreg.Executor):
    """Tasks as Ray tasks on a cluster (``address``) or on a Ray instance started for the run."""

    name = "ray"

    def __init__(self, address: str = "", num_cpus: int = 0, cpus_per_task: int = 1, gpus_per_task: float = 0.0,
                 shared_filesystem: bool = False):
        if importlib.util.find_spec("ray") is None:
            raise nasreg.PluginError(INSTALL)
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_task = max(1, int(cpus_per_task))
        self.gpus_per_task = float(gpus_per_task)
        self.shared_filesystem = bool(shared_filesystem)
        #: the torch threads a task gets (a study records them in each trial's spec)
        self.threads = self.cpus_per_task
        self.slots = max(1, (num_cpus or 1) // self.cpus_per_task) if num_cpus else 1
        self._started = False
        self._running: list[Any] = []

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise nasreg.PluginError(INSTALL) from None
        if not ray.is_initialized():
            keys: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                    "logging_level": logging.ERROR, "configure_logging": True}
            if self.address:
                keys["address"] = self.address
            elif self.num_cpus:
                keys["num_cpus"] = self.num_cpus
            try:
                ray.init(**keys)
            except Exception as exc:  # noqa: BLE001 - a cluster that cannot be reached, ...
                where = self.address or "a local Ray instance"
                raise nasreg.PluginError(f"executor 'ray': cannot start or reach {where}: "
                                         f"{' '.join(str(exc).split())[:300]}") from None
            self._started = not self.address
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = max(1, cpus // self.cpus_per_task)
        return ray

    def describe(self) -> str:
        where = self.address or "a local Ray instance"
        return (f"ray executor on {where}: {self.cpus_per_task} CPUs"
                + (f" and {self.gpus_per_task:g} GPUs" if self.gpus_per_task else "") + " per task")

    def map(self, fn, tasks, *, setup=None, payload=None, payload_key=None, resources=None, ordered=True,
            fresh_process=False) -> Iterator[nasreg.Outcome]:
        ray = self._ray()
        tasks = list(tasks)
        cpus = max(self.cpus_per_task, resources.cpus if resources else 1)
        gpus = max(self.gpus_per_task, resources.gpus if resources else 0.0)
        remote = ray.remote(max_calls=1 if fresh_process else 0)(_call).options(num_cpus=cpus, num_gpus=gpus)
        payload_ref = ray.put(payload)
        return self._collect(ray, [remote.remote(fn, setup, payload_ref, payload_key, t) for t in tasks], ordered)

    def _collect(self, ray: Any, refs: list[Any], ordered: bool) -> Iterator[nasreg.Outcome]:
        index = {ref: i for i, ref in enumerate(refs)}
        self._running = list(refs)
        done: dict[int, nasreg.Outcome] = {}
        next_out = 0
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                ref = ready[0]
                i = index[ref]
                try:
                    value, seconds = ray.get(ref)
                    outcome = nasreg.Outcome(i, value=value, seconds=seconds)
                except Exception as exc:  # noqa: BLE001 - the task's failure is its outcome
                    cause = getattr(exc, "cause", None) or exc
                    outcome = nasreg.Outcome(i, error=_one_line(cause), exception=cause)
                if ref in self._running:
                    self._running.remove(ref)
                if not ordered:
                    yield outcome
                    continue
                done[i] = outcome
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
            for i in sorted(done):
                yield done.pop(i)
        finally:
            self.request_stop()

    def request_stop(self) -> None:
        if not self._running:
            return
        import ray

        for ref in list(self._running):
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - already finished
                pass
        self._running = []

    def close(self) -> None:
        self.request_stop()
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def _one_line(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, nasreg.NasregError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:2000] or type(exc).__name__
