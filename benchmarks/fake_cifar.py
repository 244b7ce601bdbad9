"""A benchmark-only dataset plugin: ``fake_cifar10``, CIFAR-10-shaped random images.

50,000 train and 10,000 test uint8 images of 3x32x32 (random pixels, random labels), held in
memory exactly as the ``cifar10`` dataset holds the real files (same transform: CIFAR-10's mean
and std, random crop with 4-pixel padding and flip on the training half), so timings of a search
or an epoch on it are those of CIFAR-10 on machines that cannot download it. Load it with
``--plugin benchmarks/fake_cifar.py`` and ``--set data.dataset=fake_cifar10``.
"""

from __future__ import annotations

import torch

import nasreg
from nasreg_data._common import ImageTensorDataset, ImageTransform

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def fake_cifar10(train_size: int = 50_000, test_size: int = 10_000, seed: int = 0) -> nasreg.DatasetBundle:
    """CIFAR-10-shaped random data (uint8 3x32x32, 10 classes) for benchmarks."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (train_size, 3, 32, 32), generator=g, dtype=torch.uint8)
    targets = torch.randint(0, 10, (train_size,), generator=g)
    test = torch.randint(0, 256, (test_size, 3, 32, 32), generator=g, dtype=torch.uint8)
    test_targets = torch.randint(0, 10, (test_size,), generator=g)
    classes = [str(i) for i in range(10)]
    plain = ImageTransform(MEAN, STD)
    train = ImageTensorDataset(images, targets, ImageTransform(MEAN, STD, padding=4, flip=True), classes)
    return nasreg.DatasetBundle(train=train, test=ImageTensorDataset(test, test_targets, plain, classes),
                                num_classes=10, in_channels=3, image_size=32,
                                train_eval=ImageTensorDataset(images, targets, plain, classes))


@nasreg.hookimpl
def register_datasets(register):
    register("fake_cifar10", fake_cifar10, shape=(3, 32, 32), num_classes=10)
