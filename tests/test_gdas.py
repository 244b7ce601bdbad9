"""The gdas strategy (plugins/nasreg_gdas): its keys, the straight-through Gumbel-softmax sample,
that only the sampled op of an edge runs, the temperature schedule, a whole search on digits
whose genotype builds, and exact resume of a search stopped mid-epoch."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

import nasreg
from nasreg_gdas.strategy import MAX_RESAMPLES, GdasStrategy, GumbelSampler, tau_at

SPEC = {
    "run": {"name": "gdas-test", "seed": 0, "device": "cpu", "threads": 1},
    "data": {"dataset": "digits", "limit": 160, "batch_size": 32},
    "search_space": {"name": "darts-cell", "operations": ["none", "max_pool_3x3", "skip_connect",
                                                           "sep_conv_3x3", "dil_conv_3x3"],
                     "cells": 3, "channels": 4, "nodes": 2},
    "search": {"epochs": 2, "warmup_epochs": 0},
    "strategy": {"name": "gdas", "w_lr": 0.05, "alpha_lr": 3e-3},
    "selector": {"name": "argmax"},
}


def spec_with(**tables):
    return {**SPEC, **{k: {**SPEC.get(k, {}), **v} for k, v in tables.items()}}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- keys ----------------------------------------------------------------------------------------

def test_defaults_are_the_reference_codes():
    entry = nasreg.load_plugins([]).registries.strategies.get("gdas")
    keys = {k["name"]: k for k in nasreg.entry_keys(entry, "strategies")}
    defaults = {name: k["default"] for name, k in keys.items()}
    assert defaults == {"tau_max": 10.0, "tau_min": 0.1, "w_lr": 0.025, "w_lr_min": 0.001, "w_momentum": 0.9,
                        "w_nesterov": True, "w_weight_decay": 5e-4, "alpha_lr": 3e-4, "alpha_betas": [0.5, 0.999],
                        "alpha_weight_decay": 1e-3, "grad_clip": 5.0}
    assert all(k["description"] for k in keys.values())


@pytest.mark.parametrize("key, value, words", [
    ("tau_max", 0, ("tau_max", "> 0")),
    ("tau_min", -1.0, ("tau_min", "> 0")),
    ("w_momentum", 1.0, ("w_momentum",)),
    ("alpha_betas", [0.5], ("alpha_betas",)),
    ("grad_clip", "big", ("grad_clip",)),
    ("tau", 1.0, ("tau",)),
])
def test_bad_keys_are_one_line_spec_errors(key, value, words):
    with pytest.raises(nasreg.SpecError) as exc:
        nasreg.load_spec(spec_with(strategy={key: value}))
    message = str(exc.value)
    assert "\n" not in message and "strategy" in message
    assert all(w in message for w in words), message


@pytest.mark.parametrize("kwargs, words, fixed", [
    ({"tau_max": 1.0, "tau_min": 2.0}, "tau_min (2) must not exceed tau_max (1)", {"tau_min": 1.0}),
    ({"w_lr": 0.01, "w_lr_min": 0.1}, "w_lr_min (0.1) must not exceed w_lr (0.01)", {"w_lr_min": 0.01}),
    ({"w_momentum": 0.0}, "w_nesterov = true needs w_momentum > 0", {"w_nesterov": False}),
])
def test_combinations_an_annotation_cannot_check(kwargs, words, fixed):
    with pytest.raises(ValueError) as exc:
        GdasStrategy(**kwargs)
    assert words in str(exc.value)
    GdasStrategy(**{**kwargs, **fixed})
    with pytest.raises(nasreg.SpecError) as spec_exc:  # from a spec: a one-line spec error
        nasreg.load_spec(spec_with(strategy=kwargs))
    assert words in str(spec_exc.value) and "\n" not in str(spec_exc.value)


# --- the sample -------------------------------------------------------------------------------------

def sampler(seed: int = 0, tau: float = 1.0) -> GumbelSampler:
    return GumbelSampler(torch.Generator().manual_seed(seed), tau)


def test_the_forward_value_is_one_hot_and_the_gradient_reaches_every_alpha_of_the_edge():
    torch.manual_seed(0)
    alphas = [nn.Parameter(torch.randn(5)) for _ in range(4)]
    weights, active = sampler()("normal", alphas, True)
    assert len(weights) == len(active) == 4
    for w, act in zip(weights, active):
        assert len(act) == 1
        one_hot = torch.zeros(5)
        one_hot[act[0]] = 1.0
        assert torch.allclose(w.detach(), one_hot, atol=1e-6)
    # The loss sees only each edge's sampled weight, as a cell does: every alpha gets a gradient.
    loss = sum(w[act[0]] * (k + 1.0) for k, (w, act) in enumerate(zip(weights, active)))
    loss.backward()
    for a in alphas:
        assert a.grad is not None and bool((a.grad != 0).all()), a.grad


def test_edges_with_different_candidate_counts_are_sampled_edge_by_edge():
    alphas = [nn.Parameter(torch.zeros(n)) for n in (2, 5, 3)]
    weights, active = sampler()("reduce", alphas, True)
    assert [w.numel() for w in weights] == [2, 5, 3]
    assert all(0 <= act[0] < n for act, n in zip(active, (2, 5, 3)))


def test_eval_mode_is_the_softmax_over_every_op():
    alphas = [torch.randn(5) for _ in range(3)]
    weights, active = sampler()("normal", alphas, False)
    assert active is None
    assert all(torch.equal(w, torch.softmax(a, -1)) for w, a in zip(weights, alphas))


def test_samples_follow_softmax_alpha():
    """Gumbel-max: the sampled index is distributed as softmax(alpha), whatever the temperature."""
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).repeat(4000, 1)
    _, index = sampler(tau=5.0).sample(logits)
    freq = torch.bincount(torch.tensor(index), minlength=3).float() / len(index)
    assert torch.allclose(freq, torch.tensor([0.6, 0.3, 0.1]), atol=0.03), freq


def test_a_sample_that_is_not_finite_is_drawn_again(monkeypatch):
    real = torch.Tensor.exponential_
    calls = {"n": 0}

    def zero_first(self, *args, **kwargs):  # an Exponential(1) draw of 0: infinite Gumbel noise
        calls["n"] += 1
        out = real(self, *args, **kwargs)
        return out.zero_() if calls["n"] == 1 else out

    monkeypatch.setattr(torch.Tensor, "exponential_", zero_first)
    s = sampler()
    weights, _ = s("normal", [torch.zeros(4)], True)
    assert (s.samples, s.resamples) == (2, 1)
    assert torch.isfinite(weights[0]).all()
    assert MAX_RESAMPLES >= 10


def test_the_sampler_draws_from_its_own_generator_only():
    before = torch.random.get_rng_state()
    a = sampler(seed=3).sample(torch.zeros(6, 4))[1]
    assert torch.equal(torch.random.get_rng_state(), before)
    assert a == sampler(seed=3).sample(torch.zeros(6, 4))[1]


# --- only the sampled op runs -------------------------------------------------------------------------

class Counted(nn.Module):
    """A 1x1 conv with the edge's stride, then BN: an op with a plain forward, to count calls."""

    def __init__(self, C: int, stride: int, affine: bool):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 1, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(C, affine=affine)

    def forward(self, x):
        return self.bn(self.conv(x))


