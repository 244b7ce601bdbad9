"""The ``image_folder`` dataset: a user's own images in torchvision's ImageFolder layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from nasreg import DataError, DatasetBundle, Range

from ._util import reason, resolve

#: Normalization defaults: ImageNet's channel statistics (grayscale: their average).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = (0.449,)
GRAY_STD = (0.226,)


class PILLoader:
    """Open an image file with PIL and convert it to ``mode`` ("RGB" or "L")."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, path: str) -> Any:
        from PIL import Image

        with open(path, "rb") as f:
            return Image.open(f).convert(self.mode)

    def __repr__(self) -> str:
        return f"PILLoader({self.mode!r})"


def _class_dirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir())


def _check_dir(path: Path, key: str) -> list[str]:
    layout = f"expected the ImageFolder layout {path}{os.sep}<class name>{os.sep}<image file>"
    if not path.exists():
        raise DataError(f"image_folder {key}: directory {path} does not exist ({layout})")
    if not path.is_dir():
        raise DataError(f"image_folder {key}: {path} is not a directory ({layout})")
    try:
        classes = _class_dirs(path)
    except OSError as exc:
        raise DataError(f"image_folder {key}: cannot read directory {path} ({reason(exc)})") from None
    if not classes:
        raise DataError(f"image_folder {key}: {path} holds no class folders ({layout})")
    return classes


def _relabel(ds: Any, classes: list[str]) -> None:
    """Give ``ds`` (an ImageFolder) the label numbering of ``classes`` (the training set's)."""
    index = {c: i for i, c in enumerate(classes)}
    ds.samples = [(p, index[ds.classes[t]]) for p, t in ds.samples]
    ds.imgs = ds.samples
    ds.targets = [t for _, t in ds.samples]
    ds.classes = list(classes)
    ds.class_to_idx = index


def _folder(path: Path, key: str, loader: PILLoader, classes: list[str] | None = None) -> Any:
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    found = _check_dir(path, key)
    extensions = ", ".join(IMG_EXTENSIONS)
    try:
        if classes is None:
            ds = ImageFolder(str(path), loader=loader)
        else:
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise DataError(f"image_folder {key}: {path} has class folders that root lacks: "
                                f"{', '.join(unknown)} (the test classes must be among the training classes)")
            ds = ImageFolder(str(path), loader=loader, allow_empty=True)
            _relabel(ds, classes)
    except FileNotFoundError as exc:  # torchvision: a class folder without any image file
        raise DataError(f"image_folder {key}: {path}: {reason(exc)}") from None
    except OSError as exc:
        raise DataError(f"image_folder {key}: cannot read {path} ({reason(exc)})") from None
    if len(ds) == 0:
        raise DataError(f"image_folder {key}: no image files under {path} (supported extensions: {extensions})")
    return ds


def _stats(values: list[float] | None, default: tuple[float, ...], channels: int, key: str,
           positive: bool) -> tuple[float, ...]:
    if values is None:
        return default
    if len(values) not in (1, channels):
        raise ValueError(f"{key}: expected 1 or {channels} values (one per channel), got {len(values)}")
    if positive and any(v <= 0 for v in values):
        raise ValueError(f"{key}: expected values > 0, got {values}")
    return tuple(float(v) for v in values) * (channels if len(values) == 1 else 1)


def image_folder(root: str, test_root: str | None = None,
                 image_size: Annotated[int, Range(ge=1, le=4096)] = 32,
                 grayscale: bool = False, augment: bool = True,
                 mean: list[float] | None = None, std: list[float] | None = None) -> DatasetBundle:
    """Your own images in torchvision's ImageFolder layout: root/<class name>/<image file>.

    Each sub-folder of ``root`` is a class (sorted by name, labels 0, 1, ...); every image file
    below it (.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp, also in nested folders)
    is one sample. Images are read from disk when used (PIL), resized so the shorter side is
    ``image_size`` and center-cropped to a square, scaled to [0, 1] and normalized.

    Keys (in ``[data]``):

    * ``root`` (required): the training images' directory; a relative path is taken from the
      current directory, ``~`` is expanded.
    * ``test_root`` (default none): a directory in the same layout with held-out test images;
      its class folders must be among root's (a class may be missing). None: no test set.
    * ``image_size`` (1..4096, default 32): side of the square images given to the network.
    * ``grayscale`` (default false): convert the images to 1 channel; otherwise to 3 (RGB).
    * ``augment`` (default true): augment the search's weight-training half with a random crop of
      the image padded by image_size/8 pixels and a random horizontal flip. The validation half
      and the test set are never augmented.
    * ``mean``, ``std`` (default ImageNet's channel statistics; grayscale: 0.449 and 0.226): the
      per-channel values to normalize with, as a list of 1 or (RGB) 3 numbers.
    """
    from torchvision import transforms as T

    from ._common import Transformed

    channels = 1 if grayscale else 3
    norm_mean = _stats(mean, GRAY_MEAN if grayscale else IMAGENET_MEAN, channels, "mean", False)
    norm_std = _stats(std, GRAY_STD if grayscale else IMAGENET_STD, channels, "std", True)

    loader = PILLoader("L" if grayscale else "RGB")
    base = _folder(resolve(root), "root", loader)
    test_base = _folder(resolve(test_root), "test_root", loader, base.classes) if test_root is not None else None

    resize = [T.Resize(image_size), T.CenterCrop(image_size)]
    finish = [T.ToTensor(), T.Normalize(norm_mean, norm_std)]
    plain = T.Compose(resize + finish)
    pad = image_size // 8
    random = ([T.RandomCrop(image_size, padding=pad)] if pad else []) + [T.RandomHorizontalFlip()]
    augmented = T.Compose(resize + random + finish)

    train_eval = Transformed(base, plain)
    train = Transformed(base, augmented) if augment else train_eval
    test = Transformed(test_base, plain) if test_base is not None else None
    return DatasetBundle(train=train, test=test, num_classes=len(base.classes), in_channels=channels,
                         image_size=image_size, train_eval=train_eval if augment else None)
