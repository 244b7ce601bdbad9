"""Multi-process search under ``torchrun`` (PyTorch distributed data parallel, done by hand).

Launch any gradient-based search on several processes (GPUs, or CPU processes with gloo)::

    torchrun --nproc_per_node 4 -m nasreg run specs/dgdarts.toml
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        -m nasreg run specs/dgdarts.toml

How a run of ``W`` processes relates to the same spec in one process:

* **Data.** ``[data] batch_size`` is the *global* batch. Every rank draws the same shuffled order
  (same seed) and takes its contiguous ``1/W`` slice of each global batch; a global batch is
  trimmed to a multiple of ``W`` (only an epoch's last, partial batch can be affected), so every
  rank always has the same number of images.
* **BatchNorm.** Every plain ``BatchNorm1d/2d/3d`` of the supernet normalizes with the statistics
  of the whole global batch (:func:`sync_batch_norm_`: sums all-reduced in the forward and the
  backward), so the forward pass equals the single-process one on the global batch. It works
  with any backend (gloo on CPU, NCCL on GPU): ``torch.nn.SyncBatchNorm`` is CUDA-only.
* **Gradients.** Strategies call :func:`average_` on every gradient they compute (weights and
  architecture parameters, every pass of a second-order step): one all-reduce per gradient list.
  Each rank's loss is its slice's mean, so the average is the global batch's gradient.
* **Everything else** (seed, weight init, optimizers, clustering, the genotype) is computed on
  every rank from identical inputs; the weights are also broadcast from rank 0 when a stage's
  supernet is built, and the selector's decisions are broadcast from rank 0, so every rank holds
  the same state bit for bit. Only rank 0 writes the run directory (the others write into a
  scratch directory that is removed at the end) and shows progress.

So a ``W``-process run gives the genotype of the one-process run with the same global batch, with
metrics equal within floating-point rounding (summation order). Differences that remain by
design: per-image random augmentation in DataLoader workers draws its random numbers per rank
(drop path does not: its masks are drawn for the global batch, see :func:`sample_rows`).
The ``[evaluate]`` retraining after a search runs on rank 0 alone.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, Sampler

from .errors import NasregError, SpecError

__all__ = [
    "Context", "current", "init_from_env", "shutdown", "average_", "all_sum", "agree",
    "broadcast_object", "broadcast_module_", "sync_batch_norm_", "RankBatchSampler", "rank_slice",
    "open_run_dir", "close_run_dir", "sample_rows",
]


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_current = Context()


def current() -> Context:
    """This process's :class:`Context` (one process: rank 0 of 1)."""
    return _current


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SpecError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def env_world_size() -> int:
    return _env_int("WORLD_SIZE", 1)


def init_from_env(device: torch.device, where: str = "[run] device") -> tuple[Context, torch.device]:
    """Join the process group torchrun describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); returns the context and this rank's device.

    Without torchrun (``WORLD_SIZE`` unset or 1) nothing happens. Backend: NCCL for CUDA devices,
    gloo otherwise. On CUDA, rank ``r`` uses GPU ``LOCAL_RANK``; a spec naming one GPU
    (``cuda:N``) cannot be shared by several processes and is refused.
    """
    global _current
    world = env_world_size()
    if world <= 1:
        return _current, device
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise SpecError(f"environment: RANK={rank} is not in [0, WORLD_SIZE={world})")
    if device.type == "cuda":
        if device.index is not None and world > 1 and torch.cuda.device_count() > 1:
            raise SpecError(f"{where}: {str(device)!r} names one GPU but torchrun started {world} processes; "
                            "use 'auto' or 'cuda' (each process takes the GPU of its LOCAL_RANK)")
        if local_rank >= torch.cuda.device_count():
            raise SpecError(f"{where}: LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) "
                            "on this node (lower --nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type not in ("cpu",):
        raise SpecError(f"{where}: torchrun runs need 'cuda' or 'cpu' devices, got {str(device)!r}")
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=_env_int("NASREG_DIST_TIMEOUT", 1800))
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout}
        if device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters:
            kwargs["device_id"] = device  # binds NCCL to this rank's GPU (torch >= 2.3)
        dist.init_process_group(**kwargs)
    _current = Context(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)
    return _current, device


def shutdown() -> None:
    """Leave the process group (a no-op in one process)."""
    global _current
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _current = Context()


# ------------------------------------------------------------------ collectives