class CountedOps:
    @nasreg.hookimpl
    def register_operations(self, register):
        for name in ("count_a", "count_b", "count_c"):
            register(name, lambda C, stride, affine: Counted(C, stride, affine), parameter_free=False)


def counted_supernet():
    spec = nasreg.load_spec(spec_with(search_space={"operations": ["count_a", "count_b", "count_c"]}),
                            plugins=[CountedOps()])
    space = spec.search_space.build()
    torch.manual_seed(0)
    model = space.build_supernet(space.full_candidates(), ops=spec.plugins.registries.operations,
                                 in_channels=1, num_classes=10)
    calls: dict[int, int] = {}
    edges = [m for m in model.modules() if isinstance(m, nasreg.MixedOp)]
    for e, edge in enumerate(edges):
        for i, name in enumerate(edge.candidates):
            def hook(_m, _inp, _out, key=(e, i)):
                calls[key] = calls.get(key, 0) + 1
            edge.ops[name].register_forward_hook(hook)
    return model, edges, calls


def test_only_the_sampled_op_of_every_edge_runs(one_thread):
    model, edges, calls = counted_supernet()
    strategy = GdasStrategy()
    strategy.setup(model, epochs=2, steps_per_epoch=1)
    seen = []
    real = strategy.sampler.__call__

    def record(cell_type, alphas, training):
        out = real(cell_type, alphas, training)
        seen.append((cell_type, out[1]))
        return out

    model.weighting = record
    model.train()
    model(torch.randn(4, 1, 8, 8))
    sampled = dict(seen)
    assert set(sampled) == {"normal", "reduce"}  # one draw per cell type and forward pass
    e = 0
    for cell in model.cells:
        for k in range(len(cell.edges)):
            (i,) = sampled[cell.cell_type][k]
            assert {key: n for key, n in calls.items() if key[0] == e} == {(e, i): 1}
            e += 1
    assert e == len(edges)

    calls.clear()
    model.weighting = strategy.sampler
    model.eval()
    model(torch.randn(4, 1, 8, 8))
    assert calls == {(e, i): 1 for e in range(len(edges)) for i in range(3)}  # validation: every op


