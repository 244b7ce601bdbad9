"""The ``ray`` executor. On a local Ray instance (``ray.init(num_cpus=2)``, started once for the
module: seconds): results in task order or as they finish, failures as one line, the setup cached
per Ray worker, an early stop cancelling what runs, a REINFORCE search whose children are Ray tasks
finding what the in-process search finds, a study with its trials' run directories shipped back.
Without Ray (or with it) the factory's keys are checked, and a missing Ray is one line naming the
extra."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import nasreg
from nasreg.cli import main

import executor_tasks as T
from test_study import STUDY, write_study

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
#: 2 updates of 2 children, each 80 training images for one epoch.
TINY = ["run.threads=1", "run.device=cpu", "data.limit=160", "strategy.updates=2",
        "strategy.children_per_update=2", "strategy.child_epochs=1", "strategy.child_batch_size=32",
        "strategy.workers=1", "evaluate.epochs=1", "evaluate.limit=64", "evaluate.batch_size=32"]

ray_running = pytest.mark.slow  # the tests that start Ray (once per module, seconds)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance of 2 CPUs whose workers can import this folder's task functions."""
    ray = pytest.importorskip("ray")
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": path, "NASREG_TEST_RAY_WORKER": "1"}})
    print(f"ray.init(num_cpus=2): {time.perf_counter() - t0:.1f} s")
    yield ray
    ray.shutdown()


@pytest.fixture
def executor(local_ray):
    """The executor on the module's Ray instance (which it did not start, so does not stop)."""
    from nasreg_executors.ray_executor import RayExecutor

    ex = RayExecutor()
    yield ex
    ex.close()
    assert local_ray.is_initialized()


def warm(ex, tmp_path: Path) -> None:
    """Two Ray workers started and idle: two tasks that wait for each other need two."""
    folder = tmp_path / f"meet-{uuid.uuid4().hex}"
    folder.mkdir()
    assert len({o.value for o in ex.map(T.meet, [(str(folder), 2)] * 2)}) == 2


def invoke(*args, sets=()):
    threads = torch.get_num_threads()
    argv = [str(a) for a in args]
    for s in sets:
        argv += ["--set", s]
    try:
        return CliRunner().invoke(main, argv, env={"COLUMNS": "200", "NASREG_DISABLE_PLUGINS": "plots"})
    finally:
        torch.set_num_threads(threads)


def rewards(run_dir: Path) -> list[tuple[int, list[int], float]]:
    return [(c["index"], c["choices"], c["reward"])
            for c in map(json.loads, (run_dir / "children.jsonl").read_text().splitlines())]


def rl_spec(tmp_path: Path, executor: str) -> Path:
    spec = tmp_path / "rl.toml"
    spec.write_text((ROOT / "specs" / "nas-rl.toml").read_text() + "\n[executor]\n" + executor)
    return spec


# --- on a local Ray instance ------------------------------------------------------------------------


@ray_running
def test_outcomes_in_task_order_or_as_they_finish_and_failures_as_one_line(executor, tmp_path):
    outcomes = list(executor.map(T.faulty, [1, 3, 4, 5, 7, 2]))
    assert [o.index for o in outcomes] == list(range(6))
    assert [o.value for o in outcomes if o.ok] == [1, 2]
    assert outcomes[1].error == "ValueError: bad value 3 second line"  # the cause's message, one line
    assert isinstance(outcomes[1].exception, ValueError)
    assert outcomes[2].error == "data.toml: [data] root: missing (4)"
    assert isinstance(outcomes[2].exception, nasreg.DataError)
    # what Ray could not send back, and a worker that died: one line, no exception object
    assert outcomes[3].error == "NeedsTwoArgs: this and that" and outcomes[3].exception is None
    assert outcomes[4].error.startswith("WorkerCrashedError: The worker died unexpectedly")
    assert outcomes[4].exception is None and "\n" not in outcomes[4].error
    assert executor.slots == 2  # the instance's 2 CPUs, 1 per task
    assert executor.describe() == "ray executor on a local Ray instance: 2 at a time, 1 CPUs per task"
    warm(executor, tmp_path)
    unordered = [o.value for o in executor.map(T.nap, [(2.0, "slow"), (0.0, "fast")], ordered=False)]
    assert unordered == ["fast", "slow"]
    ordered = list(executor.map(T.nap, [(1.0, "slow"), (0.0, "fast")]))
    assert [(o.index, o.value) for o in ordered] == [(0, "slow"), (1, "fast")]