def _flat_collective(tensors: Sequence[torch.Tensor], collective: Callable[[torch.Tensor], Any]) -> None:
    """Run ``collective`` (in place on a flat tensor) over ``tensors``, in place: one call per
    (device, dtype) group of them, on their concatenation."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    for ts in groups.values():
        flat = torch.cat([t.detach().reshape(-1) for t in ts])
        collective(flat)
        for t, part in zip(ts, flat.split([t.numel() for t in ts])):
            t.copy_(part.view_as(t))


@torch.no_grad()
def average_(tensors: Sequence[torch.Tensor | None]) -> None:
    """Replace every tensor by its mean over the ranks, in place (``None`` entries are skipped).

    Call it on every gradient a strategy computes, right after computing it, with the same list
    on every rank. In one process it does nothing.
    """
    if not _current.enabled:
        return
    ts = [t for t in tensors if t is not None]
    if not ts:
        return
    _flat_collective(ts, dist.all_reduce)
    torch._foreach_div_(ts, float(_current.world_size))


def all_sum(values: Sequence[float], device: torch.device | None = None) -> list[float]:
    """The sums over the ranks of a few numbers (float64; one collective)."""
    if not _current.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device or _collective_device())
    dist.all_reduce(t)
    return t.tolist()


def agree(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (e.g. a stop request)."""
    if not _current.enabled:
        return bool(flag)
    return all_sum([1.0 if flag else 0.0])[0] > 0


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (picklable objects; tensors move to CPU)."""
    if not _current.enabled:
        return obj
    box = [obj if _current.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


@torch.no_grad()
def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module``."""
    if not _current.enabled:
        return
    _flat_collective([*module.parameters(), *module.buffers()], lambda flat: dist.broadcast(flat, src=src))


# ------------------------------------------------------------------ the run directory


def open_run_dir(create: Callable[[], Path]) -> Path:
    """The directory this process writes into: ``create()``'s on rank 0 (the real run directory);
    under torchrun the other ranks get a private scratch directory (removed by
    :func:`close_run_dir`). An error creating it on rank 0 is raised on every rank."""
    if not _current.enabled:
        return create()
    if _current.is_main:
        try:
            path = create()
        except NasregError as exc:
            broadcast_object(("error", type(exc), str(exc)))
            raise
        broadcast_object(("ok", None, str(path)))
        return path
    status, cls, text = broadcast_object(None)
    if status == "error":
        raise cls(text)
    return Path(tempfile.mkdtemp(prefix=f"nasreg-rank{_current.rank}-"))


def close_run_dir(path: Path) -> None:
    """Remove a rank's scratch directory (rank 0's run directory is kept)."""
    if _current.enabled and not _current.is_main:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------ data


def sample_rows(local_rows: int) -> tuple[int, slice]:
    """For per-sample random draws (drop path masks, ...): the global batch's size and this
    rank's rows in it. Draw for all ``n`` rows (every rank draws the same numbers) and keep
    ``[rows]``: the run then matches the one-process run on the global batch. One process:
    ``(local_rows, slice(0, local_rows))``."""
    start = _current.rank * local_rows
    return local_rows * _current.world_size, slice(start, start + local_rows)




def rank_slice(n: int, rank: int, world: int) -> tuple[int, int]:
    """The ``[start, stop)`` of rank ``rank``'s equal share of a global batch of ``n`` (trimmed
    to a multiple of ``world``)."""
    k = n // world
    return rank * k, (rank + 1) * k


class RankBatchSampler(Sampler[list[int]]):
    """The global batches of ``sampler`` (``batch_size`` indices each), each cut to this rank's
    equal slice (see :func:`rank_slice`); a global batch smaller than ``world`` is skipped."""

    def __init__(self, sampler: Sampler[int], batch_size: int, rank: int, world: int):
        self.batches = BatchSampler(sampler, batch_size, drop_last=False)
        self.batch_size, self.rank, self.world = batch_size, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            start, stop = rank_slice(len(batch), self.rank, self.world)
            if stop > start:
                yield batch[start:stop]

    def __len__(self) -> int:
        n = len(self.batches.sampler)  # type: ignore[arg-type]
        full, last = divmod(n, self.batch_size)
        return full + (1 if last >= self.world else 0)


# ------------------------------------------------------------------ synchronized BatchNorm


