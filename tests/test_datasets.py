"""The built-in ``data`` plugin: every registered dataset, on files the tests write themselves.

No network: CIFAR and MNIST are read by torchvision's real loaders from tiny files in the
datasets' on-disk formats. torchvision checks each CIFAR file against a hard-coded md5; the CIFAR
fixtures point those md5 lists at the tiny files (monkeypatch, undone after each test), so the
real integrity check still runs, and one test checks that the unpatched, real checksums reject
the tiny files.
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import nasreg
from nasreg import DataError, DatasetBundle
from nasreg._core import params as P
from nasreg._core.data import split_train_val
from nasreg._core.plugins import load_plugins

import nasreg_data
from nasreg_data import cifar10, cifar100, digits, fashion_mnist, image_folder, mnist
from nasreg_data._common import ImageTransform
from nasreg_data.torchvision_sets import CIFAR10 as CIFAR10_INFO

torchvision_datasets = pytest.importorskip("torchvision.datasets")


# --- helpers ------------------------------------------------------------------------------------

def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` images in CIFAR's row format: uint8 (n, 3072), channel planes R, G, B of 32x32."""
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _pixels(row: np.ndarray) -> torch.Tensor:
    """A CIFAR row back to a (3, 32, 32) float image in [0, 1]."""
    return torch.from_numpy(row.reshape(3, 32, 32).astype(np.float32) / 255.0)


def _normalized(image01: torch.Tensor, mean, std) -> torch.Tensor:
    return (image01 - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def _patch_md5(monkeypatch, cls, folder: Path) -> None:
    """Make torchvision's integrity check expect the md5 of the files we wrote (not weaken it)."""
    monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})


def _write_cifar10(root: Path) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for i in range(1, 6):
        data = _cifar_images(rng, 4)
        lab = [int(x) for x in rng.integers(0, 10, size=4)]
        _pickle(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": lab,
                                             "data": data, "filenames": [f"img{i}_{k}.png" for k in range(4)]})
        rows.append(data)
        labels += lab
    test = _cifar_images(rng, 6)
    test_labels = [int(x) for x in rng.integers(0, 10, size=6)]
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_labels,
                                    "data": test, "filenames": [f"t{k}.png" for k in range(6)]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 4, "num_vis": 3072})
    return {"folder": folder, "train": np.vstack(rows), "labels": labels, "test": test,
            "test_labels": test_labels}


