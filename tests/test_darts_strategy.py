"""DartsStrategy: exact second-order gradient, first-order gradient, state handling, spec checks.

Everything runs on a tiny float64 supernet built in this file from nasreg.MixedOp and a throwaway
operations registry, so the tests are fast and precise and do not depend on the DARTS cell space.
"""

from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import nasreg
from nasreg._core.errors import SpecError
from nasreg._core.params import bind
from nasreg_darts.strategy import DartsStrategy

# --------------------------------------------------------------------------- a tiny supernet


def _ops() -> nasreg.Registry:
    ops = nasreg.Registry("operations", "operation")
    ops.register("lin", lambda C, stride, affine: nn.Linear(C, C), plugin="test")
    ops.register("tanh_lin", lambda C, stride, affine: nn.Sequential(nn.Linear(C, C), nn.Tanh()), plugin="test")
    ops.register("bn_lin", lambda C, stride, affine: nn.Sequential(nn.Linear(C, C), nn.BatchNorm1d(C, affine=affine)),
                 plugin="test")
    ops.register("skip", lambda C, stride, affine: nn.Identity(), plugin="test")
    ops.register("none", lambda C, stride, affine: None, plugin="test", is_zero=True)
    return ops


CANDIDATES = {"normal": [["lin", "tanh_lin", "none"], ["skip", "bn_lin", "tanh_lin"]],
              "reduce": [["tanh_lin", "lin", "skip", "none"]]}


class TinyNet(nasreg.Supernet):
    def __init__(self, in_dim: int = 5, C: int = 6, classes: int = 4):
        super().__init__(CANDIDATES, alpha_init_std=0.5)
        ops = _ops()
        self.stem = nn.Linear(in_dim, C)
        self.normal = nn.ModuleList(MixedOpFor(c, C, ops) for c in self.candidates["normal"])
        self.reduce = nn.ModuleList(MixedOpFor(c, C, ops) for c in self.candidates["reduce"])
        self.head = nn.Linear(C, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.stem(x))
        wn, wr = self.edge_weights("normal"), self.edge_weights("reduce")
        h1 = torch.tanh(self.normal[0](h, wn[0]))
        h2 = torch.tanh(self.normal[1](h1, wn[1])) + h
        h3 = torch.tanh(self.reduce[0](h2, wr[0]))
        return self.head(h3)


def MixedOpFor(cands, C, ops):
    return nasreg.MixedOp(cands, C, 1, ops, affine=True)


def make_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().double()


