"""A loader that keeps a whole split on the run's device and builds every batch there.

For datasets that fit in memory (CIFAR, MNIST, digits) a ``DataLoader`` spends its time in
per-item Python: indexing one image, cropping, flipping, normalizing, collating, copying to the
GPU. :class:`DeviceLoader` holds the split as one tensor on the device (``uint8`` when the dataset
stores ``uint8`` pixels: CIFAR-10's 50,000 training images take 150 MB) and does, per batch and
vectorized over it: indexing, conversion to float, random crop with zero padding, random
horizontal flip, normalization and (optionally) DARTS's cutout. On a CPU the tensors stay in RAM
and the same batched indexing is still much faster than a per-item DataLoader for small images.

Datasets take part through the ``memory_view()`` protocol (:class:`nasreg.MemoryView`,
documented in :mod:`nasreg._core.data`); :func:`build_device_loader` returns None for any other dataset
(``image_folder``, AutoAugment in use, an unknown type).

Randomness: everything random (the order and every augmentation parameter) is drawn on the CPU
from the loader's ``generator`` (a ``torch.Generator``), all at the start of each pass over the
data (``iter(loader)``), and moved to the device in one copy. ``loader.generator.get_state()``
taken between passes and restored with ``set_state()`` therefore reproduces the following
passes exactly, batch for batch, whatever was consumed of the pass in progress (the contract of
a ``DataLoader`` with a generator, which the search's checkpoints rely on).

Distributed: every rank builds the same loader with the same generator seed, so each pass draws
the same permutation and parameters everywhere. A global batch (``batch_size`` positions of the
permutation) is trimmed to a multiple of ``world_size`` and rank ``r`` gets the ``r``-th of the
equal contiguous chunks; a final batch smaller than ``world_size`` is skipped on every rank.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from .data import MemoryView
from .errors import SpecError

LOADER_CHOICES = ("auto", "dataloader", "device")
#: ``loader = "auto"`` on CUDA uses the device loader only if the split takes at most this share of
#: the device's free memory (the rest is for the network).
AUTO_MEMORY_SHARE = 0.5


# ------------------------------------------------------------------------------------------------
# Resolving a dataset to a memory view


def memory_view_of(dataset: Any) -> tuple[MemoryView | None, torch.Tensor | None, str]:
    """``(view, indices, why_not)`` for ``dataset``: its :class:`MemoryView` and, for a (nested)
    ``Subset``, the indices into the view's images it selects (None: all of them). Without a view,
    ``why_not`` says why in a few words."""
    indices: torch.Tensor | None = None
    ds = dataset
    while isinstance(ds, Subset):
        sub = torch.as_tensor(list(ds.indices) if not isinstance(ds.indices, torch.Tensor) else ds.indices,
                              dtype=torch.long)
        indices = sub if indices is None else sub[indices]
        ds = ds.dataset
    method = getattr(ds, "memory_view", None)
    if not callable(method):
        return None, None, f"{type(ds).__name__} does not hold its images in memory (no memory_view())"
    view = method()
    if view is None:
        return None, None, (f"its {type(ds).__name__} transform cannot run on batched tensors "
                            "(e.g. AutoAugment)")
    if not isinstance(view, MemoryView):
        return None, None, f"{type(ds).__name__}.memory_view() returned {type(view).__name__}, not a MemoryView"
    if indices is not None and len(indices) and (int(indices.min()) < -len(view.images)
                                                 or int(indices.max()) >= len(view.images)):
        return None, None, "a Subset index is out of range"
    return view, indices, ""


def estimate_bytes(dataset: Any) -> int | None:
    """Bytes the device loader would hold on the device for ``dataset`` (its images and labels,
    and one pass's order and augmentation parameters), or None if it cannot be loaded that way."""
    view, indices, _ = memory_view_of(dataset)
    if view is None:
        return None
    n = len(indices) if indices is not None else len(view.images)
    per_image = math.prod(view.images.shape[1:]) * view.images.element_size()
    return n * (per_image + 8 + 8 * 6)


# ------------------------------------------------------------------------------------------------
# The loader


def _per_channel(values: Sequence[float], channels: int) -> torch.Tensor:
    t = torch.tensor([float(v) for v in values], dtype=torch.float32)
    return (t.expand(channels) if t.numel() == 1 else t).reshape(1, channels, 1, 1).clone()


class DeviceLoader:
    """Batches of one in-memory split, built on ``device``; see the module docstring.

    ``view`` holds the images (``indices``, when given, selects the rows used, in that order).
    ``train=True`` applies the view's random crop (``padding``) and flip and, with ``cutout`` > 0,
    cutout of a ``cutout`` x ``cutout`` square; ``train=False`` never augments. Iterating yields
    ``(x, y)`` on ``device``: ``x`` float32 ``(B, C, H, W)`` contiguous, ``y`` int64 ``(B,)``.
    ``generator`` (a CPU ``torch.Generator``; None: torch's global generator) is the only source
    of randomness. ``len(loader)`` is the number of batches per pass (per rank).
    """

    def __init__(self, view: MemoryView, *, batch_size: int, shuffle: bool,
                 generator: torch.Generator | None, device: torch.device | str,
                 rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 indices: torch.Tensor | Sequence[int] | None = None, train: bool = False,
                 cutout: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} / world_size {world_size}: expected 0 <= rank < world_size")
        if batch_size < world_size:
            raise ValueError(f"batch_size {batch_size} is smaller than world_size {world_size}: "
                             "a global batch would leave a rank without images")
        if cutout < 0:
            raise ValueError(f"cutout: expected >= 0, got {cutout}")
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(f"generator: expected a CPU torch.Generator, got one on {generator.device}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.generator = generator
        self.rank, self.world_size = int(rank), int(world_size)
        self.drop_last = bool(drop_last)
        self.train = bool(train)
        self.padding = int(view.padding) if train else 0
        self.flip = bool(view.flip) if train else False
        self.cutout = int(cutout) if train else 0

        images, targets = view.images, torch.as_tensor(view.targets).to(torch.long)
        if indices is not None:
            index = torch.as_tensor(indices, dtype=torch.long)
            images, targets = images[index], targets[index]  # only the rows used reach the device
        self.uint8 = images.dtype == torch.uint8
        if not self.uint8:
            images = images.to(torch.float32)
        self.images = images.to(self.device).contiguous()
        self.targets = targets.to(self.device).contiguous()
        n, c, h, w = self.images.shape
        self.num_samples, self.shape = int(n), (int(c), int(h), int(w))
        mean, std = _per_channel(view.mean, c), _per_channel(view.std, c)
        scale = 1.0 / 255.0 if self.uint8 else 1.0
        # (x * scale - mean) / std == x * (scale / std) + (-mean / std)
        self._mul = (scale / std).to(self.device)
        self._add = (-mean / std).to(self.device)
        self._identity = bool((mean == 0).all() and (std == 1).all()) and not self.uint8

    # --- sizes ------------------------------------------------------------------------------

    def _global_batches(self) -> list[tuple[int, int]]:
        """``(start, size)`` of the global batches of one pass, after drop_last and trimming."""
        out = []
        for start in range(0, self.num_samples, self.batch_size):
            size = min(self.batch_size, self.num_samples - start)
            if size < self.batch_size and self.drop_last:
                break
            size -= size % self.world_size
            if size:
                out.append((start, size))
        return out

    def __len__(self) -> int:
        return len(self._global_batches())

    # --- randomness -------------------------------------------------------------------------

    def _draw(self) -> dict[str, torch.Tensor]:
        """One pass's random numbers, on the CPU, from the generator, in a fixed order: the
        permutation (if shuffling), then per position the crop offsets (row, column), the flip
        and the cutout centre (row, column), each only when that augmentation is on."""
        g, n = self.generator, self.num_samples
        _, h, w = self.shape
        drawn: dict[str, torch.Tensor] = {
            "order": torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)}
        if self.padding:
            drawn["offsets"] = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=g)
        if self.flip:
            drawn["flips"] = torch.randint(0, 2, (n,), generator=g)
        if self.cutout:
            drawn["centres"] = torch.stack([torch.randint(0, h, (n,), generator=g),
                                            torch.randint(0, w, (n,), generator=g)], 1)
        return drawn

    # --- building batches -------------------------------------------------------------------

    def _batch(self, index: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None,
               centres: torch.Tensor | None) -> torch.Tensor:
        """The batch of images ``index`` (on the device) with these parameters (on the device,
        one row per image; None: that augmentation is off)."""
        x = self.images.index_select(0, index)
        b, c, h, w = x.shape
        if offsets is not None or flips is not None:
            p = self.padding
            if p:
                x = F.pad(x, (p, p, p, p))  # zeros: 0 in the scaled (pre-normalization) space
            hp, wp = h + 2 * p, w + 2 * p
            rows = torch.arange(h, device=x.device).view(1, h)
            cols = torch.arange(w, device=x.device).view(1, w)
            if flips is not None:  # mirrored output column x reads crop column w - 1 - x
                cols = torch.where(flips.view(b, 1).bool(), (w - 1) - cols, cols)
            else:
                cols = cols.expand(b, w)
            if offsets is not None:
                rows = rows + offsets[:, :1]
                cols = cols + offsets[:, 1:]
            else:
                rows = rows.expand(b, h)
            lin = (rows.view(b, h, 1) * wp + cols.view(b, 1, w)).view(b, 1, h * w)
            x = torch.gather(x.reshape(b, c, hp * wp), 2, lin.expand(b, c, h * w)).view(b, c, h, w)
        if self._identity:
            x = x.to(torch.float32)  # a new tensor already (index_select, gather): never self.images
        else:
            x = torch.addcmul(self._add, x.to(torch.float32), self._mul)
        if centres is not None:
            half = self.cutout // 2
            ys = torch.arange(h, device=x.device).view(1, h, 1)
            xs = torch.arange(w, device=x.device).view(1, 1, w)
            cy, cx = centres[:, 0].view(b, 1, 1), centres[:, 1].view(b, 1, 1)
            hole = (ys >= cy - half) & (ys < cy + half) & (xs >= cx - half) & (xs < cx + half)
            x = x.mul_((~hole).unsqueeze(1).to(x.dtype))
        return x.contiguous()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self._global_batches()
        if not batches:  # a loader of no batches draws nothing
            return
        drawn = {k: v.reshape(self.num_samples, -1).to(torch.long) for k, v in self._draw().items()}
        # One copy to the device: the order and every parameter, as columns of one int64 tensor.
        packed = torch.cat(list(drawn.values()), 1).to(self.device)
        cols, at = {}, 0
        for k, v in drawn.items():
            cols[k] = (at, at + v.shape[1])
            at += v.shape[1]

        def column(name: str, lo: int, hi: int) -> torch.Tensor | None:
            if name not in cols:
                return None
            a, b = cols[name]
            return packed[lo:hi, a:b]

        for start, size in batches:
            chunk = size // self.world_size
            lo = start + self.rank * chunk
            hi = lo + chunk
            index = packed[lo:hi, cols["order"][0]]
            offsets, flips, centres = column("offsets", lo, hi), column("flips", lo, hi), column("centres", lo, hi)
            x = self._batch(index, offsets, flips.reshape(-1) if flips is not None else None, centres)
            y = self.targets.index_select(0, index)
            yield x, y

    def __repr__(self) -> str:
        c, h, w = self.shape
        return (f"DeviceLoader({self.num_samples} images {c}x{h}x{w} {'uint8' if self.uint8 else 'float32'} "
                f"on {self.device}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"padding={self.padding}, flip={self.flip}, cutout={self.cutout}, "
                f"rank={self.rank}/{self.world_size})")


