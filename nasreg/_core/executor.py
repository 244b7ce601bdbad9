"""Executors: one interface for every set of independent trainings.

A study's trials and a sampling strategy's children are independent tasks: a function applied
to each of a list of task values. An :class:`Executor` decides where they run (this process, a
pool of processes on this machine, a Ray cluster); the caller decides what runs::

    with executor:
        for outcome in executor.map(train_one, tasks, setup=load_data, payload=snapshot):
            record(outcome.index, outcome.get())     # get() re-raises the task's exception

``fn(context, task)`` computes one result; ``context`` is ``setup(payload)``, made once per
worker process and ``payload_key`` (None without ``setup``), so a worker that trains many
children loads its dataset once. ``fn``, ``setup``, ``payload``, the tasks and the results must
pickle (module-level functions, plain data) for every executor that uses other processes.

Executors are registered like every other kind (``register_executors``); the built-in ones are
``local`` (:class:`LocalExecutor`) and ``ray`` (the ``executors`` plugin).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from .errors import NasregError

__all__ = ["Executor", "LocalExecutor", "Outcome", "Resources", "free_cores", "split_cores"]


@dataclass(frozen=True)
class Resources:
    """What one task needs: CPU cores (its torch threads) and GPUs (fractions allowed, as in Ray)."""

    cpus: int = 1
    gpus: float = 0.0


@dataclass
class Outcome:
    """One task's result: ``value``, or the one-line ``error`` and the ``exception`` it raised
    (None where it could not travel back: a worker process that died)."""

    index: int
    value: Any = None
    error: str | None = None
    exception: BaseException | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def get(self) -> Any:
        """The value, or the task's exception raised again (a :class:`NasregError` with the
        one-line error where the exception itself did not come back)."""
        if self.error is None:
            return self.value
        if self.exception is not None:
            raise self.exception
        raise NasregError(self.error)


def describe_error(exc: BaseException) -> str:
    """An exception as one line: a nasreg error's message, otherwise ``Type: message``."""
    text = str(exc) if isinstance(exc, NasregError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:2000] or type(exc).__name__


