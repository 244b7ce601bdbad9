"""The local executor (``nasreg.LocalExecutor``, the ``local`` registry entry): in this process and
with two spawned worker processes; results and their order, failures that stay one task's (an
exception, a worker that dies), the setup cached per worker and key, fresh processes, early stops,
and the core arithmetic (``split_cores``). The task functions are in ``executor_tasks`` (spawned
workers import them by name)."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from pathlib import Path

import pytest

import nasreg
from nasreg import LocalExecutor, Outcome, split_cores

import executor_tasks as T

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pool():
    """Two worker processes of one torch thread each, kept for the module (a spawn costs seconds)."""
    ex = LocalExecutor(workers=2, threads=1, cores=2)
    assert ex.slots == 2 and ex.threads == 1
    yield ex
    ex.close()


def warm(ex: LocalExecutor) -> set[int]:
    """Both workers started and idle (two tasks at once start two workers); their PIDs."""
    return {o.value[0] for o in ex.map(T.where, [0, 1])}


def key() -> str:
    """A payload key no other test uses (contexts are cached per process and key)."""
    return uuid.uuid4().hex


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- in this process ----------------------------------------------------------------------------


def test_one_worker_runs_the_tasks_here_in_order():
    ex = LocalExecutor(workers=1, threads=1)
    outcomes = list(ex.map(T.where, ["a", "b", "c"]))
    assert [o.index for o in outcomes] == [0, 1, 2]
    assert all(isinstance(o, Outcome) and o.ok and o.seconds >= 0 for o in outcomes)
    assert [o.value for o in outcomes] == [(os.getpid(), None)] * 3  # no setup: the context is None
    assert [o.get() for o in ex.map(T.square, [3, 1, 2])] == [9, 1, 4]
    assert "in this process" in ex.describe()


def test_a_task_that_raises_here_is_its_outcome_and_the_others_go_on():
    outcomes = list(LocalExecutor(workers=1, threads=1).map(T.faulty, [1, 3, 4, 2]))
    assert [o.ok for o in outcomes] == [True, False, False, True]
    assert [o.value for o in outcomes if o.ok] == [1, 2]
    bad, data = outcomes[1], outcomes[2]
    assert bad.error == "ValueError: bad value 3 second line"  # one line
    assert isinstance(bad.exception, ValueError)
    with pytest.raises(ValueError, match="bad value 3"):
        bad.get()
    assert data.error == "data.toml: [data] root: missing (4)"  # a nasreg error: its message as it is
    assert isinstance(data.exception, nasreg.DataError)


def test_setup_runs_once_per_key_here(tmp_path):
    ex, k = LocalExecutor(workers=1, threads=1), key()
    payload = {"dir": str(tmp_path)}
    first = [o.value[1] for o in ex.map(T.where, range(3), setup=T.counting_setup, payload=payload, payload_key=k)]
    again = [o.value[1] for o in ex.map(T.where, range(2), setup=T.counting_setup, payload=payload, payload_key=k)]
    assert len(set(first + again)) == 1 and len(list(tmp_path.iterdir())) == 1
    # without a key the context is not cached: one setup per task
    none = [o.value[1] for o in ex.map(T.where, range(2), setup=T.counting_setup, payload=payload)]
    assert len(set(none)) == 2 and len(list(tmp_path.iterdir())) == 3


def test_request_stop_here_runs_no_further_task():
    ex = LocalExecutor(workers=1, threads=1)
    seen = []
    for outcome in ex.map(T.square, range(5)):
        seen.append(outcome.value)
        ex.request_stop()
    assert seen == [0]
    assert [o.value for o in ex.map(T.square, [2])] == [4]  # the next map starts afresh


# --- in worker processes --------------------------------------------------------------------------


def test_two_workers_give_the_results_in_task_order(pool):
    pids = warm(pool)
    assert len(pids) == 2 and os.getpid() not in pids
    # task 0 is the slowest: ordered=True still yields it first
    outcomes = list(pool.map(T.nap, [(0.6, "a"), (0.0, "b"), (0.0, "c"), (0.0, "d")]))
    assert [(o.index, o.value) for o in outcomes] == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
    assert outcomes[0].seconds >= 0.6
    assert "2 at a time, 1 threads each, in worker processes" in pool.describe()


def test_unordered_outcomes_come_as_they_finish(pool):
    warm(pool)
    outcomes = list(pool.map(T.nap, [(0.6, "slow"), (0.0, "b"), (0.0, "c")], ordered=False))
    assert [o.value for o in outcomes][-1] == "slow"  # the other worker finished b and c meanwhile
    assert sorted(o.index for o in outcomes) == [0, 1, 2]
    assert all(o.value == ["slow", "b", "c"][o.index] for o in outcomes)


def test_failures_in_a_worker_stay_their_tasks(pool):
    outcomes = list(pool.map(T.faulty, [1, 3, 4, 5, 6, 2]))
    assert [o.index for o in outcomes] == list(range(6))
    assert [o.value for o in outcomes if o.ok] == [1, 2]
    assert outcomes[1].error == "ValueError: bad value 3 second line"
    assert isinstance(outcomes[1].exception, ValueError)
    assert isinstance(outcomes[2].exception, nasreg.DataError)
    # an exception that cannot travel back: its one line does, without the object
    assert outcomes[3].error == "NeedsTwoArgs: this and that" and outcomes[3].exception is None
    with pytest.raises(nasreg.NasregError, match="NeedsTwoArgs: this and that"):
        outcomes[3].get()
    assert outcomes[4].error.startswith("the task's result cannot be sent back: ")


def test_a_worker_that_dies_fails_only_its_task(pool):
    before = warm(pool)
    outcomes = list(pool.map(T.faulty, [1, 7, 2, 8, 9]))
    assert [o.ok for o in outcomes] == [True, False, True, True, True]
    assert [o.value for o in outcomes if o.ok] == [1, 2, 8, 9]
    dead = outcomes[1]
    assert dead.error == "its worker process ended without a result (exit status 3)"
    assert dead.exception is None
    with pytest.raises(nasreg.NasregError, match="exit status 3"):
        dead.get()
    after = warm(pool)  # the dead worker was replaced: still two workers
    assert len(after) == 2 and len(before - after) == 1


def test_setup_runs_once_per_worker_and_key(pool, tmp_path):
    k, payload = key(), {"dir": str(tmp_path)}
    runs = [o.value for o in pool.map(T.where, range(6), setup=T.counting_setup, payload=payload, payload_key=k)]
    runs += [o.value for o in pool.map(T.where, range(4), setup=T.counting_setup, payload=payload, payload_key=k)]
    contexts = {pid: {ctx for p, ctx in runs if p == pid} for pid, _ in runs}
    assert all(len(c) == 1 for c in contexts.values())  # each worker: one context for the key
    assert len(list(tmp_path.iterdir())) == len(contexts) <= 2  # one setup per worker, two maps
    other = {o.value[1] for o in pool.map(T.where, range(2), setup=T.counting_setup, payload=payload,
                                          payload_key=key())}
    assert not other & {ctx for _, ctx in runs}  # another key: a setup of its own


def test_closing_the_iterator_early_stops_the_running_workers(pool, tmp_path):
    warm(pool)
    notes = [tmp_path / f"task-{i}" for i in range(3)]
    outcomes = pool.map(T.nap_and_note, [(str(notes[0]), 0.0), (str(notes[1]), 60.0), (str(notes[2]), 60.0)],
                        ordered=False)
    first = next(outcomes)
    assert first.index == 0
    deadline = time.monotonic() + 20
    while not notes[1].exists() and time.monotonic() < deadline:  # the slow task has started
        time.sleep(0.05)
    t0 = time.perf_counter()
    outcomes.close()
    assert time.perf_counter() - t0 < 10  # SIGTERM, not the 60 s nap
    slow = int(notes[1].read_text())
    assert not alive(slow)
    started = [n for n in notes if n.exists()]
    for n in started[2:]:  # the idle worker may have taken task 2: stopped as well
        assert not alive(int(n.read_text()))


def test_fresh_process_gives_every_task_its_own_process():
    ex = LocalExecutor(workers=1, threads=1, cores=2)
    try:
        pids = [o.value[0] for o in ex.map(T.where, range(2), fresh_process=True)]
    finally:
        ex.close()
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert not any(alive(p) for p in pids)


# --- cores --------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers, threads, cores, expected", [
    (1, 0, 8, (1, 8)),     # threads 0: the cores divided among the workers
    (4, 0, 8, (4, 2)),
    (3, 0, 8, (3, 2)),
    (4, 2, 8, (4, 2)),     # fits as asked
    (4, 4, 8, (2, 4)),     # too many: fewer workers, the threads kept
    (1, 16, 4, (1, 4)),    # one worker: its threads capped at the cores
    (16, 0, 2, (2, 1)),    # more workers than cores
    (2, 1, 1, (1, 1)),
])
def test_split_cores(workers, threads, cores, expected):
    assert split_cores(workers, threads, cores) == expected


def test_split_cores_never_exceeds_the_cores():
    for workers, threads, cores in itertools.product(range(1, 10), range(0, 10), range(1, 13)):
        w, t = split_cores(workers, threads, cores)
        assert 1 <= w <= workers and t >= 1 and w * t <= cores, (workers, threads, cores, w, t)
        if threads:
            assert t == min(threads, cores)


def test_the_local_executor_says_when_it_runs_fewer_workers_than_asked():
    ex = LocalExecutor(workers=4, threads=2, cores=4)
    assert (ex.slots, ex.threads) == (2, 2)
    assert "2 at a time (of 4 asked for: not enough free cores), 2 threads each" in ex.describe()
    with pytest.raises(nasreg.NasregError, match="workers must be at least 1, got 0"):
        LocalExecutor(workers=0)


# --- the registry ---------------------------------------------------------------------------------


def spec_with(tmp_path: Path, executor: str, name: str = "rl.toml") -> Path:
    path = tmp_path / name
    path.write_text((ROOT / "specs" / "nas-rl.toml").read_text().replace("workers = 2 ", "workers = 1 ")
                    + "\n[executor]\n" + executor)
    return path


def test_local_is_built_from_a_spec_table(tmp_path):
    spec = nasreg.load_spec(spec_with(tmp_path, 'name = "local"\nworkers = 2\nthreads = 1\n'))
    ex = spec.executor.build()
    assert isinstance(ex, LocalExecutor) and ex.name == "local"
    assert (ex.requested_workers, ex.threads) == (2, 1)
    assert spec.resolved()["executor"] == {"name": "local", "workers": 2, "threads": 1}
    # where children run is not part of what the search is: the digest is the spec's without [executor]
    bare = tmp_path / "bare" / "rl.toml"
    bare.parent.mkdir()
    bare.write_text(spec_with(tmp_path, "").read_text().replace("\n[executor]\n", ""))
    assert spec.digest() == nasreg.load_spec(bare).digest()
    with pytest.raises(nasreg.SpecError, match=r"\[executor\] workers"):
        nasreg.load_spec(spec_with(tmp_path, 'name = "local"\nworkers = 0\n'))
    with pytest.raises(nasreg.SpecError, match=r"\[executor\].*'workers'"):
        nasreg.load_spec(spec_with(tmp_path, 'name = "local"\nworker = 2\n'))


class _Inline(nasreg.Executor):
    """A third-party executor: every task in this process, its results doubled."""

    name = "doubling"

    def map(self, fn, tasks, **_):
        for i, task in enumerate(tasks):
            yield Outcome(i, value=2 * fn(None, task))


class _Plugin:
    @nasreg.hookimpl
    def register_executors(self, register):
        register("doubling", lambda: _Inline())


def test_an_executor_registered_with_register_executors_is_built_from_a_spec(tmp_path):
    spec = nasreg.load_spec(spec_with(tmp_path, 'name = "doubling"\n'), plugins=[_Plugin()])
    ex = spec.executor.build()
    assert [o.value for o in ex.map(T.square, [1, 2, 3])] == [2, 8, 18]
    with pytest.raises(nasreg.SpecError, match=r"\[executor\] name: unknown executor 'doubling'"):
        nasreg.load_spec(spec_with(tmp_path, 'name = "doubling"\n'))  # not registered without the plugin


# --- the sampling strategies' children ------------------------------------------------------------


def trainer_on(executor, device: str, threads: int = 0):
    """A child trainer's executor-facing part (no run, no data: what device_for and resources read)."""
    import torch
    from nasreg_rl.children import ChildConfig, ChildTrainer

    trainer = ChildTrainer.__new__(ChildTrainer)
    trainer.executor, trainer.device = executor, torch.device(device)
    trainer.cfg = ChildConfig(epochs=1, batch_size=8, lr=0.1, momentum=0.9, weight_decay=0.0, grad_clip=5.0,
                              threads=threads)
    return trainer


def test_children_declare_their_resources_and_pick_their_device_per_executor(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    here = trainer_on(LocalExecutor(workers=1, threads=1), "cuda")
    assert here.in_process and [here.device_for(k) for k in range(3)] == ["cuda"] * 3
    pool = trainer_on(LocalExecutor(workers=2, threads=1, cores=2), "cuda")
    assert not pool.in_process and [pool.device_for(k) for k in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    own = trainer_on(LocalExecutor(workers=2, threads=1, cores=2, gpus=[0, 1]), "cuda")
    assert [own.device_for(k) for k in range(2)] == ["cuda", "cuda"]  # each worker sees its one GPU
    elsewhere = trainer_on(_Inline(), "cuda:1", threads=3)  # any other executor: the GPU it was given
    assert [elsewhere.device_for(k) for k in range(2)] == ["cuda", "cuda"]
    assert elsewhere.resources() == nasreg.Resources(cpus=3, gpus=1.0)
    assert trainer_on(_Inline(), "cpu").resources() == nasreg.Resources(cpus=1, gpus=0.0)
    assert trainer_on(_Inline(), "cpu").device_for(5) == "cpu"
