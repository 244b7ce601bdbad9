"""The collapse monitor (nasreg/_core/monitor.py): the dominant Hessian eigenvalue of the validation
loss w.r.t. the architecture, the skip connections of the cell derived now, the DARTS-ES early
stop, their spec keys, their metrics and stages.json records, and exact resume with them on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nasreg
from nasreg._core.monitor import (CollapseMonitor, dominant_eigenvalue, early_stop_fires, fixed_batch,
                                  hessian_vector_product, identity_edges, measurement_mode)
from nasreg._core.plugins import load_plugins
from nasreg._core.selector import StageResult

pytestmark = pytest.mark.usefixtures("one_thread_module")

REGS = load_plugins().registries
OPS = REGS.operations
TINY_OPS = ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"]


def darts_space(**keys):
    return REGS.search_spaces.get("darts-cell").factory(keys.pop("operations", TINY_OPS), **keys)


def tiny_supernet(seed: int = 0):
    torch.manual_seed(seed)
    space = darts_space(cells=3, channels=2, nodes=2)
    net = space.build_supernet(space.full_candidates(), ops=OPS, in_channels=1, num_classes=10)
    with torch.no_grad():  # alphas away from uniform: a Hessian with some structure
        for a in net.arch_parameters():
            a.normal_(0, 0.5)
    return space, net.double()


def batch(n: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def exact_hessian(net, x, y) -> torch.Tensor:
    """The full Hessian over the flattened architecture parameters (torch.autograd.functional)."""
    params = net.arch_parameters()
    names = {id(p): n for n, p in net.named_parameters()}
    keys, shapes = [names[id(p)] for p in params], [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def loss(flat):
        parts = dict(zip(keys, (t.view(s) for t, s in zip(flat.split(sizes), shapes))))
        return F.cross_entropy(torch.func.functional_call(net, parts, (x,)), y)

    flat = torch.cat([p.detach().flatten() for p in params])
    return torch.autograd.functional.hessian(loss, flat, vectorize=True)


@pytest.fixture(scope="module")
def hessian_case():
    """A tiny float64 supernet, a batch and the exact Hessian of its loss over the alphas."""
    _space, net = tiny_supernet()
    x, y = batch(n=8)
    with measurement_mode(net, batch_norm_stats=True):
        H = exact_hessian(net, x, y)
    return net, x, y, H


def test_power_iteration_matches_the_exact_dominant_eigenvalue(hessian_case):
    net, x, y, H = hessian_case
    with measurement_mode(net, batch_norm_stats=True):
        value, done = dominant_eigenvalue(lambda: F.cross_entropy(net(x), y), net.arch_parameters(),
                                          iterations=300, tol=1e-6)
    eig = np.linalg.eigvalsh(H.numpy())
    exact = eig[np.argmax(np.abs(eig))]
    assert H.shape[0] == sum(p.numel() for p in net.arch_parameters())
    assert abs(exact) > 1e-4, "a degenerate test Hessian"
    assert value == pytest.approx(exact, rel=0.01)
    assert done < 300  # converged


def test_hessian_vector_product_is_the_hessian_times_v(hessian_case):
    net, x, y, H = hessian_case
    params = net.arch_parameters()
    with measurement_mode(net, batch_norm_stats=True):
        grads = torch.autograd.grad(F.cross_entropy(net(x), y), params, create_graph=True)
        g = torch.Generator().manual_seed(5)
        v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
        hv = torch.cat([h.flatten() for h in hessian_vector_product(grads, params, v)])
    expected = H @ torch.cat([t.flatten() for t in v])
    assert torch.allclose(hv, expected, rtol=1e-8, atol=1e-10)


def test_a_negative_dominant_eigenvalue_keeps_its_sign():
    # f(a) = -3 a0^2 + a1^2: eigenvalues -6 and 2; the largest in magnitude is -6.
    a = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))
    value, _ = dominant_eigenvalue(lambda: -3 * a[0] ** 2 + a[1] ** 2, [a], iterations=100, tol=1e-12)
    assert value == pytest.approx(-6.0, rel=1e-6)


def test_measuring_changes_nothing_in_the_model_or_the_rngs():
    space, net = tiny_supernet()
    net.train()
    x, y = batch()
    mon = CollapseMonitor((x, y), iterations=5, tol=1e-3, batch_norm_stats=True, space=space, operations=OPS,
                          zero_ops={"none"})
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    figures = mon.measure(net, torch.device("cpu"))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())  # BN running stats, counters
    assert torch.equal(rng, torch.get_rng_state())
    assert all(m.training for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
    assert set(figures) == {"hessian_max_eig", "monitor_iterations_run", "skip_connects"}
    assert figures["monitor_iterations_run"] <= 5


def test_skip_connects_counts_identity_ops_of_the_derived_cell():
    space = darts_space(nodes=2)  # edges (0,2) (1,2) (0,3) (1,3) (2,3)
    cands = space.full_candidates()
    skip, conv, pool = (TINY_OPS.index(n) for n in ("skip_connect", "sep_conv_3x3", "max_pool_3x3"))

    def edge(best, w=0.7):
        row = [0.1] * len(TINY_OPS)
        row[best] = w
        return row

    # normal: node 2 keeps both its edges (skips: on (1,2) "none" is heaviest but never chosen),
    # node 3 keeps (2,3) conv and (1,3) skip, not the weak (0,3) skip: 3 skips.
    normal = [edge(skip), [0.5, 0.4, 0.05, 0.05], edge(skip, 0.3), edge(skip, 0.6), edge(conv)]
    reduce = [edge(pool), edge(conv), edge(pool), edge(conv), edge(pool)]
    counts = identity_edges(space, cands, {"normal": normal, "reduce": reduce}, OPS, {"none"})
    assert counts == {"normal": 3, "reduce": 0}
    derived = space.derive(StageResult(0, cands, space.edges(), {"normal": normal, "reduce": reduce}), {"none"})
    assert sum(e.op == "skip_connect" for e in derived["normal"]) == 3


def test_a_space_without_a_derivation_rule_has_no_skip_count(toycore):
    space = toycore.toy_space(["toy_zero", "toy_skip", "toy_conv"])
    alphas = {"normal": [[0.2, 0.5, 0.3]] * 3}
    assert identity_edges(space, space.full_candidates(), alphas, OPS, set()) is None


def test_early_stop_rule_on_crafted_eigenvalues():
    flat = [1.0] * 10
    assert not early_stop_fires(flat, 5, 1.3)
    assert not early_stop_fires([1.0] * 8 + [100.0], 5, 1.3)          # 9 values: not two windows yet
    assert early_stop_fires([1.0] * 9 + [100.0], 5, 1.3)
    assert not early_stop_fires([1.0] * 5 + [1.2, 1.3, 1.3, 1.3, 1.3], 5, 1.3)  # mean 1.28: below
    assert early_stop_fires([1.0] * 5 + [1.2, 1.3, 1.4, 1.4, 1.4], 5, 1.3)      # mean 1.34
    assert early_stop_fires([5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0], 5, 1.3)  # trailing windows
    assert not early_stop_fires([-1.0] * 5 + [5.0] * 5, 5, 1.3)        # a non-positive earlier mean
    assert early_stop_fires([1.0, 2.0], 1, 1.3) and not early_stop_fires([2.0, 2.0], 1, 1.3)


def test_fixed_batch_is_deterministic_and_draws_from_no_global_rng():
    data = torch.utils.data.TensorDataset(torch.arange(50.0).view(50, 1), torch.arange(50))
    rng = torch.get_rng_state()
    a, b = fixed_batch(data, 8, seed=3), fixed_batch(data, 8, seed=3)
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[1].numel() == 8
    assert not torch.equal(fixed_batch(data, 8, seed=4)[1], a[1])
    assert fixed_batch(data, 500, seed=3)[1].numel() == 50


def test_a_supernet_without_architecture_parameters_is_refused(toycore):
    space = toycore.toy_space(["toy_zero", "toy_skip", "toy_conv"])
    regs = load_plugins(entry_points=[], objects=[("toycore", toycore)]).registries
    net = space.build_supernet(space.full_candidates(), ops=regs.operations, in_channels=1, num_classes=3)
    net.alphas = torch.nn.ModuleDict()
    with pytest.raises(nasreg.SpecError) as err:
        CollapseMonitor.check(net, "x.toml: [search] monitor")
    assert str(err.value).startswith("x.toml: [search] monitor: the supernet (ToyNet) has no architecture")
    assert "\n" not in str(err.value)


# --- spec keys -------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("search.monitor_window=0", "[search] monitor_window: expected an integer >= 1"),
    ("search.monitor_ratio=1.0", "[search] monitor_ratio: expected a number > 1"),
    ("search.monitor_iterations='many'", "[search] monitor_iterations: expected an integer"),
    ("search.monitor_tol=0", "[search] monitor_tol: expected a number > 0"),
    ("search.monitor_early_stop=true", "[search] monitor_early_stop: true needs monitor = true"),
    ("search.monitor='yes'", "[search] monitor: expected"),
])
def test_bad_monitor_keys_are_one_line_naming_the_key(override, message):
    with pytest.raises(nasreg.SpecError) as err:
        nasreg.load_spec("specs/quickstart.toml", overrides=[override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_monitor_with_a_sampling_strategy_is_refused_at_validate():
    with pytest.raises(nasreg.SpecError) as err:
        nasreg.load_spec("specs/random.toml", overrides=["search.monitor=true"])
    msg = str(err.value)
    assert "[search] monitor: strategy 'random' trains no supernet" in msg and "\n" not in msg


def test_monitor_keys_are_in_the_digest_only_when_it_is_on():
    plain = nasreg.load_spec("specs/quickstart.toml")
    assert plain.resolved()["search"]["monitor"] is False and plain.resolved()["search"]["monitor_window"] == 5
    assert nasreg.load_spec("specs/quickstart.toml", overrides=["search.monitor_window=3"]).digest() == plain.digest()
    on = nasreg.load_spec("specs/quickstart.toml", overrides=["search.monitor=true"])
    on3 = nasreg.load_spec("specs/quickstart.toml", overrides=["search.monitor=true", "search.monitor_window=3"])
    assert len({plain.digest(), on.digest(), on3.digest()}) == 3


# --- in a search -----------------------------------------------------------------------------------

def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _training(lines: list[dict]) -> list[dict]:
    keep = ("stage", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "alphas")
    return [{k: m[k] for k in keep} for m in lines]


def test_toy_search_monitor_on_records_the_keys_and_trains_the_same(write_spec, toycore, tmp_path, monkeypatch):
    monkeypatch.setenv("NASREG_DISABLE_PLUGINS", "plots")  # figures cost seconds; plotted in test_plots
    spec = write_spec()
    plugins = [toycore]
    off = nasreg.search(spec, plugins=plugins, out=tmp_path / "off", preflight=False)
    on = nasreg.search(spec, plugins=plugins, out=tmp_path / "on", preflight=False,
                       overrides=["search.monitor=true", "search.epochs=3"])
    off3 = nasreg.search(spec, plugins=plugins, out=tmp_path / "off3", preflight=False,
                         overrides=["search.epochs=3"])
    lines_off, lines_on = _lines(off.run_dir), _lines(on.run_dir)
    assert not any("hessian_max_eig" in m or "skip_connects" in m for m in lines_off)
    assert all(isinstance(m["hessian_max_eig"], float) and m["monitor_iterations_run"] >= 1 for m in lines_on)
    assert not any("skip_connects" in m for m in lines_on)  # the toy space has no derivation rule
    assert _training(lines_on) == _training(_lines(off3.run_dir))  # the monitor perturbs nothing
    assert json.loads((on.run_dir / "genotype.json").read_text())["cells"] == \
        json.loads((off3.run_dir / "genotype.json").read_text())["cells"]
    assert "stopped_early" not in json.loads((on.run_dir / "stages.json").read_text())[0]


DIGITS = {
    "run": {"name": "mon", "threads": 1, "device": "cpu", "seed": 0},
    "data": {"dataset": "digits", "limit": 96, "batch_size": 16},
    "search_space": {"name": "darts-cell", "operations": TINY_OPS, "cells": 3, "channels": 4, "nodes": 2},
    "search": {"epochs": 5, "warmup_epochs": 1, "monitor": True, "monitor_iterations": 6,
               "monitor_early_stop": True, "monitor_window": 1, "monitor_ratio": 1.000001},
    "strategy": {"name": "darts"},
    "selector": {"name": "argmax"},
}


@pytest.fixture(scope="module")
def early_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("early") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NASREG_DISABLE_PLUGINS", "plots")
        nasreg.search(DIGITS, out=out, preflight=False, plugins=[])
    return out


def _stop_expected(lines: list[dict], window: int, ratio: float) -> int | None:
    eig = []
    for m in lines:
        if m["joint"]:
            eig.append(m["hessian_max_eig"])
            if early_stop_fires(eig, window, ratio):
                return m["epoch"]
    return None


def test_early_stop_in_a_search_ends_the_stage_and_rolls_back_the_alphas(early_run):
    lines = _lines(early_run)
    assert all(set(m["skip_connects"]) == {"normal", "reduce"} for m in lines)
    expected = _stop_expected(lines, 1, 1.000001)
    assert expected is not None, f"the crafted threshold did not fire: {[m['hessian_max_eig'] for m in lines]}"
    (stage,) = json.loads((early_run / "stages.json").read_text())
    stopped = stage["stopped_early"]
    assert stopped["epoch"] == expected == lines[-1]["epoch"] < DIGITS["search"]["epochs"] - 1
    assert stopped["alphas_epoch"] == expected - 1 and "monitor_ratio" in stopped["reason"]
    summary = json.loads((early_run / "summary.json").read_text())
    assert summary["stages"][0]["stopped_early"] == stopped
    # The genotype is the derivation of the alphas recorded one (monitor_window) epoch before the stop.
    space = darts_space(cells=3, channels=4, nodes=2)
    back = next(m["alphas"] for m in lines if m["epoch"] == stopped["alphas_epoch"])
    kept = space.derive(StageResult(0, space.full_candidates(), space.edges(), back), {"none"})
    genotype = nasreg.load_genotype(early_run / "genotype.json")
    assert {ct: [(e.node, e.input, e.op) for e in c.edges] for ct, c in genotype.cells.items()} == \
        {ct: [(e.node, e.input, e.op) for e in edges] for ct, edges in kept.items()}


class _Killed(BaseException):
    """Raised by the plugin below: the process 'dies' after an epoch's metrics, before its checkpoint."""


