"""nasreg._core.preflight: parameter count, FLOPs per step and the peak-memory check, on a tiny spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import nasreg._core.preflight as pf
from nasreg._core import spec as spec_mod
from nasreg._core.errors import NasregError
from nasreg._core.search import prepare

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.dataset=digits", "data.limit=64", "data.batch_size=8", "data.num_workers=0",
        "search_space.cells=3", "search_space.channels=4", "run.threads=1", "run.device=cpu"]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def prepared(*overrides: str, spec: str = "darts.toml"):
    s, plugins = spec_mod.load(ROOT / "specs" / spec, [*TINY, *overrides])
    return prepare(s, plugins)


def test_estimate_counts_weights_flops_and_activations():
    p = prepared("strategy.order=1")
    est = pf.estimate(p)
    model = p.space.build_supernet(p.space.full_candidates(), ops=p.plugins.registries.operations,
                                   in_channels=p.bundle.in_channels, num_classes=p.bundle.num_classes)
    assert est.num_weights == model.num_weights()
    assert est.num_arch_parameters == sum(a.numel() for a in model.arch_parameters()) == 2 * 14 * 8
    assert est.batch_size == 8 and est.device == "cpu"
    # the forward FLOPs are FlopCounterMode's count for the spec's batch
    x = torch.randn(8, p.bundle.in_channels, p.bundle.image_size, p.bundle.image_size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert est.forward_flops == counter.get_total_flops() > 0
    assert est.passes_per_step == 2 and est.step_flops == 3 * 2 * est.forward_flops
    assert est.activation_bytes_per_image > 0
    assert est.peak_bytes >= est.activation_bytes_per_image * 8 + est.weight_state_bytes
    assert est.free_bytes is None or est.free_bytes > 0
    assert "pre-flight:" in est.line() and "\n" not in est.line()


def test_second_order_and_batch_scale():
    one = pf.estimate(prepared("strategy.order=1"))
    two = pf.estimate(prepared("strategy.order=2"))
    assert two.passes_per_step == 5 and two.step_flops == 3 * 5 * two.forward_flops
    assert two.weight_state_bytes == 2 * one.weight_state_bytes
    big = pf.estimate(prepared("strategy.order=1"), batch_size=32)
    assert big.forward_flops == 4 * one.forward_flops
    assert big.activation_bytes_per_image == one.activation_bytes_per_image
    assert big.peak_bytes > one.peak_bytes


def test_partial_channels_shrink_the_estimate():
    full = pf.estimate(prepared())
    pc = pf.estimate(prepared("search_space.partial_channels=4"))
    assert pc.num_weights < full.num_weights
    assert pc.forward_flops < full.forward_flops / 2
    assert pc.activation_bytes_per_image < full.activation_bytes_per_image


def test_preflight_prints_one_line_and_leaves_rng_and_threads_alone():
    p = prepared()
    torch.set_num_threads(2)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    lines = []
    est = pf.preflight(p, echo=lines.append)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_num_threads() == 2
    assert lines == [est.line()]


def test_preflight_fails_early_when_memory_does_not_fit(monkeypatch):
    monkeypatch.setattr(pf, "free_memory_bytes", lambda device: 1 * 2**20)
    p = prepared("strategy.order=2")
    with pytest.raises(NasregError) as info:
        pf.preflight(p, echo=None)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p.spec.path}: the search needs about ")
    assert "1 MB is free" in msg
    for knob in ("[data] batch_size", "[search_space] partial_channels = 4", "[strategy] order = 1"):
        assert knob in msg
    # first order with partial channels already on: only the batch size is left to suggest
    q = prepared("strategy.order=1", "search_space.partial_channels=4")
    with pytest.raises(NasregError) as info:
        pf.preflight(q, echo=None)
    assert "batch_size" in str(info.value) and "order" not in str(info.value)
    assert "partial_channels" not in str(info.value)


def test_preflight_passes_when_it_fits_or_free_memory_is_unknown(monkeypatch):
    p = prepared()
    monkeypatch.setattr(pf, "free_memory_bytes", lambda device: 2**40)
    assert pf.preflight(p, echo=None).free_bytes == 2**40
    monkeypatch.setattr(pf, "free_memory_bytes", lambda device: None)
    assert pf.preflight(p, echo=None).free_bytes is None
    monkeypatch.setattr(pf, "free_memory_bytes", lambda device: 1)
    assert pf.preflight(p, echo=None, check=False).free_bytes == 1


def test_free_memory_of_the_cpu():
    free = pf.free_memory_bytes(torch.device("cpu"))
    if Path("/proc/meminfo").exists():
        assert free is not None and free > 0


# --- what cannot be estimated ---------------------------------------------------------------


def test_a_sampling_strategy_has_nothing_to_estimate():
    s, plugins = spec_mod.load(ROOT / "specs" / "random.toml", ["data.limit=64", "run.device=cpu"])
    lines = []
    assert pf.preflight(prepare(s, plugins), echo=lines.append) is None
    assert lines == []


def test_a_space_without_a_supernet_is_skipped_but_its_spec_errors_are_not(monkeypatch):
    p = prepared()
    lines = []
    monkeypatch.setattr(type(p.space), "build_supernet", lambda self, *a, **k: (_ for _ in ()).throw(
        NotImplementedError("no supernet here")))
    assert pf.preflight(p, echo=lines.append) is None and lines == []

    class Refused(NotImplementedError, NasregError):
        pass

    monkeypatch.setattr(type(p.space), "build_supernet", lambda self, *a, **k: (_ for _ in ()).throw(
        Refused("x.toml: search space 'y' has no supernet")))
    with pytest.raises(Refused):
        pf.preflight(p, echo=lines.append)


def test_a_probe_that_fails_is_one_line_naming_no_preflight(monkeypatch):
    p = prepared()

    def broken(model, x):
        raise RuntimeError("shapes do not match\nat line 3")

    monkeypatch.setattr(pf, "measure_forward", broken)
    with pytest.raises(NasregError) as info:
        pf.preflight(p, echo=None)
    msg = str(info.value)
    assert msg.startswith(f"{p.spec.path}: pre-flight estimate failed: RuntimeError: shapes do not match")
    assert "--no-preflight" in msg


def test_small_figures_keep_their_units():
    assert pf._flops(2.5e9) == "2.5 GFLOP" and pf._flops(3.2e6) == "3.2 MFLOP" and pf._flops(21888) == "21,888 FLOP"
    assert pf._gb(3 * 2**30) == "3.0 GB" and pf._gb(18 * 2**20) == "18 MB" and pf._gb(29608) == "29 KB"


def test_no_batch_fits_when_the_weights_alone_do_not(monkeypatch):
    monkeypatch.setattr(pf, "free_memory_bytes", lambda device: 1)
    with pytest.raises(NasregError) as info:
        pf.preflight(prepared(), echo=None)
    assert "use a smaller [data] batch_size, " in str(info.value) and "fits" not in str(info.value)
