"""Pieces the dataset factories share: in-memory image datasets and a tensor transform.

This module imports torch: the factories import it when they build a dataset (the helpers they
need earlier, for paths and messages, are in :mod:`nasreg_data._util`).

Everything here is defined at module level so that datasets pickle (``num_workers > 0`` with the
``spawn`` start method pickles the dataset into each worker).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class ImageTensorDataset(Dataset):
    """Images held in memory as one ``(N, C, H, W)`` tensor, with integer labels.

    ``transform`` (optional) maps one stored image to the returned tensor; without it the stored
    image is returned as is (so store float, normalized images then). Items are
    ``(image, int label)``. ``targets`` is the label tensor and ``classes`` the class names, when
    known.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 classes: Sequence[str] | None = None) -> None:
        if images.dim() != 4:
            raise ValueError(f"images: expected a (N, C, H, W) tensor, got shape {tuple(images.shape)}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images = images
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.transform = transform
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])

    def memory_view(self) -> Any:
        """The split as a :class:`nasreg.MemoryView` (for the device loader), or None when
        the transform is not one it can reproduce (AutoAugment, or an arbitrary callable).

        Without a transform the stored images are the items (float, already normalized); with an
        :class:`ImageTransform` the stored ``uint8`` images are scaled, cropped, flipped and
        normalized as it says.
        """
        from nasreg import MemoryView

        t = self.transform
        if t is None:
            if not self.images.is_floating_point():
                return None  # items would be raw integers: nothing the loader should normalize
            return MemoryView(self.images, self.targets)
        if type(t) is not ImageTransform or t.autoaugment is not None or self.images.dtype != torch.uint8:
            return None
        return MemoryView(self.images, self.targets, mean=tuple(t.mean.flatten().tolist()),
                          std=tuple(t.std.flatten().tolist()), padding=t.padding, flip=t.flip)

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        return f"{type(self).__name__}({n} images, {c}x{h}x{w}, transform={self.transform!r})"


class ImageTransform:
    """A ``uint8 (C, H, W)`` image -> a float image scaled to [0, 1] and normalized per channel.

    With ``padding > 0`` the image is first zero-padded by ``padding`` pixels on every side and a
    random crop of the original size is taken (torchvision's ``RandomCrop(size, padding)``); with
    ``flip`` it is mirrored left-right with probability 1/2. Randomness comes from torch's global
    generator (seeded per DataLoader worker by PyTorch).

    With ``autoaugment`` torchvision's AutoAugment with its CIFAR-10 policy is applied to the
    ``uint8`` image after the crop and flip, before scaling (the order of the AutoAugment CIFAR
    recipes: crop, flip, AutoAugment, to tensor, normalize).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], padding: int = 0,
                 flip: bool = False, autoaugment: bool = False) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        self.padding = int(padding)
        self.flip = bool(flip)
        self.autoaugment = None
        if autoaugment:
            from torchvision.transforms import AutoAugment, AutoAugmentPolicy

            self.autoaugment = AutoAugment(AutoAugmentPolicy.CIFAR10)

    @property
    def augments(self) -> bool:
        return self.padding > 0 or self.flip or self.autoaugment is not None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.autoaugment is not None:
            return self._autoaugmented(image)
        x = self._crop_flip(image.to(torch.float32).div_(255.0))
        return (x - self.mean) / self.std

    def _crop_flip(self, x: torch.Tensor) -> torch.Tensor:
        """A random crop of the zero-padded image and a random horizontal flip (each as enabled)."""
        if self.padding:
            p = self.padding
            h, w = x.shape[-2:]
            x = F.pad(x, (p, p, p, p))
            i, j = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = x[:, i:i + h, j:j + w]
        if self.flip and torch.rand(()).item() < 0.5:
            x = x.flip(-1)
        return x

    def _autoaugmented(self, image: torch.Tensor) -> torch.Tensor:
        """Crop and flip on the uint8 image (zero padding, as above), AutoAugment, then scale."""
        x = self.autoaugment(self._crop_flip(image).contiguous())
        return (x.to(torch.float32).div_(255.0) - self.mean) / self.std

    def __repr__(self) -> str:
        return (f"ImageTransform(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}, "
                f"padding={self.padding}, flip={self.flip}, autoaugment={self.autoaugment is not None})")


class Transformed(Dataset):
    """``base`` with ``transform`` applied to each image: one loaded dataset, several views."""

    def __init__(self, base: Any, transform: Callable[[Any], torch.Tensor]) -> None:
        self.base = base
        self.transform = transform
        self.classes = list(getattr(base, "classes", []) or []) or None
        self.targets = getattr(base, "targets", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, target = self.base[index]
        return self.transform(image), int(target)

    def __repr__(self) -> str:
        return f"Transformed({len(self)} images, transform={self.transform!r})"
