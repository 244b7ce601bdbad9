"""The ``digits`` dataset: scikit-learn's bundled 8x8 handwritten digits (no download)."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Annotated

from nasreg import DatasetBundle, Range

if TYPE_CHECKING:  # pragma: no cover - torch is imported when the dataset is built
    import torch

    from ._common import ImageTensorDataset

#: Seed of the train/test split. Fixed on purpose: the held-out test set must not change with the
#: run's seed, so results of different runs are measured on the same images.
SPLIT_SEED = 0
NUM_CLASSES = 10
NATIVE_SIZE = 8


@functools.lru_cache(maxsize=1)
def _load() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's digits as ((N, 1, 8, 8) pixels in [0, 1], labels); read once per process."""
    import torch
    from sklearn.datasets import load_digits

    raw = load_digits()
    pixels = torch.as_tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return pixels, torch.as_tensor(raw.target, dtype=torch.long)


def digits(test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.2,
           size: Annotated[int, Range(ge=1, le=128)] = 8) -> DatasetBundle:
    """scikit-learn's 8x8 handwritten digits: 1,797 grayscale images, 10 classes, no download.

    Fast and small, for trying a spec out in seconds on a CPU. The images (pixel values 0..16)
    are scaled to [0, 1], resized if asked, then normalized with the mean and standard deviation
    of the training images' pixels; they are held in memory as tensors. No augmentation.

    Keys (in ``[data]``):

    * ``test_fraction`` (0 <= x < 1, default 0.2): share of the images held out as the test set,
      stratified by class with a fixed seed (independent of ``[run] seed``), so the test set is
      the same in every run. 0 keeps every image for the search (no test set).
    * ``size`` (1..128, default 8): side of the square images; other than 8, the images are
      resized with bilinear interpolation (e.g. 16 or 32 for networks that need bigger inputs).
    """
    import torch
    import torch.nn.functional as F
    from sklearn.model_selection import train_test_split

    from ._common import ImageTensorDataset

    pixels, labels = _load()  # shared: never modified in place below
    n = len(labels)

    all_index = torch.arange(n)
    if test_fraction > 0:
        n_test = math.ceil(test_fraction * n)  # scikit-learn's rounding for a float test_size
        if n_test < NUM_CLASSES or n - n_test < NUM_CLASSES:
            raise ValueError(
                f"test_fraction {test_fraction:g} leaves {n_test} test and {n - n_test} train images "
                f"of {n}; a split stratified over {NUM_CLASSES} classes needs at least {NUM_CLASSES} "
                f"in each (use 0 for no test set, or a value between "
                f"{NUM_CLASSES / n:.3f} and {1 - NUM_CLASSES / n:.3f})")
        train_idx, test_idx = train_test_split(all_index.numpy(), test_size=test_fraction,
                                               stratify=labels.numpy(), random_state=SPLIT_SEED,
                                               shuffle=True)
        train_index = torch.as_tensor(sorted(train_idx.tolist()), dtype=torch.long)
        test_index = torch.as_tensor(sorted(test_idx.tolist()), dtype=torch.long)
    else:
        train_index, test_index = all_index, None

    if size != NATIVE_SIZE:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=size < NATIVE_SIZE)
    train_pixels = pixels[train_index]
    mean = train_pixels.mean().item()
    std = train_pixels.std().item()
    images = (pixels - mean) / std

    classes = [str(d) for d in range(NUM_CLASSES)]

    def part(index: torch.Tensor) -> ImageTensorDataset:
        ds = ImageTensorDataset(images[index].contiguous(), labels[index], classes=classes)
        ds.source_index = index  # positions in sklearn's load_digits() arrays
        ds.mean, ds.std = mean, std
        return ds

    return DatasetBundle(train=part(train_index),
                         test=part(test_index) if test_index is not None else None,
                         num_classes=NUM_CLASSES, in_channels=1, image_size=size)
