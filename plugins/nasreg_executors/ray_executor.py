"""The ``ray`` executor: one Ray task per trial or child, its CPUs and GPUs declared.

Ray is imported when the executor first runs tasks (``pip install 'nasreg[ray]'``); building the
executor only checks that it is installed, so ``nasreg validate`` catches a missing extra
without connecting anywhere. ``address`` empty starts a Ray instance on this machine at the first
:meth:`RayExecutor.map` (and :meth:`RayExecutor.close` stops it); otherwise the executor connects
to that cluster (``"auto"``: the one this machine belongs to; ``"ray://host:10001"``: a remote one
through Ray Client) and leaves it running. A Ray already initialized in this process (a caller's
own ``ray.init``) is used as it is and left running too.

Each task calls :meth:`nasreg.Executor.run_task` in a Ray worker process, which keeps the task's
``setup(payload)`` between the tasks it runs (a child trainer's dataset is loaded once per
worker); the payload is put into Ray's object store once per :meth:`RayExecutor.map`. A task runs
with as many torch threads as the CPUs it declared. Ray's own output (its start-up lines, the
workers' stdout) stays out of the terminal: ``log_to_driver`` off, no dashboard, Ray's logger at
ERROR.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import time
from typing import Any, Iterator

import nasreg

__all__ = ["RayExecutor"]

INSTALL = "executor 'ray' needs Ray: pip install 'nasreg[ray]'"
#: How often a waiting :meth:`RayExecutor.map` looks at a stop request.
POLL_SECONDS = 0.5


def _call(fn: Any, setup: Any, payload: Any, key: Any, task: Any, threads: int) -> tuple[Any, float]:
    """The body of every Ray task: the task's threads, then ``fn`` with the worker's cached context."""
    import torch

    torch.set_num_threads(max(1, threads))
    t0 = time.perf_counter()
    value = nasreg.Executor.run_task(fn, setup, payload, key, task)
    return value, time.perf_counter() - t0


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(exc: BaseException) -> str:
    """A task's failure as one line, never Ray's traceback dump: a nasreg error's message,
    otherwise ``Type: message``; for Ray's own errors (a worker that crashed, a cancelled task,
    an exception that could not be sent back) the first line of Ray's message, or the original
    exception's last line where Ray quotes it."""
    if isinstance(exc, nasreg.NasregError):
        text = str(exc)
    elif type(exc).__module__.startswith("ray."):
        text = _ray_line(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:2000] or type(exc).__name__


