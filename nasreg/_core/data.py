"""The dataset contract: what a ``register_datasets`` factory returns.

A factory returns a :class:`DatasetBundle` of map-style datasets whose items are
``(image tensor (C, H, W), int label)``. That is all the default loader (a
``torch.utils.data.DataLoader``) needs. This module does not import torch until a split is made
or a :class:`MemoryView` checked (a dataset plugin imports it at load time).

In-memory datasets: the ``memory_view()`` protocol
----------------------------------------------------
A dataset whose whole split is one image tensor in memory can also be served by
:class:`nasreg._core.device_loader.DeviceLoader`, which keeps the split on the run's device (GPU memory,
or RAM on a CPU) and builds every batch there: indexing, scaling, random crop and flip,
normalization and cutout, vectorized over the batch (``[data] loader`` and ``[evaluate] loader``).
To take part, a dataset defines a method ``memory_view() -> MemoryView | None``: the images as
one ``(N, C, H, W)`` tensor (``uint8``, scaled by 1/255, or float), the labels, and what its
per-item transform does (channel mean and standard deviation, random-crop padding, horizontal
flip). It returns None when its transform cannot be reproduced that way (AutoAugment, PIL
transforms, files read per item): the loader then is not used. ``torch.utils.data.Subset`` (also
nested) of such a dataset is understood. The built-in ``data`` plugin's CIFAR-10/100, MNIST,
Fashion-MNIST and digits datasets implement it; a third-party dataset plugin can implement the
same method, no import of nasreg's loader needed.

The device loader reproduces the transform's semantics, not its random numbers: item ``i`` of
an epoch is ``normalize(flip(crop(pad(scale(images[i])))))`` with the pad, crop offsets and flip
drawn from the loader's own generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover - annotations only (this module does not import torch)
    import torch
    from torch.utils.data import Dataset


@dataclass(frozen=True)
class MemoryView:
    """A whole split held as one tensor, and the per-item transform applied to it (see above).

    ``images``: ``(N, C, H, W)``, ``uint8`` (pixel values 0..255, scaled to [0, 1] first) or
    floating point (used as is). ``targets``: ``(N,)`` integer labels. ``mean`` and ``std``: per
    channel (or one value for all channels), applied after scaling, cropping and flipping:
    ``(x - mean) / std`` (``(0.0,)``, ``(1.0,)``: images stored already normalized). ``padding``:
    the random crop pads the scaled image with zeros by that many pixels on every side and takes
    a crop of the original size at a uniformly random offset (0: no crop). ``flip``: mirror
    left-right with probability 1/2. The crop and flip are applied only to training batches.
    """

    images: torch.Tensor
    targets: torch.Tensor
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    padding: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        import torch  # a MemoryView holds tensors: torch is loaded already

        if not isinstance(self.images, torch.Tensor) or self.images.dim() != 4:
            raise ValueError(f"MemoryView images: expected a (N, C, H, W) tensor, got "
                             f"{getattr(self.images, 'shape', type(self.images).__name__)}")
        if self.images.dtype != torch.uint8 and not self.images.is_floating_point():
            raise ValueError(f"MemoryView images: expected uint8 or floating point, got {self.images.dtype}")
        if len(self.targets) != len(self.images):
            raise ValueError(f"MemoryView: {len(self.images)} images but {len(self.targets)} labels")
        channels = self.images.shape[1]
        for key in ("mean", "std"):
            if len(getattr(self, key)) not in (1, channels):
                raise ValueError(f"MemoryView {key}: expected 1 or {channels} values, got {len(getattr(self, key))}")
        if any(s == 0 for s in self.std):
            raise ValueError("MemoryView std: a standard deviation is 0")
        if self.padding < 0:
            raise ValueError(f"MemoryView padding: expected >= 0, got {self.padding}")


@dataclass
class DatasetBundle:
    """A labelled image dataset.

    ``train`` is what the search splits into its weight-training and architecture-validation
    halves (``[data] train_portion``); ``test`` is held out for final evaluation (may be None).
    Items are ``(image tensor (C, H, W), int label)``.
    """

    train: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    test: Dataset | None = None
    #: The same train images without random augmentation (for the validation half), if it differs.
    train_eval: Dataset | None = None


def split_sizes(n: int, portion: float, limit: int = 0) -> tuple[int, int]:
    """(train, validation) image counts of :func:`split_train_val` for ``n`` images: the first
    ``limit`` (0: all) cut at ``portion``, each side keeping at least one image when there are two."""
    total = min(n, limit) if limit else n
    cut = int(round(total * portion))
    cut = min(max(cut, 1), total - 1) if total > 1 else total
    return cut, total - cut


def split_train_val(bundle: DatasetBundle, portion: float, seed: int, limit: int = 0
                    ) -> tuple[Dataset, Dataset]:
    """Shuffle the train indices with ``seed`` and cut them at ``portion`` (after ``limit``)."""
    import torch
    from torch.utils.data import Subset

    n = len(bundle.train)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g).tolist()
    cut, rest = split_sizes(n, portion, limit)
    order = order[:cut + rest]
    val_source: Any = bundle.train_eval if bundle.train_eval is not None else bundle.train
    return Subset(bundle.train, order[:cut]), Subset(val_source, order[cut:])


def drop_single_last(size: int, batch_size: int) -> bool:
    """Whether a split of ``size`` images drops its last batch: only when that batch would hold a
    single image after full ones (BatchNorm cannot train on one 1x1 map; one image of an epoch's
    thousands matters nothing)."""
    return size > batch_size and size % batch_size == 1


# --- degenerate sizes: what a search refuses before its first step ------------------------------
# One check for `nasreg validate` (what the spec and the dataset's registry metadata tell) and for
# `nasreg run` (the dataset built: its real size and shape), so both say the same line.

def check_split(spec: Any, parts: Any, registries: Any, n_images: int | None,
                shape: tuple[int, int, int] | None) -> None:
    """Raise :class:`nasreg.SpecError` (or :class:`nasreg.DataError`) for a split that leaves no
    image for training or validation, or for batches of a single image that the supernet's
    BatchNorm layers cannot train on (1x1 feature maps). ``n_images`` is the dataset's train size
    (None: unknown, the spec's ``limit`` assumed available) and ``shape`` its image shape (None:
    unknown, the supernet not probed)."""
    where, data = f"{spec.path}: [data]", spec.data
    total = n_images if n_images is not None else data.limit
    if not total:
        return
    train, val = split_sizes(total, data.train_portion, data.limit)
    if not (train and val):
        from .errors import DataError

        raise DataError(f"{where} dataset: {data.dataset!r} has {total} image(s) to split into training and "
                        "validation images; the search needs at least 2")
    if shape is None or not (data.batch_size == 1 or 1 in (train, val)):
        return
    keys = "batch_size" if data.batch_size == 1 else "limit, train_portion"
    problem = _single_image_problem(parts, registries, shape)
    if problem:
        from .errors import SpecError

        side = "" if data.batch_size == 1 else f" (the split leaves {train} training and {val} validation images)"
        raise SpecError(f"{where} {keys}: a batch of one image{side} cannot train this supernet: {problem}; "
                        "use batches of at least 2 images")


def _single_image_problem(parts: Any, registries: Any, shape: tuple[int, int, int]) -> str | None:
    """What goes wrong when the supernet trains on one image (a forward pass in training mode on
    the ``meta`` device: shapes only, no memory, no arithmetic); None when nothing does."""
    if not getattr(parts.strategy, "trains_supernet", False):
        return None
    import torch

    with torch.device("meta"):
        try:
            model = parts.space.build_supernet(parts.space.full_candidates(), ops=registries.operations,
                                               in_channels=shape[0], num_classes=2)
        except NotImplementedError:
            return None
        model.train()
        try:
            model(torch.zeros(1, *shape))
        except ValueError as exc:  # BatchNorm: "Expected more than 1 value per channel when training"
            return " ".join(str(exc).split())
        except Exception:  # noqa: BLE001 - any other failure is the pre-flight's to report, in full
            return None
    return None


def registered_shape(dataset: Any) -> tuple[int, int, int] | None:
    """The ``(C, H, W)`` of a dataset component's images from its registry metadata (``shape``, a
    tuple or a function of the dataset's keys), without reading data; None when not declared."""
    shape = dataset.entry.get("shape")
    try:
        if callable(shape):
            shape = shape(**dataset.params)
        c, h, w = (int(v) for v in shape)
    except Exception:  # noqa: BLE001 - no or unusable metadata: known once the dataset is built
        return None
    return c, h, w
