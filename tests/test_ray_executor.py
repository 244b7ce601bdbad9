"""The ``ray`` executor on a local Ray instance (``ray.init(num_cpus=2)``): a REINFORCE search
whose children are Ray tasks finds what the in-process search finds, a study runs on it with its
trials' run directories shipped back, and without Ray the executor is one line naming the extra."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nasreg.cli import main

from test_study import STUDY, write_study

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
#: 2 updates of 2 children, each 80 training images for one epoch.
TINY = ["run.threads=1", "run.device=cpu", "data.limit=160", "strategy.updates=2",
        "strategy.children_per_update=2", "strategy.child_epochs=1", "strategy.child_batch_size=32",
        "strategy.workers=1", "evaluate.epochs=1", "evaluate.limit=64", "evaluate.batch_size=32"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


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


def test_reinforce_children_as_ray_tasks_find_what_the_in_process_search_finds(local_ray, tmp_path):
    spec = tmp_path / "rl.toml"
    spec.write_text((ROOT / "specs" / "nas-rl.toml").read_text() + '\n[executor]\nname = "ray"\n')
    here = invoke("run", ROOT / "specs" / "nas-rl.toml", "--out", tmp_path / "here", "-q", "--no-preflight",
                  sets=TINY)
    assert here.exit_code == 0, here.output
    there = invoke("run", spec, "--out", tmp_path / "ray", "-q", "--no-preflight", sets=TINY)
    assert there.exit_code == 0, there.output
    assert rewards(tmp_path / "ray") == rewards(tmp_path / "here")
    assert len(rewards(tmp_path / "ray")) == 4


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


def test_without_ray_the_executor_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    spec = tmp_path / "rl.toml"
    spec.write_text((ROOT / "specs" / "nas-rl.toml").read_text() + '\n[executor]\nname = "ray"\n')
    result = invoke("validate", spec)
    assert result.exit_code == 2
    assert "pip install 'nasreg[ray]'" in result.output and "Traceback" not in result.output
