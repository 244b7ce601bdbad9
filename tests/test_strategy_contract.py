"""The strategy contract the engine dispatches on (nasreg._core.strategy.Strategy), on the toy components:
run_search is the entry point, the attributes decide the checks, the strategy and the space
supply the pre-flight suggestions and the divergence hint."""

from __future__ import annotations

import pytest

import nasreg
import nasreg._core.preflight as pf
from nasreg import hookimpl
from nasreg._core import spec as spec_mod
from nasreg._core.errors import NasregError, PluginError, SpecError
from nasreg._core.search import DivergenceError, SearchJob, prepare, run_search


class Hinted:
    """A plugin object registering strategies built on the toy one."""

    def __init__(self, toycore):
        self.toycore = toycore

    @hookimpl
    def register_strategies(self, register):
        toy = self.toycore.ToyStrategy

        class HintedStrategy(toy):
            weight_copies = 7

            def memory_knobs(self):
                return ["[strategy] smaller = true"]

            def divergence_hint(self):
                return "try the toy's hint"

        class OwnEngine(nasreg.SearchStrategy):
            """Runs its own engine: run_search is all the core calls."""

            def run_search(self, job: SearchJob):
                return {"engine": "own", "run_dir": str(job.run_dir), "resume": job.resume}

            def setup(self, model, *, epochs, steps_per_epoch):
                raise AssertionError("never set up")

            def step(self, train_batch, val_batch, *, update_alpha):
                raise AssertionError("never stepped")

        class OneProcess(toy):
            supports_torchrun = False

        register("toy-hinted", HintedStrategy)
        register("toy-own", OwnEngine)
        register("toy-one-process", OneProcess)
        register("toy-not-a-strategy", lambda: object())


def _prepared(write_spec, toycore, *overrides):
    s, plugins = spec_mod.load(write_spec(), list(overrides), objects=[("toycore", toycore), ("hinted", Hinted(toycore))])
    return prepare(s, plugins)


def test_run_search_calls_the_strategys_entry_point(write_spec, toycore, tmp_path):
    p = _prepared(write_spec, toycore, "strategy.name=toy-own")
    assert run_search(p, tmp_path / "run", resume=True) == {"engine": "own", "run_dir": str(tmp_path / "run"),
                                                            "resume": True}


def test_a_factory_that_builds_no_strategy_is_one_line(write_spec, toycore):
    with pytest.raises(PluginError) as info:
        _prepared(write_spec, toycore, "strategy.name=toy-not-a-strategy")
    msg = str(info.value)
    assert "[strategy] name: 'toy-not-a-strategy' built a object, not a nasreg.Strategy" in msg and "\n" not in msg


def test_supports_torchrun_decides_the_refusal(write_spec, toycore, monkeypatch):
    monkeypatch.setattr("nasreg._core.distributed.env_world_size", lambda: 2)
    with pytest.raises(SpecError, match="'toy-one-process' cannot run under torchrun"):
        _prepared(write_spec, toycore, "strategy.name=toy-one-process")


def test_pre_flight_asks_the_strategy(write_spec, toycore, monkeypatch, one_thread):
    plain = pf.estimate(_prepared(write_spec, toycore))
    hinted = _prepared(write_spec, toycore, "strategy.name=toy-hinted")
    est = pf.estimate(hinted)
    assert est.weight_state_bytes * 3 == plain.weight_state_bytes * 7
    monkeypatch.setattr(pf, "free_memory_bytes", lambda device: 1)
    with pytest.raises(NasregError, match=r"use a smaller \[data\] batch_size or \[strategy\] smaller = true$"):
        pf.preflight(hinted, echo=None)


@pytest.mark.parametrize("name, ending", [("toy-hinted", "; try the toy's hint"), ("toy-sgd", " yet in {run}")])
def test_divergence_ends_with_the_strategys_hint(write_spec, toycore, tmp_path, one_thread, name, ending):
    p = _prepared(write_spec, toycore, f"strategy.name={name}", "strategy.w_lr=10")
    p.bundle.train.tensors[0][0, 0, 0, 0] = float("nan")  # a NaN loss in the first epoch
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(DivergenceError) as info:
        run_search(p, run)
    assert str(info.value).startswith("training diverged: ") and str(info.value).endswith(ending.format(run=run))