# ------------------------------------------------------------------------------------------------
# Entry points for the search and the evaluation


def build_device_loader(dataset: Any, *, batch_size: int, shuffle: bool, generator: torch.Generator | None,
                        device: torch.device | str, train: bool, rank: int = 0, world_size: int = 1,
                        drop_last: bool = False, cutout: int = 0) -> DeviceLoader | None:
    """A :class:`DeviceLoader` over ``dataset`` (a dataset with ``memory_view()``, or a nested
    ``Subset`` of one), or None when it cannot be held in memory that way. ``train=True`` applies
    the dataset's random crop and flip (and ``cutout`` > 0); ``train=False`` never augments."""
    view, indices, _ = memory_view_of(dataset)
    if view is None:
        return None
    return DeviceLoader(view, indices=indices, batch_size=batch_size, shuffle=shuffle, generator=generator,
                        device=device, rank=rank, world_size=world_size, drop_last=drop_last, train=train,
                        cutout=cutout)


def supported(dataset: Any) -> bool:
    """Whether :func:`build_device_loader` can serve ``dataset``."""
    return memory_view_of(dataset)[0] is not None


def _fits(dataset: Any, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    needed = estimate_bytes(dataset)
    if needed is None:
        return False
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001 - no answer: assume it fits (CIFAR-size data always does)
        return True
    return needed <= AUTO_MEMORY_SHARE * free


def choose(value: str, dataset: Any, device: torch.device | str, *, where: str = "[data] loader",
           name: str | None = None) -> bool:
    """Whether to use the device loader for ``dataset``, as ``[data] loader`` (or
    ``[evaluate] loader``) = ``value`` asks: ``"dataloader"`` never; ``"auto"`` when ``device`` is
    CUDA, the dataset supports it and its split takes at most half the free GPU memory;
    ``"device"`` always, and a one-line :class:`SpecError` naming ``where`` and the dataset
    (``name``) when the dataset cannot be served that way. ``where`` is the key as messages
    show it, e.g. ``f"{spec.path}: [data] loader"``."""
    if value not in LOADER_CHOICES:
        raise SpecError(f"{where}: expected one of {', '.join(repr(c) for c in LOADER_CHOICES)}, got {value!r}")
    if value == "dataloader":
        return False
    device = torch.device(device)
    view, _indices, why = memory_view_of(dataset)
    if value == "device":
        if view is None:
            shown = repr(name) if name else type(dataset).__name__
            raise SpecError(f"{where}: \"device\" needs a dataset held in memory, but dataset {shown} "
                            f"cannot be: {why}; use loader = \"auto\" or \"dataloader\"")
        return True
    return device.type == "cuda" and view is not None and _fits(dataset, device)
