"""The device loader (nasreg/_core/device_loader.py) on the CPU, on tiny data.

Its batches are checked against a plain per-image implementation of the same crop, flip,
normalization and cutout (with the parameters the loader drew, read back through its private
``_draw``), against the data plugin's own per-item transform, and for reproducibility from the
generator state, distributed slicing, Subsets, digits and CIFAR-format files; then the
``loader`` keys of the spec and a tiny ``nasreg train`` with ``[evaluate] loader = "device"``.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch.utils.data import Subset

from nasreg import MemoryView, SpecError
from nasreg._core import spec as S
from nasreg._core.device_loader import (DeviceLoader, build_device_loader, choose, estimate_bytes, memory_view_of,
                                  supported)

from nasreg_data import cifar10, digits, image_folder

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


# --- helpers ------------------------------------------------------------------------------------

def _view(n=23, c=3, h=6, w=5, padding=2, flip=True, dtype=torch.uint8, seed=0) -> MemoryView:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        images = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    else:
        images = torch.randn(n, c, h, w, generator=g)
    targets = torch.randint(0, 10, (n,), generator=g)
    return MemoryView(images, targets, mean=tuple(0.1 * (i + 1) for i in range(c)),
                      std=tuple(0.2 + 0.1 * i for i in range(c)), padding=padding, flip=flip)


def _loader(view, seed=1, **kw) -> DeviceLoader:
    kw = {"batch_size": 7, "shuffle": True, "device": "cpu", "train": True, **kw}
    return DeviceLoader(view, generator=torch.Generator().manual_seed(seed), **kw)


def _stream(loader, passes=1):
    return [(x.clone(), y.clone()) for _ in range(passes) for x, y in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def _reference_image(image, view, offset, flip, centre, cutout):
    """One image, the plain way: scale, zero-pad, crop at ``offset``, flip, normalize, cut out."""
    c, h, w = image.shape
    x = image.to(torch.float32)
    if image.dtype == torch.uint8:
        x = x / 255.0
    if offset is not None:
        p = view.padding
        x = F.pad(x, (p, p, p, p))[:, offset[0]:offset[0] + h, offset[1]:offset[1] + w]
    if flip:
        x = x.flip(-1)
    mean = torch.tensor(view.mean, dtype=torch.float32).expand(c).view(c, 1, 1)
    std = torch.tensor(view.std, dtype=torch.float32).expand(c).view(c, 1, 1)
    x = (x - mean) / std
    if centre is not None:
        half = cutout // 2
        y0, y1 = max(0, centre[0] - half), min(h, centre[0] + half)
        x0, x1 = max(0, centre[1] - half), min(w, centre[1] + half)
        x = x.clone()
        x[:, y0:y1, x0:x1] = 0.0
    return x


def _reference_stream(loader: DeviceLoader, view: MemoryView, state, indices=None):
    """The pass ``loader`` makes from generator ``state``, image by image."""
    loader.generator.set_state(state)
    drawn = loader._draw()
    images = view.images if indices is None else view.images[torch.as_tensor(indices)]
    targets = view.targets if indices is None else view.targets[torch.as_tensor(indices)]
    out = []
    for start, size in loader._global_batches():
        chunk = size // loader.world_size
        positions = range(start + loader.rank * chunk, start + (loader.rank + 1) * chunk)
        xs, ys = [], []
        for pos in positions:
            i = int(drawn["order"][pos])
            xs.append(_reference_image(
                images[i], view,
                drawn["offsets"][pos].tolist() if "offsets" in drawn else None,
                bool(drawn["flips"][pos]) if "flips" in drawn else False,
                drawn["centres"][pos].tolist() if "centres" in drawn else None, loader.cutout))
            ys.append(int(targets[i]))
        out.append((torch.stack(xs), torch.tensor(ys)))
    return out


def _close(a, b) -> bool:
    return len(a) == len(b) and all(torch.allclose(x1, x2, atol=1e-5) and torch.equal(y1, y2)
                                    for (x1, y1), (x2, y2) in zip(a, b))


# --- semantics ----------------------------------------------------------------------------------

@pytest.mark.parametrize("padding, flip, cutout", [(2, True, 3), (0, True, 0), (3, False, 0), (0, False, 4),
                                                   (1, True, 1)])
def test_batches_match_a_per_image_reference(padding, flip, cutout):
    view = _view(padding=padding, flip=flip)
    loader = _loader(view, cutout=cutout)
    state = loader.generator.get_state()
    got = _stream(loader)
    assert [len(y) for _, y in got] == [7, 7, 7, 2] and len(loader) == 4
    for x, y in got:
        assert x.dtype == torch.float32 and x.is_contiguous() and x.shape[1:] == (3, 6, 5)
        assert y.dtype == torch.int64
    assert _close(got, _reference_stream(loader, view, state))


def test_float_images_and_a_single_mean():
    view = MemoryView(torch.randn(9, 2, 4, 4), torch.arange(9), mean=(0.5,), std=(2.0,), padding=1, flip=True)
    loader = _loader(view, batch_size=4, cutout=2)
    state = loader.generator.get_state()
    assert _close(_stream(loader), _reference_stream(loader, view, state))


def test_padding_crops_every_offset_and_flip_is_a_coin():
    """Distributional sanity: over many images every crop offset and both flips occur."""
    view = _view(n=400, padding=2)
    drawn = _loader(view)._draw()
    assert set(map(tuple, drawn["offsets"].tolist())) == {(i, j) for i in range(5) for j in range(5)}
    assert 120 < int(drawn["flips"].sum()) < 280
    assert sorted(drawn["order"].tolist()) == list(range(400))


def test_train_false_never_augments_and_keeps_the_order():
    view = _view(padding=2, flip=True)
    loader = DeviceLoader(view, batch_size=5, shuffle=False, generator=None, device="cpu", train=False, cutout=3)
    got = _stream(loader)
    assert loader.cutout == 0 and loader.padding == 0 and not loader.flip
    expected = [(_reference_image(view.images[i], view, None, False, None, 0), int(view.targets[i]))
                for i in range(len(view.images))]
    flat = [(x[k], int(y[k])) for x, y in got for k in range(len(y))]
    assert len(flat) == len(expected)
    assert all(torch.allclose(a, b, atol=1e-5) and la == lb for (a, la), (b, lb) in zip(flat, expected))


# --- reproducibility ----------------------------------------------------------------------------

def test_same_generator_state_same_stream():
    view = _view()
    a, b = _loader(view, seed=5, cutout=2), _loader(view, seed=5, cutout=2)
    assert _same(_stream(a, 3), _stream(b, 3))
    assert not _same(_stream(_loader(view, seed=5, cutout=2), 1), _stream(_loader(view, seed=6, cutout=2), 1))


def test_generator_state_taken_mid_stream_reproduces_what_follows():
    view = _view()
    whole = _loader(view, cutout=2)
    first, rest = _stream(whole, 1), _stream(whole, 2)
    # A second loader stops after two batches of the first pass, as a checkpoint would, and a
    # third, fresh one continues from the state taken there.
    stopped = _loader(view, cutout=2)
    it = iter(stopped)
    assert _same([next(it), next(it)], first[:2])
    state = stopped.generator.get_state()
    resumed = _loader(view, seed=999, cutout=2)
    resumed.generator.set_state(state)
    assert _same(_stream(resumed, 2), rest)
    # set_state back to a pass's start replays that pass.
    replay = _loader(view, cutout=2)
    start = replay.generator.get_state()
    once = _stream(replay, 1)
    replay.generator.set_state(start)
    assert _same(_stream(replay, 1), once) and _same(once, first)


def test_global_generator_when_none():
    view = _view()
    loader = DeviceLoader(view, batch_size=7, shuffle=True, generator=None, device="cpu", train=True)
    torch.manual_seed(3)
    a = _stream(loader)
    torch.manual_seed(3)
    assert _same(a, _stream(loader))


# --- sizes and distributed slicing ----------------------------------------------------------------

def test_drop_last_and_len():
    view = _view(n=23)
    assert len(_loader(view, batch_size=7)) == 4
    loader = _loader(view, batch_size=7, drop_last=True)
    assert len(loader) == 3 and [len(y) for _, y in loader] == [7, 7, 7]
    assert len(_loader(view, batch_size=23)) == 1 and len(_loader(view, batch_size=100, drop_last=True)) == 0
    assert list(_loader(view, batch_size=100, drop_last=True)) == []


@pytest.mark.parametrize("n, batch_size", [(23, 7), (22, 8), (15, 7)])
def test_two_ranks_split_each_global_batch(n, batch_size):
    view = _view(n=n)
    single = _stream(_loader(view, batch_size=batch_size, cutout=2))
    ranks = [_stream(_loader(view, batch_size=batch_size, cutout=2, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(_loader(view, batch_size=batch_size, rank=1, world_size=2))
    trimmed = [(x[:len(y) // 2 * 2], y[:len(y) // 2 * 2]) for x, y in single]
    trimmed = [(x, y) for x, y in trimmed if len(y)]
    assert len(trimmed) == len(ranks[0])
    for (x, y), (x0, y0), (x1, y1) in zip(trimmed, ranks[0], ranks[1]):
        assert len(y0) == len(y1) == len(y) // 2
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_world_size_one_trims_nothing_and_bad_ranks_are_refused():
    view = _view(n=23)
    assert sum(len(y) for _, y in _loader(view, batch_size=7)) == 23
    with pytest.raises(ValueError):
        _loader(view, rank=2, world_size=2)
    with pytest.raises(ValueError):
        _loader(view, batch_size=1, world_size=2)


# --- datasets -----------------------------------------------------------------------------------

def test_digits_float_through_nested_subsets():
    bundle = digits()
    inner = Subset(bundle.train, list(range(100, 300)))
    outer = Subset(inner, [5, 0, 199, 17, 42, 3, 8])
    loader = build_device_loader(outer, batch_size=3, shuffle=False, generator=None, device="cpu", train=True)
    assert loader is not None and not loader.uint8 and loader.num_samples == 7
    x = torch.cat([b for b, _ in loader])
    y = torch.cat([t for _, t in loader])
    expected = [outer[i] for i in range(len(outer))]
    assert torch.allclose(x, torch.stack([e[0] for e in expected]), atol=1e-6)
    assert y.tolist() == [e[1] for e in expected]
    # the rows used are what reaches the device, not the whole split
    assert loader.images.shape[0] == 7
    assert estimate_bytes(outer) == 7 * (64 * 4 + 8 + 48)
    assert estimate_bytes(bundle.train) == len(bundle.train) * (64 * 4 + 8 + 48)


def test_digits_shuffled_epoch_is_a_permutation_of_the_items():
    bundle = digits()
    sub = Subset(bundle.train, list(range(50)))
    loader = build_device_loader(sub, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0),
                                 device="cpu", train=True)
    state = loader.generator.get_state()
    got = torch.cat([y for _, y in loader])
    loader.generator.set_state(state)
    order = loader._draw()["order"]
    assert got.tolist() == [sub[int(i)][1] for i in order]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """A tiny CIFAR-10 in its real on-disk format (5 train batches of 3, a test batch of 4)."""
    tv = pytest.importorskip("torchvision.datasets")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def dump(name, obj):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    for i in range(1, 6):
        dump(f"data_batch_{i}", {"batch_label": "b", "labels": [int(v) for v in rng.integers(0, 10, 3)],
                                 "data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                                 "filenames": [f"{i}_{k}.png" for k in range(3)]})
    dump("test_batch", {"batch_label": "t", "labels": [int(v) for v in rng.integers(0, 10, 4)],
                        "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                        "filenames": [f"t{k}.png" for k in range(4)]})
    dump("batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": 3, "num_vis": 3072})
    cls = tv.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})
    return tmp_path


def test_cifar_uint8_matches_the_plugins_transform(cifar_root):
    bundle = cifar10(root=str(cifar_root))
    view, _, _ = memory_view_of(bundle.train)
    assert view.images.dtype == torch.uint8 and view.padding == 4 and view.flip
    # Unaugmented: exactly the plugin's own items (scaling and normalization).
    for ds in (bundle.test, bundle.train_eval):
        loader = build_device_loader(ds, batch_size=4, shuffle=False, generator=None, device="cpu", train=False)
        assert loader.uint8 and loader.images.dtype == torch.uint8
        x = torch.cat([b for b, _ in loader])
        assert torch.allclose(x, torch.stack([ds[i][0] for i in range(len(ds))]), atol=1e-5)
    # Augmented (train half of a split, as the search makes it): the per-image reference.
    sub = Subset(bundle.train, [14, 2, 9, 0, 11, 5, 7])
    loader = build_device_loader(sub, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(2),
                                 device="cpu", train=True, cutout=16)
    state = loader.generator.get_state()
    got = _stream(loader)
    assert _close(got, _reference_stream(loader, view, state, indices=sub.indices))
    # The crop pads with zeros before normalization, as the plugin does: a crop at offset (0, 0)
    # has the normalized value of a black pixel in its first row.
    loader.generator.set_state(state)
    drawn = loader._draw()
    black = -torch.tensor(view.mean) / torch.tensor(view.std)
    for k in range(3):
        if tuple(drawn["offsets"][k].tolist()) == (0, 0):
            row = got[0][0][k, :, 0, 2:30]
            assert torch.allclose(row, black.view(3, 1).expand_as(row), atol=1e-5)


def test_autoaugment_and_image_folder_are_not_served(cifar_root, tmp_path):
    bundle = cifar10(root=str(cifar_root), autoaugment=True)
    assert build_device_loader(bundle.train, batch_size=2, shuffle=True, generator=None, device="cpu",
                               train=True) is None
    assert estimate_bytes(bundle.train) is None and not supported(Subset(bundle.train, [0, 1]))
    assert supported(bundle.train_eval) and supported(bundle.test)  # those have the plain transform
    folder = _image_folder(tmp_path / "images")
    b = image_folder(root=str(folder), image_size=4)
    assert build_device_loader(b.train, batch_size=2, shuffle=False, generator=None, device="cpu",
                               train=False) is None
    assert not supported(object()) and estimate_bytes([1, 2, 3]) is None


def _image_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB").save(root / cls / f"{k}.png")
    return root


# --- choosing the loader ------------------------------------------------------------------------

def test_choose(tmp_path):
    bundle = digits()
    cpu = torch.device("cpu")
    assert choose("device", bundle.train, cpu) is True
    assert choose("auto", bundle.train, cpu) is False  # auto: CUDA only
    assert choose("dataloader", bundle.train, cpu) is False
    b = image_folder(root=str(_image_folder(tmp_path / "images")), image_size=4)
    assert choose("auto", b.train, cpu) is False and choose("dataloader", b.train, cpu) is False
    with pytest.raises(SpecError) as exc:
        choose("device", Subset(b.train, [0, 1]), cpu, where="x.toml: [data] loader", name="image_folder")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("x.toml: [data] loader:") and "'image_folder'" in msg
    with pytest.raises(SpecError, match=r"\[data\] loader"):
        choose("gpu", bundle.train, cpu)


def test_loader_keys_in_the_spec(tmp_path):
    from nasreg._core.plugins import load_plugins

    regs = load_plugins([]).registries
    raw = S.read_toml(ROOT / "specs" / "quickstart.toml")
    spec = S.validate(raw, ROOT / "specs" / "quickstart.toml", regs)
    assert spec.data.loader == "auto" and spec.resolved()["data"]["loader"] == "auto"
    assert "loader" not in spec.dataset.params  # a core key, not the dataset's
    raw = S.apply_overrides(raw, ["data.loader=device", "evaluate.loader=dataloader"])
    spec = S.validate(raw, ROOT / "specs" / "quickstart.toml", regs)
    assert spec.data.loader == "device" and spec.evaluate.loader == "dataloader"
    for key in ("data.loader=gpu", "evaluate.loader=gpu"):
        with pytest.raises(SpecError) as exc:
            S.validate(S.apply_overrides(raw, [key]), ROOT / "specs" / "quickstart.toml", regs)
        assert "loader" in str(exc.value) and "\n" not in str(exc.value)


# --- through `nasreg train` ---------------------------------------------------------------------

TINY_TRAIN = ["evaluate.data.dataset=digits", "evaluate.epochs=1", "evaluate.cells=2", "evaluate.channels=4",
              "evaluate.limit=64", "evaluate.batch_size=32", "run.device=cpu", "run.threads=1"]


def _train(*args, sets):
    from nasreg.cli import main

    argv = [str(a) for a in args]
    for s in sets:
        argv += ["--set", s]
    return CliRunner().invoke(main, argv, env={"COLUMNS": "200"})


def test_train_with_the_device_loader_writes_results(tmp_path):
    out = tmp_path / "train"
    result = _train("train", ROOT / "genotypes" / "darts_v2.json", "--out", out, "-q",
                    sets=[*TINY_TRAIN, "evaluate.loader=device", "evaluate.cutout=true", "evaluate.cutout_length=4"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["loader"] == "device" and 0.0 <= results["test_acc"] <= 1.0
    assert (out / "metrics.jsonl").read_text().count("\n") == 1


def test_train_device_loader_on_image_folder_is_a_one_line_error(tmp_path):
    folder = _image_folder(tmp_path / "images")
    result = _train("train", ROOT / "genotypes" / "darts_v2.json", "--out", tmp_path / "t", "-q",
                    sets=[*TINY_TRAIN, "evaluate.data.dataset=image_folder", f"evaluate.data.root={folder}",
                          f"evaluate.data.test_root={folder}", "evaluate.data.image_size=4",
                          "evaluate.loader=device"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "[evaluate] loader" in lines[0] and "image_folder" in lines[0], lines
    assert not (tmp_path / "t").exists()