def make_batches(seed: int = 1, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    xt = torch.randn(n, 5, generator=g, dtype=torch.float64)
    yt = torch.randint(0, 4, (n,), generator=g)
    xv = torch.randn(n, 5, generator=g, dtype=torch.float64)
    yv = torch.randint(0, 4, (n,), generator=g)
    return (xt, yt), (xv, yv)


def setup_strategy(model, epochs: int = 4, **kw) -> DartsStrategy:
    s = DartsStrategy(**kw)
    s.setup(model, epochs=epochs, steps_per_epoch=3)
    return s


def alpha_names(model):
    arch = {id(p) for p in model.arch_parameters()}
    return [n for n, p in model.named_parameters() if id(p) in arch]


def weight_names(model):
    return [n for n, _ in model.named_weight_parameters()]


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------- exact references


def loss_fn(model, params: dict, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(functional_call(model, params, (x,)), y)


def exact_unrolled_alpha_grad(model, strategy, train, val, xi):
    """d/dalpha L_val(w'(alpha), alpha), w' = w - xi*(m*buf + grad_w L_train(w, alpha) + wd*w),
    by autograd through the virtual step (create_graph=True). Works on a copy of the model."""
    ref = copy.deepcopy(model)
    an, wn = alpha_names(ref), weight_names(ref)
    named = dict(ref.named_parameters())
    alphas = {n: named[n].detach().clone().requires_grad_(True) for n in an}
    weights = {n: named[n].detach().clone().requires_grad_(True) for n in wn}
    m, wd = strategy.w_momentum, strategy.w_weight_decay
    bufs = {n: strategy.w_optimizer.state[p].get("momentum_buffer") if p in strategy.w_optimizer.state else None
            for n, p in model.named_weight_parameters()}
    lt = loss_fn(ref, {**alphas, **weights}, train)
    g = torch.autograd.grad(lt, list(weights.values()), create_graph=True)
    unrolled = {}
    for (n, w), gi in zip(weights.items(), g):
        d = gi + wd * w
        if m and bufs[n] is not None:
            d = d + m * bufs[n]
        unrolled[n] = w - xi * d
    lv = loss_fn(ref, {**alphas, **unrolled}, val)
    return torch.autograd.grad(lv, list(alphas.values()))


def buggy_fd_alpha_grad(model, strategy, train, val, xi, fd_eps):
    """The same step with the known bug: hessian term = (p - n) / 2. * eps."""
    ref = copy.deepcopy(model)
    an, wn = alpha_names(ref), weight_names(ref)
    named = dict(ref.named_parameters())
    alphas = {n: named[n].detach().clone().requires_grad_(True) for n in an}
    weights = {n: named[n].detach().clone().requires_grad_(True) for n in wn}
    m, wd = strategy.w_momentum, strategy.w_weight_decay
    bufs = {n: strategy.w_optimizer.state[p].get("momentum_buffer") if p in strategy.w_optimizer.state else None
            for n, p in model.named_weight_parameters()}
    g = torch.autograd.grad(loss_fn(ref, {**alphas, **weights}, train), list(weights.values()))
    unrolled = {}
    for (n, w), gi in zip(weights.items(), g):
        d = gi + wd * w
        if m and bufs[n] is not None:
            d = d + m * bufs[n]
        unrolled[n] = (w - xi * d).detach().requires_grad_(True)
    gv = torch.autograd.grad(loss_fn(ref, {**alphas, **unrolled}, val), list(alphas.values()) + list(unrolled.values()))
    dalpha, dw = gv[:len(an)], gv[len(an):]
    eps = fd_eps / torch.sqrt(sum((t ** 2).sum() for t in dw))
    plus = {n: (w + eps * d).detach() for (n, w), d in zip(weights.items(), dw)}
    minus = {n: (w - eps * d).detach() for (n, w), d in zip(weights.items(), dw)}
    gp = torch.autograd.grad(loss_fn(ref, {**alphas, **plus}, train), list(alphas.values()))
    gn = torch.autograd.grad(loss_fn(ref, {**alphas, **minus}, train), list(alphas.values()))
    correct = [da - xi * (p - n) / (2 * eps) for da, p, n in zip(dalpha, gp, gn)]
    buggy = [da - xi * ((p - n) / 2. * eps) for da, p, n in zip(dalpha, gp, gn)]
    return correct, buggy


def flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


# --------------------------------------------------------------------------- 1. second order


@pytest.mark.parametrize("unrolled_lr", [None, 0.7])
def test_second_order_matches_exact_unrolled_gradient(unrolled_lr):
    model = make_model()
    s = setup_strategy(model, order=2, w_lr=0.5, w_lr_min=0.0, unrolled_lr=unrolled_lr,
                       finite_diff_eps=1e-5, w_grad_clip=None)
    train, val = make_batches()
    # A weight step and an epoch boundary first: momentum buffers exist and the lr is annealed,
    # so the virtual step's momentum, weight decay and xi = current lr are all exercised.
    s.step(*make_batches(seed=7), update_alpha=False)
    s.end_epoch()
    xi = s.current_lr() if unrolled_lr is None else unrolled_lr
    assert s.current_lr() < 0.5

    exact = flat(exact_unrolled_alpha_grad(model, s, train, val, xi))
    fd_correct, fd_buggy = buggy_fd_alpha_grad(model, s, train, val, xi, 1e-5)
    alphas_before = [a.detach().clone() for a in model.arch_parameters()]

    out = s.step(train, val, update_alpha=True)
    got = flat([a.grad for a in model.arch_parameters()])

    scale = exact.abs().max().item()
    tol = 1e-8 * scale
    assert (got - exact).abs().max().item() < tol
    assert (flat(fd_correct) - exact).abs().max().item() < tol  # the test's own FD agrees
    # The `(p - n) / 2. * eps` bug drops the implicit term: far outside the tolerance.
    assert (flat(fd_buggy) - exact).abs().max().item() > 1e4 * tol
    # The implicit term matters here: the first-order part alone is far off too.
    assert set(out) == {"train_loss", "train_correct", "train_count", "val_loss"}
    assert out["train_count"] == 8 and isinstance(out["train_correct"], int)
    assert all(not torch.equal(a, b) for a, b in zip(alphas_before, model.arch_parameters()))


def test_second_order_default_eps_is_close():
    model = make_model(3)
    s = setup_strategy(model, order=2, w_lr=0.3, w_momentum=0.0, w_weight_decay=0.0)
    train, val = make_batches(5)
    exact = flat(exact_unrolled_alpha_grad(model, s, train, val, s.current_lr()))
    s.step(train, val, update_alpha=True)
    got = flat([a.grad for a in model.arch_parameters()])
    assert torch.allclose(got, exact, rtol=1e-3, atol=1e-4 * exact.abs().max().item())


def test_second_order_probes_step_eps_0_01_over_the_validation_gradient_norm():
    """DARTS's finite-difference step: the probes run at w +- eps * dw', dw' = grad_w' L_val(w',
    alpha), with eps = 0.01 / ||dw'||: the perturbation has norm 0.01 whatever ||dw'|| is. (The
    difference quotient itself is right for any small constant eps, so only the probes show it.)"""
    model = make_model(2)
    s = setup_strategy(model, order=2, w_lr=0.3)
    s.step(*make_batches(seed=6), update_alpha=False)  # momentum buffers exist
    train, val = make_batches(4)
    ref = copy.deepcopy(model)
    seen = []  # the weights at every forward pass: w, w', w + eps dw', w - eps dw', w
    model.register_forward_pre_hook(lambda *_: seen.append(flat([p.detach().clone() for _, p in
                                                                 model.named_weight_parameters()])))
    s.step(train, val, update_alpha=True)
    w0, w_virtual, w_plus, w_minus, w_after = seen
    assert torch.equal(w_after, w0) and not torch.equal(w_virtual, w0)

    # dw' by autograd on a copy, at the virtual step's weights
    named = dict(ref.named_parameters())
    shapes = [named[n].shape for n in weight_names(ref)]
    unrolled = {n: t.view(shape).clone().requires_grad_(True) for n, t, shape in
                zip(weight_names(ref), w_virtual.split([math.prod(sh) for sh in shapes]), shapes)}
    alphas = {n: named[n].detach() for n in alpha_names(ref)}
    dw = flat(torch.autograd.grad(loss_fn(ref, {**alphas, **unrolled}, val), list(unrolled.values())))
    norm = dw.norm().item()
    assert abs(norm - 1) > 0.2  # so eps = 0.01 / ||dw'|| and a constant 0.01 perturb differently
    eps = s.finite_diff_eps / norm
    assert s.finite_diff_eps == 0.01
    torch.testing.assert_close(w_plus - w0, eps * dw, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(w_minus - w0, -eps * dw, rtol=1e-6, atol=1e-12)
    assert (w_plus - w0).norm().item() == pytest.approx(0.01, rel=1e-6)


# --------------------------------------------------------------------------- 2. first order


def test_first_order_alpha_grad_is_val_grad_at_current_weights():
    model = make_model(1)
    s = setup_strategy(model, order=1)
    s.step(*make_batches(seed=9), update_alpha=True)  # Adam/SGD state exists, alpha grads are stale
    train, val = make_batches(2)
    ref = copy.deepcopy(model)
    expected = torch.autograd.grad(F.cross_entropy(ref(val[0]), val[1]), ref.arch_parameters())
    val_loss = F.cross_entropy(ref(val[0]), val[1]).item()
    out = s.step(train, val, update_alpha=True)
    for a, e in zip(model.arch_parameters(), expected):
        torch.testing.assert_close(a.grad, e, rtol=1e-12, atol=1e-14)
    assert out["val_loss"] == pytest.approx(val_loss, rel=1e-12)


def test_step_forward_count():
    """First order: one forward for alpha, one for w. Second order: 4 + 1."""
    for order, expected in ((1, 2), (2, 5)):
        model = make_model()
        calls = []
        model.register_forward_hook(lambda *a: calls.append(1))
        s = setup_strategy(model, order=order)
        s.step(*make_batches(), update_alpha=True)
        assert len(calls) == expected
        calls.clear()
        s.step(*make_batches(), update_alpha=False)
        assert len(calls) == 1


# --------------------------------------------------------------------------- 3. state handling


@pytest.mark.parametrize("order", [1, 2])
def test_weight_step_keeps_alpha_grad_and_frozen_alpha(order):
    model = make_model()
    s = setup_strategy(model, order=order)
    train, val = make_batches()
    s.step(train, val, update_alpha=True)
    grads = [a.grad.clone() for a in model.arch_parameters()]
    alphas = [a.detach().clone() for a in model.arch_parameters()]
    weights = [p.detach().clone() for p in model.weight_parameters()]
    s.step(*make_batches(seed=4), update_alpha=False)
    for a, g, v in zip(model.arch_parameters(), grads, alphas):
        assert torch.equal(a.grad, g)
        assert torch.equal(a.detach(), v)
    assert any(not torch.equal(p, w) for p, w in zip(model.weight_parameters(), weights))


@pytest.mark.parametrize("order", [1, 2])
def test_arch_step_restores_weights_and_buffers_exactly(order):
    model = make_model()
    s = setup_strategy(model, order=order, w_lr=0.4)
    s.step(*make_batches(seed=3), update_alpha=True)  # momentum buffers exist
    train, val = make_batches()
    before = snapshot(model)
    xt, yt = s._prepare(train)
    xv, yv = s._prepare(val)
    if order == 1:
        s._arch_step_first_order(xv, yv)
    else:
        s._arch_step_second_order(xt, yt, xv, yv)
    after = snapshot(model)
    changed = set(alpha_names(model))
    assert_same_state({k: v for k, v in before.items() if k not in changed},
                      {k: v for k, v in after.items() if k not in changed})
    assert all(not torch.equal(before[k], after[k]) for k in changed)


def test_full_step_weight_update_starts_from_restored_weights():
    """A second-order step == (alpha step) + a weight-only step from the snapshotted weights."""
    model_a = make_model()
    model_b = copy.deepcopy(model_a)
    sa = setup_strategy(model_a, order=2, w_lr=0.4)
    sb = setup_strategy(model_b, order=2, w_lr=0.4)
    warm = make_batches(seed=3)
    sa.step(*warm, update_alpha=False)
    sb.step(*warm, update_alpha=False)
    train, val = make_batches()
    out_a = sa.step(train, val, update_alpha=True)
    with torch.no_grad():  # b: same new alphas, then the weight step only
        for pa, pb in zip(model_a.arch_parameters(), model_b.arch_parameters()):
            pb.copy_(pa)
    out_b = sb.step(train, val, update_alpha=False)
    assert_same_state(snapshot(model_a), snapshot(model_b))
    assert out_a["train_loss"] == out_b["train_loss"]
    assert out_a["train_correct"] == out_b["train_correct"]


def test_cosine_schedule_per_epoch():
    model = make_model()
    s = setup_strategy(model, epochs=5, w_lr=0.1, w_lr_min=0.01)
    lrs = [s.current_lr()]
    for _ in range(5):
        s.step(*make_batches(), update_alpha=False)
        s.end_epoch()
        lrs.append(s.current_lr())
    expected = [0.01 + 0.5 * 0.09 * (1 + math.cos(math.pi * e / 5)) for e in range(6)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert DartsStrategy().current_lr() is None


# --------------------------------------------------------------------------- 4. state_dict


@pytest.mark.parametrize("order", [1, 2])
def test_state_dict_round_trip(order):
    model = make_model()
    s = setup_strategy(model, order=order, epochs=6)
    for i in range(3):
        s.step(*make_batches(seed=10 + i), update_alpha=i > 0)
        s.end_epoch()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "strategy": s.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    resumed_model = make_model(seed=123)  # different init: everything must come from the checkpoint
    resumed_model.load_state_dict(saved["model"])
    r = setup_strategy(resumed_model, order=order, epochs=6)
    r.load_state_dict(saved["strategy"])
    assert r.current_lr() == s.current_lr()

    for i in range(2):
        batches = make_batches(seed=20 + i)
        out_s = s.step(*batches, update_alpha=True)
        out_r = r.step(*batches, update_alpha=True)
        s.end_epoch()
        r.end_epoch()
        assert out_s == out_r
    assert_same_state(snapshot(model), snapshot(resumed_model))
    assert r.current_lr() == s.current_lr()
    assert r.state_dict()["w_scheduler"] == s.state_dict()["w_scheduler"]


# --------------------------------------------------------------------------- 5. spec checks


def test_bind_defaults_are_the_darts_reference():
    assert bind(DartsStrategy, {}, "[strategy]") == {
        "order": 1, "w_lr": 0.025, "w_lr_min": 0.001, "w_momentum": 0.9, "w_weight_decay": 3e-4,
        "w_grad_clip": 5.0, "alpha_lr": 3e-4, "alpha_betas": [0.5, 0.999], "alpha_weight_decay": 1e-3,
        "unrolled_lr": None, "finite_diff_eps": 0.01, "amp": "off", "channels_last": False, "compile": False}
    keys = bind(DartsStrategy, {"order": 2, "w_lr": 1, "unrolled_lr": 0.01, "amp": "bf16"}, "[strategy]")
    assert keys["w_lr"] == 1.0 and isinstance(keys["w_lr"], float)
    DartsStrategy(**keys)


@pytest.mark.parametrize("keys, fragment", [
    ({"order": 3}, "order"),
    ({"order": True}, "order"),
    ({"w_lr": -0.1}, "w_lr"),
    ({"alpha_lr": 0}, "alpha_lr"),
    ({"w_momentum": 1.0}, "w_momentum"),
    ({"alpha_betas": [0.5, 1.0]}, "alpha_betas"),
    ({"finite_diff_eps": 0.0}, "finite_diff_eps"),
    ({"unrolled_lr": -1.0}, "unrolled_lr"),
    ({"amp": "fp8"}, "amp"),
    ({"w_lrr": 0.1}, "did you mean 'w_lr'"),
])
def test_bind_rejects_bad_params(keys, fragment):
    with pytest.raises(SpecError, match=fragment):
        bind(DartsStrategy, keys, "[strategy]")


@pytest.mark.parametrize("kw", [
    {"alpha_betas": [0.5]}, {"alpha_betas": [0.5, 0.9, 0.99]}, {"alpha_betas": [0.5, 1.0]},
    {"w_lr": 0.01, "w_lr_min": 0.1}, {"order": 3}, {"w_lr": -1.0}, {"amp": "fp8"},
])
def test_constructor_rejects_bad_combinations(kw):
    with pytest.raises(ValueError):
        DartsStrategy(**kw)


def test_component_build_turns_value_error_into_spec_error():
    registries = {"strategies": nasreg.Registry("strategies", "search strategy")}
    registries["strategies"].register("darts", DartsStrategy, plugin="test")
    comp = nasreg._core.params.component("strategies", {"name": "darts", "alpha_betas": [0.5]}, "[strategy]", registries)
    with pytest.raises(SpecError, match="alpha_betas"):
        comp.build()


# --------------------------------------------------------------------------- amp on CPU


def test_amp_on_cpu():
    torch.manual_seed(0)
    model = TinyNet().float()
    s = setup_strategy(model, order=2, amp="bf16")
    assert s._amp_dtype is torch.bfloat16
    (xt, yt), (xv, yv) = make_batches()
    out = s.step((xt.float(), yt), (xv.float(), yv), update_alpha=True)
    assert math.isfinite(out["train_loss"]) and math.isfinite(out["val_loss"])
    assert all(torch.isfinite(a.grad).all() for a in model.arch_parameters())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s16 = setup_strategy(TinyNet().float(), amp="fp16")
    assert s16._amp_dtype is None and s16.w_scaler is None
    assert any("fp16" in str(w.message) for w in caught)


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("order", [1, 2])
def test_compile_runs_every_pass_through_torch_compile_with_the_eager_results(monkeypatch, order):
    """``compile = true``: the passes go through ``torch.compile`` of the supernet (here with the
    ``aot_eager`` backend: the graph capture and AOT autograd without inductor's C++ build) and
    the steps give the eager steps' weights and alphas; the checkpointed state is the model's."""
    real, calls = torch.compile, []

    def compile_for_test(model, **kw):
        calls.append(kw)
        return real(model, backend="aot_eager", **kw)

    monkeypatch.setattr(torch, "compile", compile_for_test)
    torch._dynamo.reset()
    train, val = make_batches()
    eager_model, compiled_model = make_model(), make_model()
    eager = setup_strategy(eager_model, order=order)
    compiled = setup_strategy(compiled_model, order=order, compile=True)
    assert calls == [{"dynamic": False}] and compiled._net is not compiled_model
    for _ in range(2):
        a = eager.step(train, val, update_alpha=True)
        b = compiled.step(train, val, update_alpha=True)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-9)
    sa, sb = eager_model.state_dict(), compiled_model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-7, atol=1e-9)
    for pa, pb in zip(eager_model.arch_parameters(), compiled_model.arch_parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-7, atol=1e-9)
    torch._dynamo.reset()