@ray_running
def test_setup_is_cached_per_ray_worker_and_at_most_in_flight_are_submitted(local_ray, tmp_path):
    from nasreg_executors.ray_executor import RayExecutor

    ex = RayExecutor(max_in_flight=1)
    k, payload = uuid.uuid4().hex, {"dir": str(tmp_path)}
    runs = [o.value for o in ex.map(T.where, range(4), setup=T.counting_setup, payload=payload, payload_key=k)]
    contexts = {pid: {ctx for p, ctx in runs if p == pid} for pid, _ in runs}
    assert all(len(c) == 1 for c in contexts.values())
    assert len(list(tmp_path.iterdir())) == len(contexts)  # one setup per worker that ran a task
    # one task in flight at a time: their runs do not overlap
    spans = [o.value for o in ex.map(T.nap, [(0.3, i) for i in range(3)])]
    assert spans == [0, 1, 2]
    with pytest.raises(nasreg.PluginError, match="asks for 4 CPUs but the local Ray instance has 2"):
        RayExecutor(cpus_per_task=4).map(T.square, [1])  # would wait forever: refused


@ray_running
def test_closing_the_iterator_early_cancels_the_running_tasks(executor, tmp_path):
    warm(executor, tmp_path)
    outcomes = executor.map(T.nap, [(0.0, "quick"), (60.0, "a"), (60.0, "b")], ordered=False)
    assert next(outcomes).value == "quick"
    time.sleep(0.5)  # the two long ones are running on both CPUs
    outcomes.close()
    t0 = time.perf_counter()
    assert [o.value for o in executor.map(T.square, [2, 3])] == [4, 9]  # the CPUs are free again
    assert time.perf_counter() - t0 < 30
    # request_stop (a study's Ctrl-C): the running tasks (a, b) and the waiting one come back cancelled
    outcomes = executor.map(T.nap, [(0.0, "quick"), (60.0, "a"), (60.0, "b"), (0.0, "waits")], ordered=False)
    assert next(outcomes).value == "quick"
    time.sleep(0.5)
    executor.request_stop()
    t0 = time.perf_counter()
    rest = list(outcomes)
    assert time.perf_counter() - t0 < 30
    assert sorted(o.index for o in rest) == [1, 2, 3]
    assert all(o.error == "TaskCancelledError: the task was cancelled (the caller stopped)" and o.exception is None
               for o in rest), rest


@ray_running
def test_reinforce_children_as_ray_tasks_find_what_the_in_process_search_finds(local_ray, tmp_path):
    t0 = time.perf_counter()
    here = invoke("run", ROOT / "specs" / "nas-rl.toml", "--out", tmp_path / "here", "-q", "--no-preflight",
                  sets=TINY)
    t1 = time.perf_counter()
    assert here.exit_code == 0, here.output
    there = invoke("run", rl_spec(tmp_path, 'name = "ray"\n'), "--out", tmp_path / "ray", "-q", "--no-preflight",
                   sets=TINY)
    t2 = time.perf_counter()
    assert there.exit_code == 0, there.output
    print(f"REINFORCE, 4 children: in this process {t1 - t0:.1f} s, as Ray tasks {t2 - t1:.1f} s")
    assert rewards(tmp_path / "ray") == rewards(tmp_path / "here")
    assert len(rewards(tmp_path / "ray")) == 4
    here_best, ray_best = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("here", "ray"))
    assert [ray_best[k] for k in ("best_child", "best_reward", "genotype")] == \
        [here_best[k] for k in ("best_child", "best_reward", "genotype")]