class _SyncBatchNormFn(torch.autograd.Function):
    """Batch normalization over the union of every rank's batch (training-mode statistics).

    Returns ``(y, mean, biased var, count)``; only ``y`` is differentiable. Statistics are
    computed in at least float32 (two passes: the mean, then the centred sum of squares) whatever the
    input's dtype. The backward all-reduces ``sum(dy)`` and ``sum(dy * xhat)``; the weight and
    bias gradients it returns are this rank's shares (the strategy averages them like every
    other gradient).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # noqa: ANN001
        C = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, C] + [1] * (x.dim() - 2)
        acc = torch.promote_types(x.dtype, torch.float32)  # half inputs: float32 statistics
        xf = x.to(acc)
        buf = torch.cat([xf.sum(dims), xf.new_tensor([x.numel() // C if C else 0])])
        dist.all_reduce(buf)
        count = buf[C].clone()
        mean = buf[:C] / count
        xc = xf - mean.view(shape)
        sq = (xc * xc).sum(dims)
        dist.all_reduce(sq)
        var = sq / count
        invstd = torch.rsqrt(var + eps)
        xhat = xc * invstd.view(shape)
        y = xhat
        if weight is not None:
            y = y * weight.to(acc).view(shape)
        if bias is not None:
            y = y + bias.to(acc).view(shape)
        ctx.save_for_backward(x, mean, invstd, weight)  # as native BatchNorm: xhat is recomputed
        ctx.count, ctx.has_bias, ctx.in_dtype = count, bias is not None, x.dtype
        ctx.mark_non_differentiable(mean, var, count)
        return y.to(x.dtype), mean, var, count

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar, _dcount):  # noqa: ANN001
        x, mean, invstd, weight = ctx.saved_tensors
        C = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, C] + [1] * (x.dim() - 2)
        xhat = (x.to(invstd.dtype) - mean.view(shape)) * invstd.view(shape)
        dyf = dy.to(xhat.dtype)
        sum_dy = dyf.sum(dims)
        sum_dy_xhat = (dyf * xhat).sum(dims)
        dweight = sum_dy_xhat.to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        dbias = sum_dy.clone() if ctx.has_bias and ctx.needs_input_grad[2] else None
        dx = None
        if ctx.needs_input_grad[0]:
            buf = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(buf)
            mean_dy, mean_dy_xhat = buf[:C] / ctx.count, buf[C:] / ctx.count
            scale = invstd if weight is None else invstd * weight.to(xhat.dtype)
            dx = ((dyf - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape)) * scale.view(shape)).to(ctx.in_dtype)
        if dbias is not None:
            dbias = dbias.to(dy.dtype)
        return dx, dweight, dbias, None


class _SyncForward:
    """Mixed into a BatchNorm class: training-mode batches normalize over every rank's batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        bn: nn.modules.batchnorm._BatchNorm = self  # type: ignore[assignment]
        use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
        if not (_current.enabled and use_batch_stats):
            return super().forward(x)  # type: ignore[misc]
        bn._check_input_dim(x)
        factor = 0.0 if bn.momentum is None else bn.momentum
        update = bn.training and bn.track_running_stats and bn.running_mean is not None
        if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        y, mean, var, count = _SyncBatchNormFn.apply(x, bn.weight, bn.bias, bn.eps)
        if update:
            with torch.no_grad():
                n = float(count)
                unbiased = var * (n / (n - 1)) if n > 1 else var
                bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
                bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
        return y


class SyncBatchNorm1d(_SyncForward, nn.BatchNorm1d):
    pass


class SyncBatchNorm2d(_SyncForward, nn.BatchNorm2d):
    pass


class SyncBatchNorm3d(_SyncForward, nn.BatchNorm3d):
    pass


_SYNC = {nn.BatchNorm1d: SyncBatchNorm1d, nn.BatchNorm2d: SyncBatchNorm2d, nn.BatchNorm3d: SyncBatchNorm3d}


def sync_batch_norm_(module: nn.Module) -> int:
    """Make every plain BatchNorm in ``module`` synchronize its batch statistics over the ranks
    (in place: same parameters, buffers and state-dict keys); returns how many were converted.
    Subclasses of BatchNorm and other normalizations are left alone."""
    n = 0
    for m in module.modules():
        cls = _SYNC.get(type(m))
        if cls is not None:
            m.__class__ = cls
            n += 1
    return n


@contextlib.contextmanager
def local_batch_norm(module: nn.Module) -> Iterator[None]:
    """For the block, the synchronized BatchNorms of ``module`` (:func:`sync_batch_norm_`) are plain
    ones again: no collective inside, so one rank may run (and differentiate twice through) a
    forward pass the others do not (the collapse monitor's Hessian-vector products)."""
    plain = {sync: base for base, sync in _SYNC.items()}
    swapped = [m for m in module.modules() if type(m) in plain]
    for m in swapped:
        m.__class__ = plain[type(m)]
    try:
        yield
    finally:
        for m in swapped:
            m.__class__ = _SYNC[type(m)]


#: The names ``nasreg`` exports them under (for strategies and spaces, see CONTRIBUTING).
average_across_ranks_ = average_
rank_sample_rows = sample_rows
