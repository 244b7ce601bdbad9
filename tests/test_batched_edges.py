"""Batched edges (nasreg_darts.batched) equal the per-edge mixed ops, in float64 on CPU."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn

import nasreg
from nasreg._core.plugins import load_plugins
from nasreg_darts.batched import has_protocol
from nasreg_darts.strategy import DartsStrategy

REGS = load_plugins().registries
OPS = REGS.operations
FACTORY = REGS.search_spaces.get("darts-cell").factory
DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
TOL = {"rtol": 1e-9, "atol": 1e-10}


@pytest.fixture(autouse=True)
def _one_thread_float64():
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)


def stage1(space, seed=0):
    """DG-DARTS stage-1 style candidate sets: 2 to 5 ops per edge, different per edge."""
    rng = random.Random(seed)
    return {ct: [[o for o in space.operations if o in set(rng.sample(space.operations, rng.randint(2, 5)))]
                 for _ in edges] for ct, edges in space.edges().items()}


def pair(ops=OPS, candidates=None, operations=DARTS_OPS, **keys):
    """(batched supernet, per-edge copy with the same weights)."""
    torch.manual_seed(0)
    space = FACTORY(operations, **{"cells": 3, "channels": 8, "nodes": 3, **keys})
    cands = space.full_candidates() if candidates is None else candidates(space)
    model = space.build_supernet(cands, ops=ops, in_channels=3, num_classes=5)
    with torch.no_grad():  # alphas away from uniform, so that wrong weights would show
        for a in model.arch_parameters():
            a.normal_()
    ref = copy.deepcopy(model)
    for cell in ref.cells:
        cell.batched = False
    assert all(cell.batched for cell in model.cells)
    return model, ref


def data(n=4, size=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 5, (n,), generator=g)


def assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")


def forward_backward(model, x, y, seed=5):
    torch.manual_seed(seed)  # drop path masks
    out = model(x)
    loss = nn.functional.cross_entropy(out, y)
    params = [p for _, p in model.named_parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
    return out, loss, grads


CASES = {
    "plain": {},
    "reduction-odd-size": {"reductions": [1]},
    "drop-path": {"drop_path": 0.3},
    "partial-channels": {"partial_channels": 2, "edge_normalization": True},
    "edge-normalization": {"edge_normalization": True},
    "affine": {"affine": True},
}


#: (stage, how kinds on some edges of a wave run: per edge, CPU's choice, or batched, a GPU's)
STAGES = [(0, "per-edge"), (1, "subsets-per-edge"), (1, "subsets-batched")]


def subsets_mode(monkeypatch, subsets: str) -> None:
    import nasreg_darts.batched as batched

    monkeypatch.setattr(batched, "CPU_SUBSETS_PER_EDGE", subsets != "subsets-batched")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("stage,subsets", STAGES)
def test_forward_loss_and_gradients_equal_per_edge(case, stage, subsets, monkeypatch):
    subsets_mode(monkeypatch, subsets)
    model, ref = pair(candidates=None if stage == 0 else stage1, **CASES[case])
    x, y = data(size=9 if case == "reduction-odd-size" else 8)
    for m in (model, ref):
        m.train()
    out_b, loss_b, g_b = forward_backward(model, x, y)
    out_r, loss_r, g_r = forward_backward(ref, x, y)
    torch.testing.assert_close(out_b, out_r, **TOL)
    torch.testing.assert_close(loss_b, loss_r, **TOL)
    names = [n for n, _ in model.named_parameters()]
    for n, a, b in zip(names, g_b, g_r):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, n=n: f"grad {n}: {m}")
    assert any(float(g.abs().sum()) > 0 for n, g in zip(names, g_b) if n.startswith("alphas"))
    assert_same_state(model, ref)  # BN running statistics and counters moved alike
    model.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), **TOL)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("stage,subsets", STAGES)
def test_darts_step_equal_per_edge(order, stage, subsets, monkeypatch):
    subsets_mode(monkeypatch, subsets)
    model, ref = pair(candidates=None if stage == 0 else stage1, reductions=[1])
    strategies = []
    for m in (model, ref):
        s = DartsStrategy(order=order)
        s.setup(m, epochs=2, steps_per_epoch=2)
        strategies.append(s)
    for step in range(2):
        train, val = data(seed=10 + step), data(seed=20 + step)
        results = [s.step(train, val, update_alpha=True) for s in strategies]
        assert results[0]["val_loss"] == pytest.approx(results[1]["val_loss"], rel=1e-10)
        assert results[0]["train_loss"] == pytest.approx(results[1]["train_loss"], rel=1e-10)
    assert_same_state(model, ref)
    for a, b in zip(model.arch_parameters(), ref.arch_parameters()):
        torch.testing.assert_close(a.grad, b.grad, **TOL)


class _Doubling(nn.Module):
    """A third-party op without the batched protocol."""

    def __init__(self, C, stride):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, stride=stride, padding=1, bias=False)

    def forward(self, x):
        return 2 * self.conv(x)


class _DoublingPlugin:
    @nasreg.hookimpl
    def register_operations(self, register):
        register("doubling", lambda C, stride, affine: _Doubling(C, stride), is_zero=False,
                 parameter_free=False, kind="conv")


def test_third_party_op_without_protocol_runs_per_edge_and_equals():
    registry = load_plugins(objects=[("doubling", _DoublingPlugin())]).registries.operations
    model, ref = pair(ops=registry, operations=[*DARTS_OPS, "doubling"], reductions=[1])
    mods = [m for m in model.modules() if isinstance(m, _Doubling)]
    assert mods and not any(has_protocol(m) for m in mods)
    assert all(has_protocol(e.ops["sep_conv_3x3"]) for c in model.cells for e in c.edges)
    x, y = data()
    out_b, loss_b, g_b = forward_backward(model, x, y)
    out_r, loss_r, g_r = forward_backward(ref, x, y)
    torch.testing.assert_close(out_b, out_r, **TOL)
    for a, b in zip(g_b, g_r):
        torch.testing.assert_close(a, b, **TOL)


def test_active_sets_use_the_per_edge_path_and_state_dict_names_are_unchanged():
    model, ref = pair()
    assert list(model.state_dict()) == list(ref.state_dict())
    x, _ = data()
    model(x)  # lays the BN statistics out as views of one tensor per batched kind
    state = model.state_dict()
    assert list(state) == list(ref.state_dict())
    fresh = copy.deepcopy(ref)
    fresh.load_state_dict(state)  # loads into the per-edge modules, and back
    model.load_state_dict(fresh.state_dict())
    calls = []

    def weighting(ct, alphas, training):
        calls.append(ct)
        return [torch.softmax(a, -1) for a in alphas], [[0, 4] for _ in alphas]

    model.weighting = ref.weighting = weighting
    torch.testing.assert_close(model(x), ref(x), **TOL)
    assert calls


def test_spec_key_batched_edges_is_validated_and_selects_the_path():
    space = FACTORY(DARTS_OPS, cells=3, channels=4, batched_edges=False)
    model = space.build_supernet(space.full_candidates(), ops=OPS, in_channels=3, num_classes=5)
    assert not any(c.batched for c in model.cells)
    with pytest.raises(nasreg.SpecError, match="batched_edges"):
        nasreg.load_spec("specs/quickstart.toml", overrides=["search_space.batched_edges=3"])


def test_waves_stack_the_two_input_nodes_then_one_wave_per_intermediate_node():
    from nasreg_darts.batched import build_groups

    model, _ = pair(reductions=[1])
    for cell in model.cells:
        waves = build_groups(cell)
        assert [g.sources for g in waves] == [[0, 1], [2], [3]]  # 3 nodes: node 4 feeds no edge
        assert [len(g.edges) for g in waves] == [6, 2, 1]
        assert sorted(e for g in waves for e in g.edges) == list(range(len(cell.edges)))


@pytest.mark.parametrize("stage,subsets", STAGES)
def test_channels_last_equals_per_edge(stage, subsets, monkeypatch):
    subsets_mode(monkeypatch, subsets)
    model, ref = pair(candidates=None if stage == 0 else stage1, reductions=[1])
    for m in (model, ref):
        m.to(memory_format=torch.channels_last)
    x, y = data()
    x = x.contiguous(memory_format=torch.channels_last)
    out_b, loss_b, g_b = forward_backward(model, x, y)
    out_r, loss_r, g_r = forward_backward(ref, x, y)
    torch.testing.assert_close(out_b, out_r, **TOL)
    for a, b in zip(g_b, g_r):
        torch.testing.assert_close(a, b, **TOL)
    assert_same_state(model, ref)


def count_calls(fn) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode

    n = [0]

    class _Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            n[0] += 1
            return func(*args, **(kwargs or {}))

    with _Count():
        fn()
    return n[0]


def test_the_batched_step_makes_far_fewer_operator_calls():
    """What benchmarks/dispatch_count.py measures on the paper's supernet, on a tiny one: one
    first-order search step (architecture and weight steps) in aten calls."""
    counts = []
    for model in pair(reductions=[1]):
        s = DartsStrategy(order=1)
        s.setup(model, epochs=1, steps_per_epoch=3)
        s.step(data(seed=10), data(seed=20), update_alpha=True)  # optimizer state, snapshot storage
        train, val = data(seed=11), data(seed=21)
        counts.append(count_calls(lambda s=s, t=train, v=val: s.step(t, v, update_alpha=True)))
    batched, per_edge = counts
    assert batched < 0.5 * per_edge, counts  # 0.39 here (3,544 vs 9,078), 0.32 on the paper supernet