class Executor:
    """Where independent tasks run. Subclasses implement :meth:`map`; ``slots`` says how many
    run at once (a caller sizes its thread budget from it)."""

    #: The registry name (for messages and the report).
    name = "executor"
    #: Whether a task's files (run directories) are visible to the caller as the task writes them.
    shared_filesystem = True
    slots = 1

    def map(self, fn: Callable[[Any, Any], Any], tasks: Sequence[Any], *,
            setup: Callable[[Any], Any] | None = None, payload: Any = None, payload_key: str | None = None,
            resources: Resources | None = None, ordered: bool = True,
            fresh_process: bool = False) -> Iterator[Outcome]:
        """Run ``fn(setup(payload), task)`` for every task; yield an :class:`Outcome` per task, in
        task order (``ordered``) or as they finish. A failed task is an outcome with ``error``;
        the others go on. ``fresh_process``: each task in a process of its own (a study's trials:
        nothing of one leaks into the next), where the executor uses processes. Closing the
        iterator early (or an exception in the caller) stops what still runs."""
        raise NotImplementedError

    def request_stop(self) -> None:
        """Ask the running tasks to stop at their next safe point (a checkpoint); those already
        finished keep their results. Called from a signal handler: must not block."""

    def close(self) -> None:
        """Release workers, connections and pools."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.name} executor, {self.slots} at a time"

    @staticmethod
    def run_task(fn: Callable[[Any, Any], Any], setup: Callable[[Any], Any] | None, payload: Any, key: Any,
                 task: Any) -> Any:
        """``fn(context, task)`` with this worker process's cached context: what an executor that
        runs tasks in worker processes of its own (a Ray worker) calls for each task."""
        return run_task(fn, setup, payload, key, task)


# --- cores --------------------------------------------------------------------------------------


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; the CPU count elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def free_cores() -> int:
    """The usable cores that other work is not keeping busy: the usable cores minus the
    one-minute load average (rounded), at least 1."""
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, cores - int(math.floor(load + 0.5)))


def run_threads(threads: int) -> int:
    """The torch threads of a run whose ``[run] threads`` is ``threads``: that number, or for
    ``0`` (the default) the free cores when the run starts. More threads than free cores make
    OpenMP's threads wait on each other behind the other work: on a busy 2-core machine a
    quickstart with 2 threads ran many times slower than with 1."""
    return int(threads) if threads and threads > 0 else free_cores()


def split_cores(workers: int, threads: int, cores: int | None = None) -> tuple[int, int]:
    """``(workers, threads)`` such that workers x threads never exceeds ``cores`` (default: the
    free cores): ``threads = 0`` divides the cores among the workers; a larger product lowers
    the workers first, then the threads."""
    cores = free_cores() if cores is None else max(1, cores)
    workers = max(1, min(workers, cores))
    if threads <= 0:
        threads = max(1, cores // workers)
    threads = min(threads, cores)
    workers = max(1, min(workers, cores // threads))
    return workers, threads


# --- the local executor ---------------------------------------------------------------------------


#: What a worker process keeps between tasks: payload key -> context.
_CONTEXTS: dict[Any, Any] = {}


def _context(setup: Callable[[Any], Any] | None, payload: Any, key: Any) -> Any:
    if setup is None:
        return None
    if key is None:
        return setup(payload)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = setup(payload)
    return _CONTEXTS[key]


def run_task(fn: Callable[[Any, Any], Any], setup: Callable[[Any], Any] | None, payload: Any, key: Any,
             task: Any) -> Any:
    """``fn(context, task)`` with the worker's cached context (for executors that run tasks in
    worker processes of their own: the Ray executor calls this in each Ray worker)."""
    return fn(_context(setup, payload, key), task)


def _set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _worker_main(conn: Any, threads: int, env: dict[str, str]) -> None:
    """A worker process: tasks in over ``conn``, one result (or error) out per task; None ends it.

    Ctrl-C at the terminal reaches every process of the group: a worker leaves it to the task
    (a search stops at its next step) and to the parent, which decides what stops."""
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_threads(threads)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        fn, setup, payload, key, task = message
        t0 = time.perf_counter()
        try:
            value = run_task(fn, setup, payload, key, task)
            reply = ("ok", value, None, None, time.perf_counter() - t0)
        except BaseException as exc:  # noqa: BLE001 - every failure is the task's outcome
            reply = ("error", None, describe_error(exc), _picklable(exc), time.perf_counter() - t0)
        try:
            conn.send(reply)
        except Exception as exc:  # the result itself does not pickle
            conn.send(("error", None, f"the task's result cannot be sent back: {describe_error(exc)}", None,
                       time.perf_counter() - t0))


def _picklable(exc: BaseException) -> BaseException | None:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return None


class _Worker:
    """One worker process and its pipe; ``task`` is the index it is running (None: idle)."""

    def __init__(self, ctx: Any, threads: int, env: dict[str, str]):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, threads, env), daemon=True)
        self.process.start()
        child.close()
        self.task: int | None = None
        self.started = 0.0

    def send(self, message: Any) -> None:
        self.conn.send(message)

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()

    def died(self) -> str:
        self.process.join(1.0)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"its worker process was killed by {name}"
        return f"its worker process ended without a result (exit status {code})"


class LocalExecutor(Executor):
    """Runs tasks on this machine: ``workers = 1`` in this process, one after the other; more in
    that many worker processes (started with ``spawn``), with ``threads`` torch threads each.

    ``threads = 0`` divides the free cores (the usable cores minus the one-minute load average)
    among the workers, and ``workers`` x ``threads`` never exceeds the free cores: fewer workers
    run when there are not enough (say so with ``describe()``). ``gpus``: on a machine with
    several GPUs, worker k sees GPU ``gpus[k mod len(gpus)]`` only (``CUDA_VISIBLE_DEVICES``);
    empty (the default): every worker sees every GPU."""

    name = "local"

    def __init__(self, workers: int = 1, threads: int = 0, gpus: Sequence[int] = (),
                 cores: int | None = None):
        if workers < 1:
            raise NasregError(f"local executor: workers must be at least 1, got {workers}")
        self.requested_workers = int(workers)
        self.slots, self.threads = split_cores(int(workers), int(threads), cores)
        self.gpus = [int(g) for g in gpus]
        self._stop = False
        self._workers: list[_Worker] = []

    def describe(self) -> str:
        fewer = (f" (of {self.requested_workers} asked for: not enough free cores)"
                 if self.slots < self.requested_workers else "")
        where = "in this process" if self.slots == 1 else "in worker processes"
        return f"local executor: {self.slots} at a time{fewer}, {self.threads} threads each, {where}"

    def request_stop(self) -> None:
        self._stop = True
        for w in self._workers:
            if w.task is not None and w.process.is_alive():
                try:
                    os.kill(w.process.pid, signal.SIGTERM)  # a search stops at its next step
                except OSError:
                    pass

    def map(self, fn, tasks, *, setup=None, payload=None, payload_key=None, resources=None, ordered=True,
            fresh_process=False):
        tasks = list(tasks)
        self._stop = False
        if self.slots == 1 and not fresh_process:
            return self._inline(fn, tasks, setup, payload, payload_key)
        return self._pooled(fn, tasks, setup, payload, payload_key, ordered, fresh_process)

    # -- in this process -------------------------------------------------------------------------
    def _inline(self, fn, tasks, setup, payload, key) -> Iterator[Outcome]:
        import torch

        before = torch.get_num_threads()
        try:
            for i, task in enumerate(tasks):
                if self._stop:
                    return
                _set_threads(self.threads)
                t0 = time.perf_counter()
                try:
                    value = run_task(fn, setup, payload, key, task)
                except Exception as exc:  # noqa: BLE001 - a KeyboardInterrupt still stops everything
                    yield Outcome(i, error=describe_error(exc), exception=exc, seconds=time.perf_counter() - t0)
                else:
                    yield Outcome(i, value=value, seconds=time.perf_counter() - t0)
        finally:
            torch.set_num_threads(before)

    # -- in worker processes -----------------------------------------------------------------------
    def _env(self, k: int) -> dict[str, str]:
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[k % len(self.gpus)])
        return env

    def _pooled(self, fn, tasks, setup, payload, key, ordered, fresh) -> Iterator[Outcome]:
        import multiprocessing as mp
        from multiprocessing.connection import wait

        ctx = mp.get_context("spawn")
        pending = deque(range(len(tasks)))
        done: dict[int, Outcome] = {}
        next_out = 0
        started = 0
        try:
            while pending or any(w.task is not None for w in self._workers):
                # hand tasks to idle workers (starting workers up to the slots)
                while pending and not self._stop:
                    idle = next((w for w in self._workers if w.task is None), None)
                    if idle is None and len(self._workers) < self.slots:
                        idle = _Worker(ctx, self.threads, self._env(started))
                        started += 1
                        self._workers.append(idle)
                    if idle is None:
                        break
                    i = pending.popleft()
                    idle.task, idle.started = i, time.perf_counter()
                    idle.send((fn, setup, payload, key, tasks[i]))
                if self._stop:
                    pending.clear()
                busy = [w for w in self._workers if w.task is not None]
                if not busy:
                    break
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.5)
                for w in busy:
                    if w.conn in ready:
                        try:
                            status, value, error, exc, seconds = w.conn.recv()
                        except (EOFError, OSError):
                            outcome = Outcome(w.task, error=w.died(), seconds=time.perf_counter() - w.started)
                            self._retire(w)
                        else:
                            outcome = Outcome(w.task, value=value, error=error, exception=exc, seconds=seconds)
                            w.task = None
                            if fresh:
                                self._retire(w)
                    elif w.process.sentinel in ready:
                        outcome = Outcome(w.task, error=w.died(), seconds=time.perf_counter() - w.started)
                        self._retire(w)
                    else:
                        continue
                    if not ordered:
                        yield outcome
                        continue
                    done[outcome.index] = outcome
                    while next_out in done:
                        yield done.pop(next_out)
                        next_out += 1
            for i in sorted(done):  # after a stop: what finished, in order
                yield done.pop(i)
        finally:
            if any(w.task is not None for w in self._workers):
                self._abort()

    def _retire(self, w: _Worker) -> None:
        w.task = None
        if w in self._workers:
            self._workers.remove(w)
        w.stop(timeout=1.0)

    def _abort(self, grace: float = 30.0) -> None:
        """The caller stopped early: running tasks get SIGTERM (a search checkpoints and stops),
        then ``grace`` seconds, then SIGKILL."""
        self.request_stop()
        deadline = time.monotonic() + grace
        for w in list(self._workers):
            if w.task is not None:
                try:  # its reply (an interrupted task's error) or its end
                    w.conn.poll(max(0.0, deadline - time.monotonic()))
                except (OSError, ValueError):
                    pass
            self._retire(w)

    def close(self) -> None:
        for w in list(self._workers):
            self._retire(w)