#: A dataset that loads in the search's process but not on a Ray worker (as data missing on a
#: cluster's nodes would): the module's Ray workers have NASREG_TEST_RAY_WORKER set.
HERE_ONLY = """
import os
from nasreg import hookimpl
from nasreg_data.digits import digits


def digits_here(test_fraction: float = 0.2):
    if os.environ.get("NASREG_TEST_RAY_WORKER"):
        raise RuntimeError("no digits on this worker")
    return digits(test_fraction=test_fraction)


@hookimpl
def register_datasets(register):
    register("digits-here", digits_here, shape=(1, 8, 8), num_classes=10)
"""


@ray_running
def test_a_child_that_fails_in_a_ray_task_fails_the_search_in_one_line(local_ray, tmp_path):
    plugin = tmp_path / "here_only.py"
    plugin.write_text(HERE_ONLY)
    result = invoke("run", rl_spec(tmp_path, 'name = "ray"\n'), "--out", tmp_path / "ray", "-q", "--no-preflight",
                    "--plugin", plugin, sets=[*TINY, "data.dataset=digits-here"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == "error: child 0 failed: RuntimeError: no digits on this worker", result.output
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["status"] == "failed" and "no digits on this worker" in json.dumps(summary)


@ray_running
def test_a_study_runs_on_ray_and_its_run_directories_come_back(local_ray, tmp_path):
    path = write_study(tmp_path, STUDY.replace("seeds = [0, 1]", "seeds = [0]")
                       + '\n[executor]\nname = "ray"\ncpus_per_task = 1\n')
    result = invoke("study", "run", path, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    for arm in ("lr-a", "lr-b"):
        assert report["arms"][arm]["test_acc"]["n"] == 1
        assert (tmp_path / "out" / arm / "seed-0" / "eval" / "results.json").is_file()
    # a trial whose run directory was deleted starts again on resume
    shutil.rmtree(tmp_path / "out" / "lr-b" / "seed-0")
    again = invoke("study", "resume", tmp_path / "out")
    assert again.exit_code == 0 and "1 already finished" in again.output, again.output


# --- the factory, with or without Ray -------------------------------------------------------------


def test_without_ray_the_executor_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, find_spec finds nothing
    assert importlib.util.find_spec("ray") is None
    result = invoke("validate", rl_spec(tmp_path, 'name = "ray"\n'))
    assert result.exit_code == 2
    assert result.output.strip() == "error: executor 'ray' needs Ray: pip install 'nasreg[ray]'", result.output
    study = write_study(tmp_path, STUDY + '\n[executor]\nname = "ray"\n')
    result = invoke("study", "validate", study)
    assert result.exit_code == 2 and "pip install 'nasreg[ray]'" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("table, key", [
    ('name = "ray"\ncpus_per_task = 0\n', "[executor] cpus_per_task"),
    ('name = "ray"\ngpus_per_task = -1\n', "[executor] gpus_per_task"),
    ('name = "ray"\nmax_retries = "3"\n', "[executor] max_retries"),
    ('name = "ray"\ncpus_per_tsk = 2\n', "did you mean 'cpus_per_task'"),
    ('name = "ray"\naddress = "auto"\nnum_cpus = 4\n', "num_cpus = 4 sizes a local Ray instance"),
])
def test_the_ray_executors_keys_are_checked(tmp_path, table, key):
    pytest.importorskip("ray")  # with Ray missing, building it is the line above
    result = invoke("validate", rl_spec(tmp_path, table))
    assert result.exit_code == 2 and key in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_workers_beside_an_executor_table_is_one_line(tmp_path):
    spec = rl_spec(tmp_path, 'name = "local"\nworkers = 2\nthreads = 1\n')  # nas-rl.toml has workers = 2
    result = invoke("run", spec, "--out", tmp_path / "run", "-q", "--no-preflight",
                    sets=[s for s in TINY if not s.startswith("strategy.workers")])
    assert result.exit_code == 2, result.output
    assert "[strategy] workers: 2 sizes the default local executor, but [executor] name = 'local'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "children.jsonl").exists()  # refused before any child trained