def _write_cifar100(root: Path) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    train, test = _cifar_images(rng, 12), _cifar_images(rng, 5)
    fine = [int(x) for x in rng.integers(0, 100, size=12)]
    fine_test = [int(x) for x in rng.integers(0, 100, size=5)]
    for name, data, lab in (("train", train, fine), ("test", test, fine_test)):
        _pickle(folder / name, {"filenames": [f"{name}{k}.png" for k in range(len(lab))],
                                "batch_label": name, "fine_labels": lab,
                                "coarse_labels": [x // 5 for x in lab], "data": data})
    _pickle(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                              "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return {"folder": folder, "train": train, "labels": fine, "test": test, "test_labels": fine_test}


def _write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's idx format: magic (0, 0, type 0x08 = uint8, ndim), big-endian int32 dims, data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder_name: str = "MNIST") -> dict:
    raw = root / folder_name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    train = rng.integers(0, 256, size=(15, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=15, dtype=np.uint8)
    test = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    test_labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", train)
    _write_idx(raw / "train-labels-idx1-ubyte", labels)
    _write_idx(raw / "t10k-images-idx3-ubyte", test)
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_labels)
    return {"raw": raw, "train": train, "labels": labels, "test": test, "test_labels": test_labels}


@pytest.fixture
def cifar10_root(tmp_path, monkeypatch):
    written = _write_cifar10(tmp_path)
    _patch_md5(monkeypatch, torchvision_datasets.CIFAR10, written["folder"])
    return tmp_path, written


@pytest.fixture
def cifar100_root(tmp_path, monkeypatch):
    written = _write_cifar100(tmp_path)
    _patch_md5(monkeypatch, torchvision_datasets.CIFAR100, written["folder"])
    return tmp_path, written


def _check_bundle(bundle: DatasetBundle, n_train: int, n_test: int, channels: int, size: int,
                  classes: int) -> None:
    assert isinstance(bundle, DatasetBundle)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (classes, channels, size)
    assert len(bundle.train) == n_train
    assert (len(bundle.test) if bundle.test is not None else 0) == n_test
    for ds in (bundle.train, bundle.test, bundle.train_eval):
        if ds is None or len(ds) == 0:
            continue
        x, y = ds[0]
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
        assert tuple(x.shape) == (channels, size, size)
        assert isinstance(y, int) and 0 <= y < classes


# --- digits -------------------------------------------------------------------------------------

def test_digits_bundle_shapes_classes_and_normalization():
    b = digits()
    _check_bundle(b, n_train=1437, n_test=360, channels=1, size=8, classes=10)
    assert b.train_eval is None  # no augmentation: the validation half uses train itself
    x = torch.stack([b.train[i][0] for i in range(len(b.train))])
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-4
    labels = [b.train[i][1] for i in range(len(b.train))] + [b.test[i][1] for i in range(len(b.test))]
    assert sorted(set(labels)) == list(range(10))
    # Pixels were scaled to [0, 1] before normalizing: the train stats undo to that range.
    raw = (x * b.train.std + b.train.mean)
    assert raw.min().item() >= -1e-5 and raw.max().item() <= 1 + 1e-5


def test_digits_test_split_is_stable_stratified_and_disjoint():
    a, b = digits(), digits()
    assert torch.equal(a.test.source_index, b.test.source_index)
    assert torch.equal(a.test.images, b.test.images)
    train_idx, test_idx = set(a.train.source_index.tolist()), set(a.test.source_index.tolist())
    assert not train_idx & test_idx and len(train_idx | test_idx) == 1797
    counts = torch.bincount(a.test.targets, minlength=10)
    assert counts.min().item() >= 35 and counts.max().item() <= 37  # ~20% of each ~180-image class
    # The test set does not depend on torch's global RNG (i.e. on the run seed).
    torch.manual_seed(123)
    c = digits()
    assert torch.equal(a.test.source_index, c.test.source_index)
    # A different fraction gives a different, still disjoint split.
    d = digits(test_fraction=0.5)
    assert len(d.test) == 899 and not set(d.train.source_index.tolist()) & set(d.test.source_index.tolist())


def test_digits_size_and_no_test_set():
    b = digits(size=16, test_fraction=0)
    _check_bundle(b, n_train=1797, n_test=0, channels=1, size=16, classes=10)
    assert b.test is None
    b32 = digits(size=32)
    assert b32.image_size == 32 and tuple(b32.test[0][0].shape) == (1, 32, 32)


def test_digits_rejects_splits_too_small_to_stratify():
    with pytest.raises(ValueError, match="test_fraction"):
        digits(test_fraction=0.001)
    with pytest.raises(ValueError, match="test_fraction"):
        digits(test_fraction=0.999)


def test_digits_keys_are_checked_by_the_spec_schema():
    regs = load_plugins().registries
    comp = P.component("datasets", {"name": "digits", "size": 16}, "spec.toml: [data]", regs)
    assert comp.params == {"test_fraction": 0.2, "size": 16}
    assert comp.build().image_size == 16
    for bad in ({"test_fraction": 1.0}, {"test_fraction": -0.1}, {"size": 0}, {"size": "16"},
                {"sizes": 16}):
        with pytest.raises(nasreg.SpecError):
            P.component("datasets", {"name": "digits", **bad}, "spec.toml: [data]", regs)
    # A value the factory rejects becomes a SpecError naming the table.
    comp = P.component("datasets", {"name": "digits", "test_fraction": 0.001}, "spec.toml: [data]", regs)
    with pytest.raises(nasreg.SpecError, match=r"spec.toml: \[data\].*test_fraction"):
        comp.build()


# --- CIFAR --------------------------------------------------------------------------------------

def test_cifar10_reads_real_format_files(cifar10_root):
    root, w = cifar10_root
    b = cifar10(root=str(root))
    _check_bundle(b, n_train=20, n_test=6, channels=3, size=32, classes=10)
    assert b.train.classes[0] == "airplane"
    mean, std = CIFAR10_INFO.mean, CIFAR10_INFO.std
    for i in (0, 7, 19):  # batch order and labels preserved; images normalized, no augmentation
        x, y = b.train_eval[i]
        assert y == w["labels"][i]
        assert torch.allclose(x, _normalized(_pixels(w["train"][i]), mean, std), atol=1e-5)
    for i in range(6):
        x, y = b.test[i]
        assert y == w["test_labels"][i]
        assert torch.allclose(x, _normalized(_pixels(w["test"][i]), mean, std), atol=1e-5)
    # train and train_eval are the same images (loaded once), train with random crop + flip.
    assert b.train.images is b.train_eval.images
    torch.manual_seed(0)
    plain = b.train_eval[3][0]
    augmented = [b.train[3][0] for _ in range(20)]
    assert any(not torch.equal(a, plain) for a in augmented)
    assert all(a.shape == plain.shape for a in augmented)


def test_cifar10_without_augment_has_no_train_eval(cifar10_root):
    root, _ = cifar10_root
    b = cifar10(root=str(root), augment=False)
    assert b.train_eval is None
    torch.manual_seed(0)
    assert torch.equal(b.train[5][0], b.train[5][0])


def test_cifar100_reads_real_format_files(cifar100_root):
    root, w = cifar100_root
    b = cifar100(root=str(root))
    _check_bundle(b, n_train=12, n_test=5, channels=3, size=32, classes=100)
    assert [b.train_eval[i][1] for i in range(12)] == w["labels"]
    assert [b.test[i][1] for i in range(5)] == w["test_labels"]
    x = b.test[2][0]
    assert torch.allclose(x, _normalized(_pixels(w["test"][2]), (0.5071, 0.4865, 0.4409),
                                         (0.2673, 0.2564, 0.2762)), atol=1e-5)


def test_cifar_real_checksums_reject_other_files(tmp_path):
    """Without the test's md5 patch, torchvision's real integrity check rejects the tiny files."""
    _write_cifar10(tmp_path)
    with pytest.raises(DataError, match="corrupted") as exc:
        cifar10(root=str(tmp_path))
    msg = str(exc.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "\n" not in msg


def test_cifar_incomplete_folder_names_the_missing_files(cifar10_root):
    root, w = cifar10_root
    (w["folder"] / "data_batch_3").unlink()
    (w["folder"] / "batches.meta").unlink()
    with pytest.raises(DataError) as exc:
        cifar10(root=str(root))
    msg = str(exc.value)
    assert "data_batch_3" in msg and "batches.meta" in msg and "data_batch_1" not in msg


# --- MNIST-likes --------------------------------------------------------------------------------

@pytest.mark.parametrize("factory, folder, mean, std", [
    (mnist, "MNIST", 0.1307, 0.3081),
    (fashion_mnist, "FashionMNIST", 0.2860, 0.3530),
])
def test_mnist_like_reads_idx_files(tmp_path, factory, folder, mean, std):
    w = _write_mnist(tmp_path, folder)
    b = factory(root=str(tmp_path))
    _check_bundle(b, n_train=15, n_test=7, channels=1, size=28, classes=10)
    assert b.train_eval is None  # not augmented by default
    for i in (0, 14):
        x, y = b.train[i]
        assert y == int(w["labels"][i])
        expected = (torch.from_numpy(w["train"][i].astype(np.float32) / 255.0) - mean) / std
        assert torch.allclose(x[0], expected, atol=1e-5)
    assert [b.test[i][1] for i in range(7)] == [int(v) for v in w["test_labels"]]
    aug = factory(root=str(tmp_path), augment=True)
    assert aug.train_eval is not None and aug.train.transform.padding == 2 and not aug.train.transform.flip


# --- missing data -------------------------------------------------------------------------------

@pytest.mark.parametrize("factory, folder", [
    (cifar10, "cifar-10-batches-py"),
    (cifar100, "cifar-100-python"),
    (mnist, "MNIST/raw"),
    (fashion_mnist, "FashionMNIST/raw"),
])
def test_missing_directory_is_a_one_line_data_error(tmp_path, factory, folder):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as exc:
        factory(root=str(root))
    msg = str(exc.value)
    assert str(root / folder) in msg
    assert "download = true" in msg and "\n" not in msg
    assert isinstance(exc.value, nasreg.NasregError) and exc.value.exit_code == 2
    assert not root.exists()  # nothing created without download


@pytest.mark.parametrize("factory, module", [(cifar10, "cifar"), (mnist, "mnist")])
def test_failed_download_is_a_data_error(tmp_path, monkeypatch, factory, module):
    """``download = true`` without internet (simulated: the test never touches the network)."""
    import urllib.error
    import importlib

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(importlib.import_module(f"torchvision.datasets.{module}"),
                        "download_and_extract_archive", offline)
    with pytest.raises(DataError) as exc:
        factory(root=str(tmp_path), download=True)
    msg = str(exc.value)
    assert msg.startswith("could not download") and str(tmp_path) in msg and "\n" not in msg
    assert "set `download = true`" not in msg  # it already is


def test_relative_root_is_taken_from_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as exc:
        cifar10(root="data")
    assert str(tmp_path / "data" / "cifar-10-batches-py") in str(exc.value)


def test_mnist_incomplete_raw_folder(tmp_path):
    w = _write_mnist(tmp_path)
    (w["raw"] / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as exc:
        mnist(root=str(tmp_path))
    assert "train-images-idx3-ubyte" not in str(exc.value).split("lacks")[1].split(";")[0]


# --- image_folder -------------------------------------------------------------------------------

def _write_images(root: Path, counts: dict[str, int], size=(10, 6), mode="RGB") -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(root / cls / f"{k}.png")


def test_image_folder_train_and_test(tmp_path):
    _write_images(tmp_path / "train", {"cat": 3, "dog": 2, "eel": 2})
    _write_images(tmp_path / "test", {"dog": 2, "eel": 1}, mode="L")  # no "cat": labels still agree
    b = image_folder(root=str(tmp_path / "train"), test_root=str(tmp_path / "test"), image_size=8)
    _check_bundle(b, n_train=7, n_test=3, channels=3, size=8, classes=3)
    assert b.train.classes == ["cat", "dog", "eel"] and b.test.classes == ["cat", "dog", "eel"]
    assert [b.test[i][1] for i in range(3)] == [1, 1, 2]
    assert [b.train_eval[i][1] for i in range(7)] == [0, 0, 0, 1, 1, 2, 2]
    assert b.train_eval is not None and b.train.base is b.train_eval.base  # folder scanned once
    torch.manual_seed(0)
    assert torch.equal(b.train_eval[0][0], b.train_eval[0][0])


def test_image_folder_grayscale_no_augment_and_stats(tmp_path):
    _write_images(tmp_path, {"a": 2, "b": 2})
    b = image_folder(root=str(tmp_path), image_size=5, grayscale=True, augment=False,
                     mean=[0.5], std=[0.25])
    _check_bundle(b, n_train=4, n_test=0, channels=1, size=5, classes=2)
    assert b.test is None and b.train_eval is None
    x = b.train[0][0]
    assert x.min().item() >= -2 - 1e-5 and x.max().item() <= 2 + 1e-5
    with pytest.raises(ValueError, match="std"):
        image_folder(root=str(tmp_path), std=[0.2, 0.2])
    with pytest.raises(ValueError, match="std"):
        image_folder(root=str(tmp_path), std=[0.0])


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist") as exc:
        image_folder(root=str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in str(exc.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        image_folder(root=str(tmp_path / "empty"))
    (tmp_path / "noimg" / "cat").mkdir(parents=True)
    (tmp_path / "noimg" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="cat"):
        image_folder(root=str(tmp_path / "noimg"))
    _write_images(tmp_path / "train", {"cat": 1})
    _write_images(tmp_path / "test", {"cat": 1, "cow": 1})
    with pytest.raises(DataError, match="cow"):
        image_folder(root=str(tmp_path / "train"), test_root=str(tmp_path / "test"))
    (tmp_path / "test2" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        image_folder(root=str(tmp_path / "train"), test_root=str(tmp_path / "test2"))
    regs = load_plugins().registries
    with pytest.raises(nasreg.SpecError, match="root"):
        P.component("datasets", {"name": "image_folder"}, "spec.toml: [data]", regs)
    with pytest.raises(nasreg.SpecError, match="image_size"):
        P.component("datasets", {"name": "image_folder", "root": "x", "image_size": 0}, "spec.toml: [data]", regs)


# --- the core's split and the registry ----------------------------------------------------------

@pytest.mark.parametrize("portion", [0.5, 0.8])
def test_split_train_val_on_a_bundle(portion):
    b = digits()
    train, val = split_train_val(b, portion, seed=7)
    n = len(b.train)
    assert len(train) == round(n * portion) and len(train) + len(val) == n
    assert not set(train.indices) & set(val.indices)
    again, _ = split_train_val(b, portion, seed=7)
    assert train.indices == again.indices
    limited_train, limited_val = split_train_val(b, portion, seed=7, limit=100)
    assert len(limited_train) + len(limited_val) == 100


def test_split_train_val_uses_the_unaugmented_view(cifar10_root):
    root, _ = cifar10_root
    b = cifar10(root=str(root))
    train, val = split_train_val(b, 0.5, seed=0)
    assert train.dataset is b.train and val.dataset is b.train_eval
    assert not set(train.indices) & set(val.indices) and len(train) == len(val) == 10


def test_bundles_pickle_for_dataloader_workers(tmp_path, cifar10_root):
    root, _ = cifar10_root
    _write_images(tmp_path / "imgs", {"a": 1, "b": 1})
    for b in (digits(), cifar10(root=str(root)), image_folder(root=str(tmp_path / "imgs"), image_size=4)):
        for ds in (b.train, b.test, b.train_eval):
            if ds is not None:
                copy = pickle.loads(pickle.dumps(ds))
                assert len(copy) == len(ds)
                assert copy[0][0].shape == ds[0][0].shape


def test_every_registered_dataset_is_documented():
    regs = load_plugins().registries
    names = regs.datasets.by_plugin("data")
    assert sorted(names) == sorted(["digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "image_folder"])
    for name in names:
        entry = regs.datasets.get(name)
        doc = inspect.getdoc(entry.factory)
        assert doc, f"dataset {name!r}: factory has no docstring"
        assert entry.description and entry.description == doc.splitlines()[0]
        params, _ = P.signature_params(entry.factory)
        for key in params:  # every [data] key the factory takes is explained in its docstring
            assert f"``{key}``" in doc, f"dataset {name!r}: key {key!r} is not documented"


def test_image_transform_crop_and_flip():
    img = torch.arange(2 * 4 * 4, dtype=torch.uint8).view(2, 4, 4)
    plain = ImageTransform((0.0, 0.0), (1.0, 1.0))
    assert torch.allclose(plain(img), img.float() / 255)
    flip_only = ImageTransform((0.0, 0.0), (1.0, 1.0), flip=True)
    torch.manual_seed(0)
    outs = [flip_only(img) for _ in range(20)]
    assert any(torch.equal(o, img.float().flip(-1) / 255) for o in outs)
    assert all(torch.equal(o, img.float() / 255) or torch.equal(o, img.float().flip(-1) / 255) for o in outs)
    crop = ImageTransform((0.0, 0.0), (1.0, 1.0), padding=1)
    padded = torch.nn.functional.pad(img.float() / 255, (1, 1, 1, 1))
    windows = {(i, j): padded[:, i:i + 4, j:j + 4] for i in range(3) for j in range(3)}
    for _ in range(20):
        out = crop(img)
        assert out.shape == (2, 4, 4) and any(torch.equal(out, w) for w in windows.values())
    assert nasreg_data.__all__  # the package exposes its factories


# --- AutoAugment and shape metadata (for final evaluation) ----------------------------------------


def test_cifar10_autoaugment_train_view(cifar10_root):
    import pickle

    root, _ = cifar10_root
    b = cifar10(root=str(root), autoaugment=True)
    assert b.train.transform.autoaugment is not None and b.train_eval is not None
    assert b.train_eval.transform.autoaugment is None and b.test.transform.autoaugment is None
    torch.manual_seed(0)
    plain = b.train_eval[3][0]
    outs = [b.train[3][0] for _ in range(20)]
    assert all(o.shape == plain.shape and o.dtype == torch.float32 for o in outs)
    assert any(not torch.equal(o, plain) for o in outs)
    pickle.loads(pickle.dumps(b.train))  # DataLoader workers
    # AutoAugment alone (no crop or flip) also gets an augmented view.
    only = cifar10(root=str(root), augment=False, autoaugment=True)
    assert only.train.transform.padding == 0 and not only.train.transform.flip and only.train_eval is not None


def test_image_transform_autoaugment_without_randomness_is_the_plain_transform(monkeypatch):
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    t = ImageTransform((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), autoaugment=True)
    monkeypatch.setattr(t, "autoaugment", lambda x: x)  # the identity policy
    plain = ImageTransform((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(t(img), plain(img))
    assert "autoaugment=True" in repr(ImageTransform((0.0,), (1.0,), autoaugment=True))


def test_registered_shapes_match_the_bundles(cifar10_root):
    from nasreg._core.plugins import load_plugins

    regs = load_plugins().registries
    root, _ = cifar10_root
    for name, keys in (("digits", {}), ("digits", {"size": 12}), ("cifar10", {"root": str(root)})):
        entry = regs.datasets.get(name)
        shape = entry["shape"](**keys) if callable(entry["shape"]) else entry["shape"]
        bundle = entry.factory(**keys)
        assert tuple(bundle.train[0][0].shape) == tuple(shape)
        assert entry["num_classes"] == bundle.num_classes
