"""Pre-flight estimate of a search: parameters, FLOPs per step and peak memory, before anything runs.

:func:`preflight` takes a :class:`~nasreg._core.search.Prepared` search (``prepare(spec, plugins)``),
builds the first stage's supernet on the CPU (the largest one: later stages only drop candidate
ops), runs one forward pass of a probe batch of 2 images in training mode and measures, at once:

* the FLOPs of that forward (``torch.utils.flop_counter.FlopCounterMode``: convolutions and
  matrix products), scaled to the spec's batch size, then x 3 for forward + backward and x the number of
  forward/backward passes the strategy makes per step (``strategy.passes_per_step``; 2 when a
  strategy does not say; DARTS: 2 first order, 5 second order);
* the bytes of the tensors autograd saves for backward (``saved_tensors_hooks``, each storage
  counted once), the bulk of a training step's memory. They grow linearly with the batch.

The peak-memory estimate of a step is::

    activations = saved bytes per image x batch size x 1.25   (backward's transient gradients)
    weights     = weight bytes x strategy.weight_copies  (weights, gradients, momentum: 3 by
                  default; DARTS second order 6: also the snapshot, the virtual step and the
                  finite-difference copies)
    peak        = activations + weights (+ on CUDA 10 % allocator slack and 300 MB for the
                  cuDNN workspace)

which is what the step allocates on top of what the process already holds. When it exceeds the
device's free memory (CUDA: ``torch.cuda.mem_get_info``; CPU: ``MemAvailable`` in
``/proc/meminfo``, not checked where that file does not exist) :func:`preflight` raises a
:class:`nasreg.NasregError` naming the knobs that shrink it: a smaller batch, then what
the space's and the strategy's ``memory_knobs()`` suggest. The RNG state is restored
afterwards, so a run with a pre-flight check is the same run as one without.

There is nothing to estimate for a strategy that trains no supernet (``trains_supernet`` False:
a ``SamplingStrategy`` such as REINFORCE or random search) nor for a search space whose ``build_supernet`` raises a plain
``NotImplementedError``: :func:`preflight` returns None for those (a
:class:`nasreg.NasregError` from the space, such as a sampling-only space asked for a
supernet, is raised: the run would fail on it anyway, later). Any other failure of the probe is
reported as one line that names ``--no-preflight``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from . import distributed as ddp
from .errors import NasregError

__all__ = ["CannotEstimate", "Estimate", "estimate", "preflight", "free_memory_bytes", "measure_forward"]

PROBE_BATCH = 2
ACTIVATION_FACTOR = 1.25
CUDA_SLACK = 1.10
CUDA_WORKSPACE = 300 * 2**20


class CannotEstimate(Exception):
    """The prepared search has no supernet to estimate (a sampling strategy, or a space that
    cannot build one); the message says why."""


@dataclass
class Estimate:
    """What one search step of a prepared spec costs (see the module docstring)."""

    device: str
    batch_size: int
    num_weights: int
    num_arch_parameters: int
    forward_flops: int          # one forward pass of one batch
    passes_per_step: int        # forward + backward passes per search step
    step_flops: int             # forward_flops x 3 x passes_per_step
    activation_bytes_per_image: int
    weight_state_bytes: int
    peak_bytes: int
    free_bytes: int | None

    def line(self) -> str:
        free = "" if self.free_bytes is None else f"; {_gb(self.free_bytes)} free on {self.device}"
        return (f"pre-flight: {self.num_weights:,} weights, {self.num_arch_parameters:,} architecture parameters; "
                f"{_flops(self.step_flops)} per step ({_flops(self.forward_flops)} forward "
                f"at batch {self.batch_size}, x 3 x {self.passes_per_step} passes); peak memory about "
                f"{_gb(self.peak_bytes)}{free}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flops(n: float) -> str:
    if n >= 1e8:
        return f"{n / 1e9:,.1f} GFLOP"
    return f"{n / 1e6:,.1f} MFLOP" if n >= 1e5 else f"{n:,.0f} FLOP"


def _gb(n: float) -> str:
    if n >= 2**30 / 10:
        return f"{n / 2**30:.1f} GB"
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: CUDA's free bytes, or the CPU's ``MemAvailable``; None if unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def measure_forward(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(FLOPs, bytes autograd saves) of one training-mode forward of ``model`` on ``x``.

    FLOPs are ``torch.utils.flop_counter.FlopCounterMode``'s count (2 x multiply-adds of the
    convolutions and matrix products, however the model calls them: modules, or functional calls
    over concatenated weights as a supernet that batches its edges makes). Saved tensors
    are counted once per storage (a tensor that several backward nodes keep, such as a shared
    ReLU output, is one allocation)."""
    from torch.utils.flop_counter import FlopCounterMode

    seen: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            key = (storage.data_ptr(), str(t.device))
            if key[0]:
                seen[key] = max(seen.get(key, 0), storage.nbytes())
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. sparse)
            pass
        return t

    model.train()
    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    return int(counter.get_total_flops()), int(sum(seen.values()))


def _passes_per_step(strategy: Any) -> int:
    passes = getattr(strategy, "passes_per_step", None)
    if callable(passes):
        passes = passes()
    return int(passes) if passes else 2


