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

torchvision and scikit-learn are imported only when a dataset is built, so loading the plugin
costs nothing.
"""

from __future__ import annotations

from nasreg import hookimpl

from .digits import digits
from .image_folder import image_folder
from .torchvision_sets import cifar10, cifar100, fashion_mnist, mnist

__all__ = ["digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "image_folder"]


@hookimpl
def register_datasets(register):
    register("digits", digits)
    register("cifar10", cifar10)
    register("cifar100", cifar100)
    register("mnist", mnist)
    register("fashion_mnist", fashion_mnist)
    register("image_folder", image_folder)
