"""CIFAR-10, CIFAR-100, MNIST and Fashion-MNIST through torchvision's own loaders.

torchvision reads and verifies the files (CIFAR: every file's md5; MNIST: the extracted idx files
exist) and, with ``download = true``, fetches them. Its ``RuntimeError`` for missing or corrupted
files becomes a one-line :class:`nasreg.DataError` that names the directory and how to get the
data. Each split is loaded once: the images are kept as one ``uint8`` tensor, and the augmented
train view, the plain ``train_eval`` view and the test set index it through
:class:`~nasreg_data._common.ImageTransform` (scaling, normalization, random crop and flip on
tensors, no PIL).

torch and torchvision are imported when a dataset is built, not when the plugin loads.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasreg import DataError, DatasetBundle

from ._util import reason, resolve

if TYPE_CHECKING:  # pragma: no cover - torch is imported when a dataset is built
    import torch

#: Errors torchvision raises while reading files (besides its RuntimeError for missing files).
_READ_ERRORS = (OSError, EOFError, pickle.UnpicklingError, AssertionError, KeyError, TypeError,
                ValueError, IndexError)


@dataclass(frozen=True)
class _Info:
    title: str       # for messages: "CIFAR-10"
    cls: str         # torchvision.datasets class name
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int         # random-crop padding when augmenting
    flip: bool       # horizontal flip when augmenting


# The usual per-channel statistics of each training set (pixels scaled to [0, 1]).
CIFAR10 = _Info("CIFAR-10", "CIFAR10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True)
CIFAR100 = _Info("CIFAR-100", "CIFAR100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 4, True)
MNIST = _Info("MNIST", "MNIST", (0.1307,), (0.3081,), 2, False)
FASHION_MNIST = _Info("Fashion-MNIST", "FashionMNIST", (0.2860,), (0.3530,), 2, False)


def _tv_class(info: _Info) -> Any:
    import torchvision.datasets

    return getattr(torchvision.datasets, info.cls)


# --- diagnosing missing data ----------------------------------------------------------------------

def _cifar_place(cls: Any, root: Path) -> str:
    return f"place the extracted `{cls.base_folder}` folder (from {cls.filename}) under {root}"


def _cifar_problem(cls: Any, info: _Info, root: Path) -> tuple[bool, str]:
    """(whether files are missing, what is wrong with the CIFAR files under ``root``)."""
    from torchvision.datasets.utils import check_integrity

    folder = root / cls.base_folder
    files = [(name, md5) for name, md5 in cls.train_list + cls.test_list]
    files.append((cls.meta["filename"], cls.meta["md5"]))
    if not folder.is_dir():
        return True, f"{info.title} not found: directory {folder} does not exist"
    missing = [name for name, _ in files if not (folder / name).is_file()]
    if missing:
        return True, f"{info.title} incomplete: directory {folder} lacks {', '.join(missing)}"
    corrupt = [name for name, md5 in files if not check_integrity(str(folder / name), md5)]
    if corrupt:
        return False, (f"{info.title} files in {folder} are corrupted (md5 checksum mismatch: "
                       f"{', '.join(corrupt)}); delete that folder and set `download = true` in "
                       f"[data], or replace it with a fresh copy extracted from {cls.filename}")
    return False, ""


def _mnist_place(cls: Any, root: Path) -> str:
    names = [os.path.splitext(os.path.basename(url))[0] for url, _ in cls.resources]
    return f"place the extracted (gunzipped) files {', '.join(names)} in {root / cls.__name__ / 'raw'}"


def _mnist_problem(cls: Any, info: _Info, root: Path) -> tuple[bool, str]:
    """(whether files are missing, what is wrong with the MNIST-like files under ``root``)."""
    raw = root / cls.__name__ / "raw"
    names = [os.path.splitext(os.path.basename(url))[0] for url, _ in cls.resources]
    if not raw.is_dir():
        return True, f"{info.title} not found: directory {raw} does not exist"
    missing = [name for name in names if not (raw / name).is_file()]
    if missing:
        return True, f"{info.title} incomplete: directory {raw} lacks {', '.join(missing)}"
    return False, ""


def _open(info: _Info, root: Path, train: bool, download: bool) -> Any:
    """torchvision's dataset for one split, or a one-line DataError."""
    cls = _tv_class(info)
    is_cifar = hasattr(cls, "base_folder")
    try:
        return cls(str(root), train=train, download=download)
    except _READ_ERRORS + (RuntimeError,) as exc:
        place = (_cifar_place if is_cifar else _mnist_place)(cls, root)
        if download:
            raise DataError(f"could not download {info.title} into {root} ({reason(exc)}); check the "
                            f"internet connection and that the directory is writable, or {place}") from None
        missing, problem = (_cifar_problem if is_cifar else _mnist_problem)(cls, info, root)
        if missing:
            raise DataError(f"{problem}; set `download = true` in [data] to download it "
                            f"(needs internet), or {place}") from None
        if problem:
            raise DataError(problem) from None
        where = root / cls.base_folder if is_cifar else root / cls.__name__
        raise DataError(f"cannot read {info.title} from {where} ({reason(exc)}); the files may be "
                        f"damaged: delete them and set `download = true` in [data]") from None


# --- building bundles ---------------------------------------------------------------------------