def _ray_line(exc: BaseException) -> str:
    if type(exc).__name__ == "TaskCancelledError":  # Ray's message is a task ID, or nothing
        return "TaskCancelledError: the task was cancelled (the caller stopped)"
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    if "Original exception:" in lines and lines[-1] != "Original exception:":
        name, sep, message = lines[-1].partition(": ")  # "module.Error: message", the traceback's last line
        return f"{name.rsplit('.', 1)[-1]}: {message}" if sep else lines[-1]
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def _cause(exc: BaseException) -> BaseException:
    """The exception the task raised (``RayTaskError.cause``), or Ray's own error (a worker that
    crashed, a cancelled task) as it is."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class RayExecutor(nasreg.Executor):
    """Tasks as Ray tasks on a cluster (``address``) or on a Ray instance started for the run.

    ``cpus_per_task`` and ``gpus_per_task`` are declared to Ray's scheduler (a caller's
    :class:`nasreg.Resources` raise the CPUs, and ask for a GPU where ``gpus_per_task`` is 0);
    ``max_in_flight`` bounds how many tasks are submitted at once (0: all of them);
    ``max_retries``: how often Ray runs a task again whose worker died (0: the task fails, as a
    local worker's would; a preemptible cluster wants more); ``runtime_env`` is Ray's
    (``working_dir``, ``pip``, ``env_vars``) for a cluster whose workers lack this machine's files
    or packages."""

    name = "ray"

    def __init__(self, address: str = "", num_cpus: int = 0, cpus_per_task: int = 1, gpus_per_task: float = 0.0,
                 shared_filesystem: bool = False, max_in_flight: int = 0, max_retries: int = 0,
                 runtime_env: dict[str, Any] | None = None):
        if importlib.util.find_spec("ray") is None:
            raise nasreg.PluginError(INSTALL)
        self.address = str(address)
        self.num_cpus = int(num_cpus)
        self.cpus_per_task = max(1, int(cpus_per_task))
        self.gpus_per_task = float(gpus_per_task)
        self.shared_filesystem = bool(shared_filesystem)
        self.max_in_flight = max(0, int(max_in_flight))
        self.max_retries = max(0, int(max_retries))
        self.runtime_env = dict(runtime_env) if runtime_env else None
        #: the torch threads a task gets (a study records them in each trial's spec)
        self.threads = self.cpus_per_task
        self._cluster_cpus: int | None = None
        self._started = False
        self._stop = False
        self._running: list[Any] = []

    @property
    def slots(self) -> int:  # type: ignore[override]
        """How many tasks run at once: the cluster's CPUs // ``cpus_per_task`` once connected;
        before, a guess (a local instance: ``num_cpus`` or this machine's cores; a cluster: 1)."""
        if self._cluster_cpus is not None:
            cpus = self._cluster_cpus
        elif self.address:
            cpus = self.cpus_per_task
        else:
            cpus = self.num_cpus or os.cpu_count() or 1
        return max(1, cpus // self.cpus_per_task)

    def _init_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
        if self.runtime_env:
            keys["runtime_env"] = self.runtime_env
        if self.address:
            keys["address"] = self.address
        else:
            keys["include_dashboard"] = False
            if self.num_cpus:
                keys["num_cpus"] = self.num_cpus
        return keys

    def _ray(self) -> Any:
        """Ray, connected (``ray.init`` on first use unless this process already did)."""
        try:
            import ray
        except ImportError:
            raise nasreg.PluginError(INSTALL) from None
        if not ray.is_initialized():
            try:
                ray.init(**self._init_keys())
            except Exception as exc:  # noqa: BLE001 - a cluster that cannot be reached, a bad runtime_env, ...
                where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
                raise nasreg.PluginError(f"executor 'ray': cannot start or reach {where}: "
                                         f"{' '.join(str(exc).split())[:300]}") from None
            self._started = not self.address
        self._cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        return ray

    def describe(self) -> str:
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
        gpus = f" and {self.gpus_per_task:g} GPUs" if self.gpus_per_task else ""
        return f"ray executor on {where}: {self.slots} at a time, {self.cpus_per_task} CPUs{gpus} per task"

    def map(self, fn, tasks, *, setup=None, payload=None, payload_key=None, resources=None, ordered=True,
            fresh_process=False) -> Iterator[nasreg.Outcome]:
        ray = self._ray()
        tasks = list(tasks)
        cpus = max(self.cpus_per_task, resources.cpus if resources else 1)
        gpus = self.gpus_per_task or (resources.gpus if resources else 0.0)
        self._check_fits(ray, cpus, gpus)
        # max_calls=1: a fresh worker process per task; 0: workers are reused (their setup cached)
        remote = ray.remote(max_calls=1 if fresh_process else 0)(_call).options(
            num_cpus=cpus, num_gpus=gpus, max_retries=self.max_retries)
        payload_ref = ray.put(payload)
        self._stop = False

        def submit(i: int) -> Any:
            return remote.remote(fn, setup, payload_ref, payload_key, tasks[i], cpus)

        return self._collect(ray, submit, len(tasks), ordered)

    def _check_fits(self, ray: Any, cpus: int, gpus: float) -> None:
        """On a local instance (nothing scales it up), a task that asks for more than it has would
        wait forever: one line instead. A cluster may add nodes: its tasks wait."""
        if self.address:
            return
        have = ray.cluster_resources()
        for what, need, key in (("CPUs", cpus, "cpus_per_task"), ("GPUs", gpus, "gpus_per_task")):
            if need > float(have.get(what[:-1], 0)):
                raise nasreg.PluginError(
                    f"executor 'ray': a task asks for {need:g} {what} but the local Ray instance has "
                    f"{float(have.get(what[:-1], 0)):g} ({key}, or the CPUs and GPU a child or trial declares)")

    def _collect(self, ray: Any, submit: Any, n: int, ordered: bool) -> Iterator[nasreg.Outcome]:
        """Submit (at most ``max_in_flight`` at a time), wait, and yield the outcomes; whatever is
        still running when the caller stops iterating is cancelled."""
        window = self.max_in_flight or n
        index: dict[Any, int] = {}
        submitted: dict[int, float] = {}
        done: dict[int, nasreg.Outcome] = {}
        next_submit = next_out = 0
        cancelled = False
        self._running = []
        try:
            while next_out < n:
                while next_submit < n and len(self._running) < window and not self._stop:
                    ref = submit(next_submit)
                    index[ref], submitted[next_submit] = next_submit, time.perf_counter()
                    self._running.append(ref)
                    next_submit += 1
                if not self._running:
                    break  # stopped: nothing more is submitted
                if self._stop and not cancelled:
                    cancelled = self._cancel_running(ray)
                ready, _ = ray.wait(list(self._running), num_returns=1, timeout=POLL_SECONDS)
                if not ready:
                    continue  # nothing finished: look at the stop flag again
                ref = ready[0]
                self._running.remove(ref)
                outcome = self._outcome(ray, ref, index[ref], submitted[index[ref]])
                if not ordered:
                    next_out += 1
                    yield outcome
                    continue
                done[outcome.index] = outcome
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
            for i in sorted(done):  # after a stop: what finished, in order
                yield done.pop(i)
        finally:
            self._cancel()

    @staticmethod
    def _outcome(ray: Any, ref: Any, i: int, since: float) -> nasreg.Outcome:
        try:
            value, seconds = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - the task's failure is its outcome
            cause = _cause(exc)
            # Ray's own errors (a crashed worker, a cancelled task, an exception that did not
            # survive pickling) are not the task's: no exception, as a local worker's death
            own = None if type(cause).__module__.startswith("ray.") else cause
            return nasreg.Outcome(i, error=one_line(cause), exception=own, seconds=time.perf_counter() - since)
        return nasreg.Outcome(i, value=value, seconds=seconds)

    def _cancel(self) -> None:
        """Cancel what is still running; what finished meanwhile is fetched and dropped (Ray would
        print the traceback of a failure nobody fetched, after the caller's one-line error)."""
        running, self._running = self._running, []
        if not running:
            return
        import ray

        try:
            ready, rest = ray.wait(running, num_returns=len(running), timeout=0)
        except Exception:  # noqa: BLE001 - the connection is gone: nothing to cancel
            return
        for ref in ready:
            try:
                ray.get(ref, timeout=0)
            except Exception:  # noqa: BLE001 - its failure is no one's outcome now
                pass
        for ref in rest:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - finished meanwhile
                pass

    def _cancel_running(self, ray: Any) -> bool:
        """Cancel every submitted task (a running one gets Ray's KeyboardInterrupt at its next
        Python instruction); they come back as failures."""
        for ref in list(self._running):
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - finished meanwhile
                pass
        return True

    def request_stop(self) -> None:
        """Submit nothing more and cancel what is submitted; the tasks already finished keep their
        results, the cancelled ones come back as failures. Only sets a flag (it may be called from
        a signal handler, in the middle of a Ray call): the running :meth:`map` cancels within
        ``POLL_SECONDS``."""
        self._stop = True

    def close(self) -> None:
        self._stop = True
        self._cancel()
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            self._cluster_cpus = None