def _weight_copies(strategy: Any) -> int:
    """Weight-sized tensors one step of ``strategy`` holds (``strategy.weight_copies``; 3 by default)."""
    return int(getattr(strategy, "weight_copies", 3))


def estimate(prepared: Any, *, batch_size: int | None = None) -> Estimate:
    """The :class:`Estimate` of ``prepared`` (a :class:`nasreg._core.search.Prepared`)."""
    spec, p = prepared.spec, prepared
    batch = int(batch_size or spec.data.batch_size)
    world = ddp.current().world_size
    if world > 1 and not batch_size:  # under torchrun each process holds its share of the global batch
        batch = max(1, batch // world)
    bundle = p.bundle
    shape = (bundle.in_channels, bundle.image_size, bundle.image_size)
    threads = torch.get_num_threads()
    try:
        # One thread: the probe's ops are tiny, and thread start-up and sync would dominate.
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):  # the run's RNG stream is left untouched
            strategy = p.strategy
            if not strategy.trains_supernet:
                raise CannotEstimate(f"strategy {spec.strategy.name!r} trains no supernet")
            try:
                model = p.space.build_supernet(p.space.full_candidates(), ops=p.plugins.registries.operations,
                                               in_channels=bundle.in_channels, num_classes=bundle.num_classes)
            except NasregError:
                raise
            except NotImplementedError as exc:
                raise CannotEstimate(f"search space {spec.search_space.name!r} cannot build a supernet"
                                     + (f": {exc}" if str(exc) else "")) from exc
            x = torch.randn(PROBE_BATCH, *shape)
            with torch.enable_grad():  # saved tensors exist only with autograd on
                flops, saved = measure_forward(model, x)
    finally:
        torch.set_num_threads(threads)
    arch = {id(a) for a in model.arch_parameters()}
    num_weights = sum(t.numel() for t in model.parameters() if id(t) not in arch)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters() if id(t) not in arch)
    weight_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    num_arch = sum(a.numel() for a in model.arch_parameters())
    passes = _passes_per_step(strategy)
    forward_flops = flops * batch // PROBE_BATCH
    per_image = saved // PROBE_BATCH
    weight_state = weight_bytes * _weight_copies(strategy)
    peak = per_image * batch * ACTIVATION_FACTOR + weight_state
    if p.device.type == "cuda":
        peak = peak * CUDA_SLACK + CUDA_WORKSPACE
    return Estimate(device=str(p.device), batch_size=batch, num_weights=num_weights, num_arch_parameters=num_arch,
                    forward_flops=forward_flops, passes_per_step=passes, step_flops=3 * passes * forward_flops,
                    activation_bytes_per_image=per_image, weight_state_bytes=weight_state,
                    peak_bytes=int(math.ceil(peak)), free_bytes=free_memory_bytes(p.device))


def _knobs(prepared: Any, est: Estimate) -> str:
    """What to change to fit: a smaller batch, then the space's and the strategy's suggestions."""
    fits = _fitting_batch(est)
    knobs = [f"a smaller [data] batch_size (about {fits} fits)" if fits else "a smaller [data] batch_size"]
    knobs += _memory_knobs(prepared.space) + _memory_knobs(prepared.strategy)
    return ", ".join(knobs[:-1]) + (" or " if len(knobs) > 1 else "") + knobs[-1]


def _memory_knobs(component: Any) -> list[str]:
    """``component.memory_knobs()``: spec settings (``"[section] key = value"``) that would shrink a
    step's memory; none when the component has no such method."""
    knobs = getattr(component, "memory_knobs", None)
    return [str(k) for k in knobs()] if callable(knobs) else []


def _fitting_batch(est: Estimate) -> int:
    per_image = est.activation_bytes_per_image * ACTIVATION_FACTOR * (CUDA_SLACK if est.device.startswith("cuda") else 1)
    room = (est.free_bytes or 0) - est.weight_state_bytes - (CUDA_WORKSPACE if est.device.startswith("cuda") else 0)
    return max(0, int(room // max(per_image, 1)))  # 0: not even one image


def preflight(prepared: Any, *, echo: Callable[[str], Any] | None = print, check: bool = True,
              batch_size: int | None = None) -> Estimate | None:
    """Estimate one search step of ``prepared``, print it with ``echo`` (one line; None: quiet) and,
    with ``check``, raise :class:`NasregError` when the peak-memory estimate exceeds the device's
    free memory. Call it after :func:`nasreg._core.search.prepare` and before the run directory exists.

    Returns None, printing nothing, when there is no supernet to estimate (see the module
    docstring)."""
    try:
        est = estimate(prepared, batch_size=batch_size)
    except CannotEstimate:
        return None
    except NasregError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's module failing on the probe batch
        where = f"{prepared.spec.path}: " if getattr(prepared.spec, "path", None) else ""
        raise NasregError(f"{where}pre-flight estimate failed: {type(exc).__name__}: {exc} "
                          "(--no-preflight skips it)") from exc
    if echo is not None:
        echo(est.line())
    if check and est.free_bytes is not None and est.peak_bytes > est.free_bytes:
        where = f"{prepared.spec.path}: " if getattr(prepared.spec, "path", None) else ""
        raise NasregError(
            f"{where}the search needs about {_gb(est.peak_bytes)} of {est.device} memory at batch "
            f"{est.batch_size} but only {_gb(est.free_bytes)} is free; use {_knobs(prepared, est)}")
    return est