def test_a_step_updates_the_weights_of_sampled_ops_only_and_leaves_the_alpha_gradient(one_thread):
    model, edges, _ = counted_supernet()
    strategy = GdasStrategy()
    strategy.setup(model, epochs=2, steps_per_epoch=1)
    before = {n: p.detach().clone() for n, p in model.named_weight_parameters()}
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    out = strategy.step((x, y), (x, y), update_alpha=True)
    assert set(out) == {"train_loss", "train_correct", "train_count", "val_loss"}
    moved = {n for n, p in model.named_weight_parameters() if not torch.equal(p, before[n])}
    untouched_ops = [n for n in before if ".ops." in n and n not in moved]
    assert untouched_ops, "some op was not sampled in the weight step: its weights must not move"
    assert any(".ops." in n for n in moved) and "classifier.weight" in moved
    for a in model.alpha_parameters():
        assert a.grad is not None and bool((a.grad != 0).all())


# --- the temperature ------------------------------------------------------------------------------------

def test_the_temperature_falls_linearly_from_tau_max_to_tau_min():
    assert tau_at(0, 5, 10.0, 0.1) == 10.0
    assert tau_at(4, 5, 10.0, 0.1) == pytest.approx(0.1)
    assert tau_at(2, 5, 10.0, 0.1) == pytest.approx(5.05)
    assert tau_at(0, 1, 10.0, 0.1) == 10.0
    assert tau_at(9, 5, 10.0, 0.1) == pytest.approx(0.1)


def test_the_strategy_anneals_its_sampler_per_epoch_and_keeps_the_position(one_thread):
    model, _, _ = counted_supernet()
    strategy = GdasStrategy(tau_max=4.0, tau_min=1.0)
    strategy.setup(model, epochs=4, steps_per_epoch=1)
    taus = [strategy.sampler.tau]
    for _ in range(3):
        strategy.end_epoch()
        taus.append(strategy.sampler.tau)
    assert taus == pytest.approx([4.0, 3.0, 2.0, 1.0])
    state = strategy.state_dict()
    fresh = GdasStrategy(tau_max=4.0, tau_min=1.0)
    fresh.setup(model, epochs=4, steps_per_epoch=1)
    fresh.load_state_dict(state)
    assert fresh.sampler.tau == 1.0 and fresh.epoch == 3
    assert fresh.sampler.sample(torch.zeros(8, 3))[1] == strategy.sampler.sample(torch.zeros(8, 3))[1]


# --- whole searches --------------------------------------------------------------------------------------

def comparable(run_dir: Path):
    metrics = [{k: v for k, v in json.loads(line).items() if "seconds" not in k and "memory" not in k}
               for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    genotype = json.loads((run_dir / "genotype.json").read_text())
    return metrics, genotype["cells"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("gdas") / "run"
        result = nasreg.search(SPEC, out=out, preflight=False, evaluate=False)
    finally:
        torch.set_num_threads(threads)
    return result


@pytest.mark.slow
def test_a_search_writes_a_genotype_that_builds(reference, one_thread):
    run_dir = Path(reference.run_dir)
    metrics, cells = comparable(run_dir)
    assert [m["epoch"] for m in metrics] == [0, 1] and all(m["joint"] for m in metrics)
    # alphas moved away from their 1e-3 initialization: the architecture steps ran
    first = metrics[0]["alphas"]["normal"][0]
    assert max(first) - min(first) > 1e-3
    net = nasreg.build_network(reference.genotype, spec=SPEC, cells=2, channels=4)
    net.eval()
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


class StopAt(nasreg.Reporter):
    """Sends this process SIGINT (a Ctrl-C) after step ``step`` of epoch ``epoch``."""

    def __init__(self, epoch: int, step: int):
        self.epoch, self.at, self.epochs_done = epoch, step, 0

    def epoch_end(self, metrics):
        self.epochs_done += 1

    def step(self, done, info):
        if self.epochs_done == self.epoch and done == self.at:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_a_search_stopped_mid_epoch_resumes_to_the_uninterrupted_end(reference, tmp_path, one_thread):
    out = tmp_path / "run"
    # The engine reads the stop request before it reports a step: it honours it after the next one.
    with pytest.raises(nasreg.Interrupted, match="interrupted at stage 0, epoch 1, step 2;"):
        nasreg.search(SPEC, out=out, preflight=False, evaluate=False, progress=StopAt(epoch=1, step=1))
    nasreg.resume(out, preflight=False, evaluate=False)
    assert comparable(out) == comparable(Path(reference.run_dir))