class _KillAt:
    def __init__(self, epoch: int):
        self.epoch = epoch

    @nasreg.hookimpl
    def on_epoch_end(self, stage, epoch, metrics):
        if epoch == self.epoch:
            raise _Killed()


@pytest.mark.slow
def test_resume_with_the_monitor_on_matches_the_uninterrupted_run(early_run, tmp_path, monkeypatch):
    monkeypatch.setenv("NASREG_DISABLE_PLUGINS", "plots")
    stop = json.loads((early_run / "stages.json").read_text())[0]["stopped_early"]["epoch"]
    out = tmp_path / "run"
    with pytest.raises(_Killed):
        nasreg.search(DIGITS, out=out, preflight=False, plugins=[_KillAt(stop)])
    assert not (out / "genotype.json").exists()
    nasreg.resume(out, preflight=False)

    def comparable(run_dir):
        lines = [{k: v for k, v in m.items() if "seconds" not in k and "memory" not in k} for m in _lines(run_dir)]
        stages = [{k: v for k, v in s.items() if "seconds" not in k}
                  for s in json.loads((run_dir / "stages.json").read_text())]
        return lines, stages, json.loads((run_dir / "genotype.json").read_text())["cells"]

    assert comparable(out) == comparable(early_run)


def test_the_plots_plugin_draws_the_monitor(early_run, tmp_path):
    import shutil
    from types import SimpleNamespace

    import nasreg_plots

    run_dir = tmp_path / "run"
    shutil.copytree(early_run, run_dir)
    lines = _lines(run_dir)
    fig = nasreg_plots.monitor_figure(run_dir / "metrics.jsonl", run_dir / "stages.json")
    eig_ax, skip_ax = [a for a in fig.axes if a.get_visible()]
    (eig_line,) = [ln for ln in eig_ax.get_lines() if len(ln.get_xdata()) == len(lines)]
    assert list(eig_line.get_ydata()) == [m["hessian_max_eig"] for m in lines]
    skip_lines = [ln for ln in skip_ax.get_lines() if len(ln.get_xdata()) == len(lines)]
    assert sorted(list(ln.get_ydata()) for ln in skip_lines) == sorted(
        [m["skip_connects"][ct] for m in lines] for ct in ("normal", "reduce"))
    stop = json.loads((run_dir / "stages.json").read_text())[0]["stopped_early"]["epoch"]
    assert any(list(ln.get_xdata()) == [stop + 1, stop + 1] for ln in eig_ax.get_lines())  # the stop, x from 1
    assert fig.legends and not eig_ax.get_legend()  # the legend lies outside the axes
    nasreg_plots.on_run_end(run=SimpleNamespace(run_dir=run_dir, space=darts_space(cells=3, channels=4, nodes=2)),
                            genotype=nasreg.load_genotype(run_dir / "genotype.json"))
    assert (run_dir / "monitor.png").stat().st_size > 0 and (run_dir / "alphas.png").exists()
