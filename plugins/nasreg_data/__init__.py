"""Built-in plugin ``data``: the datasets a spec's ``[data] dataset`` can name.

* ``digits``: scikit-learn's bundled 8x8 digits, in memory, no download (quick CPU trials);
* ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``: torchvision's loaders, from ``root``
  (``download = true`` fetches the files);
* ``image_folder``: your own images in torchvision's ImageFolder layout.

Each factory's keyword arguments are its ``[data]`` keys (checked against the annotations before a
run starts) and its docstring documents them (``nasreg list-plugins`` shows the first line). A
factory returns a :class:`nasreg.DatasetBundle` whose items are ``(normalized float tensor
(C, H, W), int label)``; when the train images are randomly augmented, ``train_eval`` holds the
same images without augmentation, for the search's validation half. Missing or unreadable files
raise :class:`nasreg.DataError` with a one-line message that says where the data was looked for
and how to get it.

torch, torchvision and scikit-learn are imported only when a dataset is built, so loading the
plugin costs nothing (``nasreg validate`` and ``list-plugins`` do not import torch).

Registration metadata: ``shape`` is the ``(C, H, W)`` of the images, or a function of the
dataset's keys that returns it, and ``num_classes`` the class count, where they are known without
reading any file. ``nasreg train --dry-run`` builds the network from them (no data needed);
a dataset without them (``image_folder``) is built to learn its shape.
"""

from __future__ import annotations

from nasreg import hookimpl

from .digits import digits
from .image_folder import image_folder
from .torchvision_sets import cifar10, cifar100, fashion_mnist, mnist

__all__ = ["digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "image_folder"]


@hookimpl
def register_datasets(register):
    register("digits", digits, shape=digits_shape, num_classes=10)
    register("cifar10", cifar10, shape=(3, 32, 32), num_classes=10)
    register("cifar100", cifar100, shape=(3, 32, 32), num_classes=100)
    register("mnist", mnist, shape=(1, 28, 28), num_classes=10)
    register("fashion_mnist", fashion_mnist, shape=(1, 28, 28), num_classes=10)
    register("image_folder", image_folder)


def digits_shape(size: int = 8, **_keys) -> tuple[int, int, int]:
    """The shape of ``digits`` images for its ``[data]`` keys (``size`` is their side)."""
    return (1, size, size)