def _images(ds: Any) -> torch.Tensor:
    """torchvision's ``data`` as a ``uint8 (N, C, H, W)`` tensor (a view where possible)."""
    import numpy as np
    import torch

    data = ds.data
    tensor = torch.from_numpy(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    if tensor.dtype != torch.uint8:
        raise DataError(f"unexpected pixel type {tensor.dtype} in {type(ds).__name__} data")
    if tensor.dim() == 3:           # MNIST-like: (N, H, W)
        return tensor.unsqueeze(1)
    if tensor.dim() == 4 and tensor.shape[-1] in (1, 3):  # CIFAR: (N, H, W, C)
        return tensor.permute(0, 3, 1, 2)
    raise DataError(f"unexpected image array shape {tuple(tensor.shape)} in {type(ds).__name__} data")


def _bundle(info: _Info, root: str, download: bool, augment: bool,
            autoaugment: bool = False) -> DatasetBundle:
    import torch

    from ._common import ImageTensorDataset, ImageTransform

    path = resolve(root)
    train_src = _open(info, path, True, download)
    test_src = _open(info, path, False, False)  # downloading the train split fetched both
    classes = list(train_src.classes)

    plain = ImageTransform(info.mean, info.std)
    train_images = _images(train_src)
    train_targets = torch.as_tensor(train_src.targets, dtype=torch.long)
    train_eval = ImageTensorDataset(train_images, train_targets, plain, classes)
    augmented = augment or autoaugment
    if augmented:
        transform = ImageTransform(info.mean, info.std, padding=info.pad if augment else 0,
                                   flip=info.flip and augment, autoaugment=autoaugment)
        train = ImageTensorDataset(train_images, train_targets, transform, classes)
    else:
        train = train_eval
    test = ImageTensorDataset(_images(test_src), torch.as_tensor(test_src.targets, dtype=torch.long),
                              plain, classes)
    return DatasetBundle(train=train, test=test, num_classes=len(classes),
                         in_channels=train_images.shape[1], image_size=int(train_images.shape[-1]),
                         train_eval=train_eval if augmented else None)


# --- the factories ------------------------------------------------------------------------------

#: The keys the two CIFAR factories share, appended to their docstrings.
_CIFAR_KEYS = """
    * ``download`` (default false): fetch and extract the archive (about {size} MB) into ``root`` if
      it is not there yet (needs internet). torchvision verifies every file's md5 checksum.
    * ``augment`` (default true): augment the search's weight-training half with a random 32x32
      crop of the image padded by 4 pixels and a random horizontal flip. The architecture-
      validation half and the test set are never augmented.
    * ``autoaugment`` (default false): also apply torchvision's AutoAugment (CIFAR-10 policy) to
      the augmented training images, after the crop and flip (the DG-DARTS evaluation recipe;
      ``[evaluate] autoaugment`` sets it).
    """

def cifar10(root: str = "data", download: bool = False, augment: bool = True,
            autoaugment: bool = False) -> DatasetBundle:
    """CIFAR-10 (torchvision): 50,000 train and 10,000 test 32x32 color images, 10 classes.

    Normalized with the usual CIFAR-10 channel mean and standard deviation.

    Keys (in ``[data]``):

    * ``root`` (default "data"): the directory that holds the extracted ``cifar-10-batches-py``
      folder (data_batch_1..5, test_batch, batches.meta); a relative path is taken from the current
      directory, ``~`` is expanded.
    """
    return _bundle(CIFAR10, root, download, augment, autoaugment)


def cifar100(root: str = "data", download: bool = False, augment: bool = True,
             autoaugment: bool = False) -> DatasetBundle:
    """CIFAR-100 (torchvision): 50,000 train and 10,000 test 32x32 color images, 100 classes.

    Labels are the 100 fine classes. Normalized with the usual CIFAR-100 channel statistics.

    Keys (in ``[data]``):

    * ``root`` (default "data"): the directory that holds the extracted ``cifar-100-python``
      folder (train, test, meta); a relative path is taken from the current directory, ``~`` is
      expanded.
    """
    return _bundle(CIFAR100, root, download, augment, autoaugment)


cifar10.__doc__ = (cifar10.__doc__ or "").rstrip() + _CIFAR_KEYS.format(size=170)
cifar100.__doc__ = (cifar100.__doc__ or "").rstrip() + _CIFAR_KEYS.format(size=160)


def mnist(root: str = "data", download: bool = False, augment: bool = False) -> DatasetBundle:
    """MNIST (torchvision): 60,000 train and 10,000 test 28x28 grayscale digits, 10 classes.

    Normalized with the usual MNIST mean (0.1307) and standard deviation (0.3081).

    Keys (in ``[data]``):

    * ``root`` (default "data"): the directory under which ``MNIST/raw`` holds the extracted idx
      files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
      t10k-labels-idx1-ubyte); a relative path is taken from the current directory, ``~`` is
      expanded.
    * ``download`` (default false): fetch and extract the files (about 12 MB) into
      ``root/MNIST/raw`` if they are not there yet (needs internet).
    * ``augment`` (default false: digits are usually not augmented): when true, shift the
      search's weight-training images by up to 2 pixels (random crop of the image padded by 2);
      never a flip. The validation half and the test set are never augmented.
    """
    return _bundle(MNIST, root, download, augment)


def fashion_mnist(root: str = "data", download: bool = False, augment: bool = False) -> DatasetBundle:
    """Fashion-MNIST (torchvision): 60,000 train and 10,000 test 28x28 grayscale clothing images, 10 classes.

    Normalized with the usual Fashion-MNIST mean (0.2860) and standard deviation (0.3530).

    Keys (in ``[data]``):

    * ``root`` (default "data"): the directory under which ``FashionMNIST/raw`` holds the extracted
      idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
      t10k-labels-idx1-ubyte); a relative path is taken from the current directory, ``~`` is
      expanded.
    * ``download`` (default false): fetch and extract the files (about 30 MB) into
      ``root/FashionMNIST/raw`` if they are not there yet (needs internet).
    * ``augment`` (default false): when true, shift the search's weight-training images by up to
      2 pixels (random crop of the image padded by 2); never a flip. The validation half and the
      test set are never augmented.
    """
    return _bundle(FASHION_MNIST, root, download, augment)
