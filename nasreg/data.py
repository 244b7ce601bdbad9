"""The dataset contract: what a ``register_datasets`` factory returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Subset


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


def split_train_val(bundle: DatasetBundle, portion: float, seed: int, limit: int = 0
                    ) -> tuple[Dataset, Dataset]:
    """Shuffle the train indices with ``seed`` and cut them at ``portion`` (after ``limit``)."""
    n = len(bundle.train)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g).tolist()
    if limit:
        order = order[:limit]
    cut = int(round(len(order) * portion))
    cut = min(max(cut, 1), len(order) - 1) if len(order) > 1 else len(order)
    val_source: Any = bundle.train_eval if bundle.train_eval is not None else bundle.train
    return Subset(bundle.train, order[:cut]), Subset(val_source, order[cut:])
