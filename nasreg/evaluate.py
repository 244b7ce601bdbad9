"""Final evaluation: train the network a genotype describes from scratch, test it, record it.

One engine serves ``nasreg train GENOTYPE.json`` and the ``[evaluate]`` section of a search spec
(run right after the search on the genotype it found, into ``RUN_DIR/eval/``). It knows no
operation and no space: the genotype's search space builds the network
(:meth:`nasreg.SearchSpace.build_network`), and the loop relies only on this contract:

* ``model(x)`` returns the logits, or ``(logits, auxiliary_logits)`` in training mode when the
  network has an auxiliary head (its loss is added with ``[evaluate] auxiliary_weight``);
* an optional ``auxiliary_head`` attribute (a module) whose parameters are reported separately;
* an optional ``drop_path_prob`` attribute, set before every epoch to
  ``drop_path * epoch / epochs`` (the linear DARTS schedule).

The recipe is :class:`nasreg.spec.EvaluateSection` (defaults: DARTS's CIFAR-10 recipe). A
standalone evaluation spec (``nasreg train --spec``) has the tables ``[run]`` and ``[evaluate]``
(with ``[evaluate.data]``); a search spec is accepted too (its ``[evaluate]``, or the defaults,
on its dataset).

What a training run writes (into its run directory):

``spec.toml``      the resolved evaluation spec (``[run]``, ``[evaluate]``)
``genotype.json``  the genotype trained
``metrics.jsonl``  one line per epoch: lr, drop-path probability, train loss and accuracy, test
                   loss, accuracy and error, epoch and wall seconds, peak memory
``checkpoint.pt``  the last epoch's weights, optimizer and scheduler state
``results.json``   final test error, parameters (with and without the auxiliary head), FLOPs and
                   MACs of one forward pass of one image, wall time, peak memory, search cost (after
                   a search)
``curves.png``     the training curves (a figure that cannot be drawn costs a warning, never the run)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from . import params as P
from . import rundir as rd
from . import spec as spec_mod
from .data import DatasetBundle
from .device_loader import DeviceLoader, build_device_loader, choose
from .errors import DataError, GenotypeError, RegistryError, SpecError
from .genotype import Genotype
from .params import Component
from .plugins import Plugins
from .progress import QuietReporter
from .search import DivergenceError, configure_determinism, peak_memory_mb, pick_device, seed_everything
from .spec import EvaluateSection, RunSection
from .supernet import SearchSpace

RESULTS_FILE = "results.json"
CURVES_FILE = "curves.png"
#: Where ``[evaluate]`` writes inside a search's run directory.
EVAL_DIR = "eval"
#: Tables that make a spec a search spec (an evaluation spec has only [run] and [evaluate]).
SEARCH_TABLES = ("data", "search_space", "search", "strategy", "selector")
EVAL_TABLES = ("run", "evaluate")


# ------------------------------------------------------------------------------------------------
# The evaluation spec


@dataclass
class EvalSpec:
    """What ``nasreg train`` runs: the run settings, the recipe, its dataset and, when the spec
    was a search spec, its search space (whose keys the evaluation network inherits)."""

    path: Path | None
    run: RunSection
    evaluate: EvaluateSection
    dataset: Component
    search_space: Component | None = None

    def resolved(self) -> dict[str, Any]:
        return {"run": dataclasses.asdict(self.run),
                "evaluate": spec_mod.resolved_evaluate(self.evaluate, self.dataset)}

    def digest(self) -> str:
        data = self.resolved()
        data["run"] = {k: v for k, v in data["run"].items() if k not in ("name", "out_dir")}
        blob = json.dumps(spec_mod._drop_none(data), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def is_eval_spec(raw: dict[str, Any]) -> bool:
    """Whether a spec table is an evaluation spec: ``[evaluate]`` without the tables every search
    spec has (``[data]``, ``[search_space]``); its other tables are then checked as such."""
    return "evaluate" in raw and "data" not in raw and "search_space" not in raw


def from_search_spec(spec: spec_mod.Spec, registries: Any) -> EvalSpec:
    """The evaluation a search spec describes (its ``[evaluate]``, or the defaults on its data)."""
    evaluate, dataset = spec.evaluate, spec.eval_dataset
    if evaluate is None or dataset is None:
        data_raw = spec_mod._table(spec.raw, "data", spec.path)
        core = {f.name for f in dataclasses.fields(spec_mod.DataSection)}
        default = {"dataset": spec.data.dataset, **{k: v for k, v in data_raw.items() if k not in core}}
        evaluate, dataset = spec_mod.validate_evaluate({}, spec.path, registries, default)
    return EvalSpec(path=spec.path, run=spec.run, evaluate=evaluate, dataset=dataset,
                    search_space=spec.search_space)


def validate_eval_spec(raw: dict[str, Any], path: Path | None, registries: Any) -> EvalSpec:
    """An evaluation spec: ``[run]`` and ``[evaluate]`` (``[evaluate.data]``) only."""
    shown = path if path is not None else Path("--set")
    unknown = [k for k in raw if k not in EVAL_TABLES]
    if unknown:
        raise SpecError(f"{shown}: unknown table [{unknown[0]}] in an evaluation spec (known: [run], "
                        "[evaluate]; a search spec with [search_space], [strategy], ... is accepted too)")
    run = spec_mod._section(RunSection, spec_mod._table(raw, "run", shown), f"{shown}: [run]")
    evaluate, dataset = spec_mod.validate_evaluate(spec_mod._table(raw, "evaluate", shown), shown, registries)
    return EvalSpec(path=path, run=run, evaluate=evaluate, dataset=dataset)


def load_eval_spec(path: str | Path | None, overrides: Sequence[str] = (),
                   extra_plugins: Sequence[str] = ()) -> tuple[EvalSpec, Plugins]:
    """Read (or, without ``path``, start from the DARTS CIFAR-10 defaults), override, load the
    plugins, validate: ``(EvalSpec, Plugins)``."""
    from .plugins import load_plugins

    path = Path(path) if path is not None else None
    raw = spec_mod.read_toml(path) if path is not None else {}
    raw = spec_mod.apply_overrides(raw, overrides)
    if path is not None and not is_eval_spec(raw) and any(t in raw for t in SEARCH_TABLES):
        spec, plugins = spec_mod.load(path, overrides, extra_plugins)
        espec = from_search_spec(spec, plugins.registries)
        run_table = raw.get("run")
        if not (isinstance(run_table, dict) and run_table.get("name")):
            espec.run = dataclasses.replace(espec.run, name="")  # not the search's file name
        return espec, plugins
    where = path if path is not None else Path("--set")
    requested = spec_mod.plugins_requested(raw, where)
    extra = [str(Path(r).expanduser().resolve()) if spec_mod._is_file_ref(r) else r for r in extra_plugins]
    plugins = load_plugins([*requested, *extra], base_dir=path.parent if path is not None else Path.cwd())
    return validate_eval_spec(raw, path, plugins.registries), plugins


# ------------------------------------------------------------------------------------------------
# Building the network


def space_for(genotype: Genotype, registries: Any, search_space: Component | None = None,
              source: str = "genotype") -> SearchSpace:
    """The search space that builds ``genotype``'s network: ``search_space`` (a spec's) when it is
    the genotype's space, else the genotype's space with its default keys."""
    if search_space is not None and search_space.name == genotype.space:
        return search_space.build()
    try:
        registries.search_spaces.get(genotype.space)
    except RegistryError as exc:
        raise GenotypeError(f"{source}: space: {exc}") from None
    ops = list(dict.fromkeys(e.op for cell in genotype.cells.values() for e in cell.edges))
    component = P.component("search_spaces", {"name": genotype.space, "operations": ops},
                            f"{source}: space {genotype.space!r}", registries)
    return component.build()


def can_build_networks(space: SearchSpace) -> bool:
    return type(space).build_network is not SearchSpace.build_network


def build_network(space: SearchSpace, genotype: Genotype, registries: Any, evaluate: EvaluateSection,
                  shape: tuple[int, int, int], num_classes: int, *, auxiliary: bool | None = None,
                  source: str = "genotype") -> nn.Module:
    """The evaluation network of ``genotype`` for images of ``shape`` (C, H, W)."""
    if not can_build_networks(space):
        raise SpecError(f"{source}: search space {genotype.space!r} cannot build an evaluation network "
                        "(its SearchSpace does not implement build_network)")
    try:
        net = space.build_network(genotype, ops=registries.operations, in_channels=shape[0],
                                  num_classes=num_classes, cells=evaluate.cells, channels=evaluate.channels,
                                  auxiliary=evaluate.auxiliary if auxiliary is None else auxiliary)
    except GenotypeError as exc:
        raise GenotypeError(f"{source}: {exc}") from None
    except RegistryError as exc:
        raise GenotypeError(f"{source}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise GenotypeError(f"{source}: cannot build the {genotype.space!r} network: {exc}") from exc
    if not isinstance(net, nn.Module):
        raise TypeError(f"{type(space).__name__}.build_network returned {type(net).__name__}, not an nn.Module")
    return net


def auxiliary_parameters(model: nn.Module) -> set[int]:
    head = getattr(model, "auxiliary_head", None)
    return {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters without the auxiliary head, parameters with it)."""
    aux = auxiliary_parameters(model)
    total = sum(p.numel() for p in model.parameters())
    return total - sum(p.numel() for p in model.parameters() if id(p) in aux), total


def count_flops(model: nn.Module, shape: tuple[int, int, int], device: torch.device | str = "cpu") -> int:
    """FLOPs of one forward pass of one image in eval mode (torch's FlopCounterMode: convolutions
    and matrix products, 2 FLOPs per multiply-add; BN, activations and pooling are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *shape, device=device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)


def dataset_shape(dataset: Component) -> tuple[tuple[int, int, int], int] | None:
    """``((C, H, W), num_classes)`` from the dataset's registry metadata (no data read), or None."""
    shape, classes = dataset.entry.get("shape"), dataset.entry.get("num_classes")
    if shape is None or classes is None:
        return None
    try:
        if callable(shape):
            shape = shape(**dataset.params)
        c, h, w = (int(v) for v in shape)
    except Exception:  # noqa: BLE001 - unusable metadata: the dataset is built instead
        return None
    return (c, h, w), int(classes)


def bundle_shape(bundle: DatasetBundle) -> tuple[tuple[int, int, int], int]:
    image, _ = (bundle.test or bundle.train)[0]
    return tuple(int(v) for v in image.shape), int(bundle.num_classes)  # type: ignore[return-value]


def describe_network(espec: EvalSpec, plugins: Plugins, genotype: Genotype, source: str) -> dict[str, Any]:
    """The dry run: build the network (with the auxiliary head, to count it), count parameters
    and FLOPs. The image shape comes from the dataset's registry metadata when it declares one,
    else from the built dataset."""
    regs = plugins.registries
    known = dataset_shape(espec.dataset)
    if known is None:
        shape, classes = bundle_shape(espec.dataset.build())
    else:
        shape, classes = known
    space = space_for(genotype, regs, espec.search_space, source)
    net = build_network(space, genotype, regs, espec.evaluate, shape, classes, auxiliary=True, source=source)
    without_aux, with_aux = count_parameters(net)
    flops = count_flops(net, shape)
    return {"genotype": source, "space": genotype.space, "cells": espec.evaluate.cells,
            "channels": espec.evaluate.channels, "dataset": espec.dataset.name, "input_shape": list(shape),
            "num_classes": classes, "params": without_aux, "params_with_auxiliary": with_aux,
            "flops": flops, "macs": flops // 2}


# ------------------------------------------------------------------------------------------------
# Training


def cutout(x: torch.Tensor, length: int) -> torch.Tensor:
    """DARTS's cutout on a batch: per image, zero a ``length`` x ``length`` square (clipped at the
    borders) centred on a uniformly random pixel. Applied to normalized images, as DARTS does."""
    n, _c, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    half = length // 2
    hole = (ys >= cy - half) & (ys < cy + half) & (xs >= cx - half) & (xs < cx + half)
    return x * (~hole).unsqueeze(1).to(x.dtype)


def drop_path_schedule(drop_path: float, epoch: int, epochs: int) -> float:
    """The drop-path probability of ``epoch`` (0-based): linear from 0 towards ``drop_path``."""
    return drop_path * epoch / epochs


@dataclass
class PreparedEval:
    """Everything an evaluation needs that can fail on bad input, built before training starts."""

    spec: EvalSpec
    plugins: Plugins
    device: torch.device
    space: SearchSpace
    bundle: DatasetBundle


def prepare_evaluation(espec: EvalSpec, plugins: Plugins, space: SearchSpace) -> PreparedEval:
    """Pick the device, check the space builds networks, build the dataset and check its test split."""
    where = f"{espec.path}: [evaluate]" if espec.path is not None else "[evaluate]"
    device = pick_device(espec.run.device, f"{espec.path}: [run] device")
    if not can_build_networks(space):
        raise SpecError(f"{where}: search space {type(space).__name__} cannot build an evaluation "
                        "network (its SearchSpace does not implement build_network)")
    bundle: DatasetBundle = espec.dataset.build()
    if bundle.test is None or len(bundle.test) == 0:  # type: ignore[arg-type]
        raise DataError(f"{where}: dataset {espec.dataset.name!r} has no test split to evaluate on "
                        "(for digits: a test_fraction > 0)")
    if espec.evaluate.loader == "device":  # on a dataset that cannot: one line, before training
        for split in (bundle.train, bundle.test):
            choose("device", split, device, where=f"{where} loader", name=espec.dataset.name)
    return PreparedEval(espec, plugins, device, space, bundle)


def _drop_last(n: int, batch_size: int, shuffle: bool) -> bool:
    # a last training batch of one image breaks BatchNorm on 1x1 maps: drop it
    return shuffle and n > batch_size and n % batch_size == 1


def _loader(dataset: Any, ev: EvaluateSection, device: torch.device, shuffle: bool, seed: int,
            on_device: bool = False) -> DataLoader | DeviceLoader:
    """The training (``shuffle``) or test loader: a DataLoader, or with ``on_device`` the device
    loader (the dataset's crop and flip, and cutout, on the device for training; none for test)."""
    n = len(dataset)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    if on_device:
        loader = build_device_loader(dataset, batch_size=ev.batch_size, shuffle=shuffle, generator=generator,
                                     device=device, train=shuffle, drop_last=_drop_last(n, ev.batch_size, shuffle),
                                     cutout=ev.cutout_length if (shuffle and ev.cutout) else 0)
        if loader is None:  # choose() said the dataset supports it
            raise DataError("[evaluate] loader: the dataset cannot be held in memory for the device loader")
        return loader
    return DataLoader(dataset, batch_size=ev.batch_size, shuffle=shuffle, generator=generator,
                      num_workers=ev.num_workers, pin_memory=device.type == "cuda",
                      persistent_workers=ev.num_workers > 0,
                      drop_last=_drop_last(n, ev.batch_size, shuffle))


def _autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast (no loss scaling needed) when ``[evaluate] amp``; else a no-op."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def score(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False
              ) -> tuple[float, float]:
    """Mean loss and accuracy on ``loader`` in eval mode (running BatchNorm statistics, no drop path)."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            out = model(x)
        logits = (out[0] if isinstance(out, tuple) else out).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += y.numel()
    model.train()
    return loss_sum / max(count, 1), correct / max(count, 1)


def run_evaluation(prepared: PreparedEval, genotype: Genotype, run_dir: Path, reporter: Any = None, *,
                   source: str = "genotype", search_cost: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``genotype``'s network as ``prepared`` says, into ``run_dir``; returns the results."""
    threads = torch.get_num_threads()
    try:
        return _run(prepared, genotype, Path(run_dir), reporter or QuietReporter(), source, search_cost)
    finally:
        torch.set_num_threads(threads)


def _run(prepared: PreparedEval, genotype: Genotype, run_dir: Path, reporter: Any, source: str,
         search_cost: dict[str, Any] | None) -> dict[str, Any]:
    espec, device, bundle = prepared.spec, prepared.device, prepared.bundle
    ev, run = espec.evaluate, espec.run
    regs = prepared.plugins.registries
    t_start = time.perf_counter()
    if run.threads:
        torch.set_num_threads(run.threads)
    configure_determinism(run.deterministic, device)
    seed_everything(run.seed)

    shape, num_classes = bundle_shape(bundle)
    model = build_network(prepared.space, genotype, regs, ev, shape, num_classes, source=source)
    params, params_with_aux = count_parameters(model)
    flops = count_flops(model, shape)
    model = model.to(device)

    train_set: Any = bundle.train
    if ev.limit and ev.limit < len(train_set):
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(run.seed))
        train_set = Subset(train_set, order[:ev.limit].tolist())
    where = f"{espec.path}: [evaluate] loader" if espec.path is not None else "[evaluate] loader"
    train_on_device = choose(ev.loader, train_set, device, where=where, name=espec.dataset.name)
    test_on_device = choose(ev.loader, bundle.test, device, where=where, name=espec.dataset.name)
    train_loader = _loader(train_set, ev, device, True, run.seed + 1, on_device=train_on_device)
    test_loader = _loader(bundle.test, ev, device, False, 0, on_device=test_on_device)
    # The device loader cuts out on the device itself; the DataLoader's batches get it below.
    loop_cutout = ev.cutout and not train_on_device

    run_dir.mkdir(parents=True, exist_ok=True)
    rd.write_toml(run_dir / rd.SPEC_FILE, spec_mod._drop_none(espec.resolved()))
    genotype.save(run_dir / rd.GENOTYPE_FILE)
    metrics_path = run_dir / rd.METRICS_FILE

    optimizer = torch.optim.SGD(model.parameters(), lr=ev.lr, momentum=ev.momentum, weight_decay=ev.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=ev.epochs, eta_min=ev.lr_min)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = getattr(reporter, "train_start", None)
    if start is not None:
        start(ev.epochs, len(train_loader), params)

    history: list[dict[str, Any]] = []
    record: dict[str, Any] = {}
    for epoch in range(ev.epochs):
        t_epoch = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        drop_prob = drop_path_schedule(ev.drop_path, epoch, ev.epochs)
        if hasattr(model, "drop_path_prob"):
            model.drop_path_prob = drop_prob
        model.train()
        loss_sum, correct, count = 0.0, 0, 0
        for step, (x, y) in enumerate(train_loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if loop_cutout:
                x = cutout(x, ev.cutout_length)
            with _autocast(device, ev.amp):
                out = model(x)
                logits, aux = out if isinstance(out, tuple) else (out, None)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=ev.label_smoothing)
                if aux is not None and ev.auxiliary:
                    loss = loss + ev.auxiliary_weight * F.cross_entropy(aux.float(), y,
                                                                        label_smoothing=ev.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if ev.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), ev.grad_clip)
            optimizer.step()
            value = loss.detach().item()
            if value != value or value in (float("inf"), float("-inf")):
                raise DivergenceError(f"training diverged: loss is {value} at epoch {epoch}, step {step} "
                                      f"(last checkpoint: {run_dir / rd.CHECKPOINT_FILE}); try a lower "
                                      "[evaluate] lr")
            loss_sum += value * y.numel()
            correct += int((logits.argmax(1) == y).sum())
            count += y.numel()
            reporter.step(step + 1, {"train_loss": value})
        scheduler.step()
        test_loss, test_acc = score(model, test_loader, device, ev.amp)
        record = {
            "epoch": epoch, "lr": lr, "drop_path_prob": drop_prob,
            "train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1),
            "test_loss": test_loss, "test_acc": test_acc, "test_error": 1.0 - test_acc,
            "epoch_seconds": time.perf_counter() - t_epoch, "wall_seconds": time.perf_counter() - t_start,
            "peak_memory_mb": peak_memory_mb(device),
        }
        history.append(record)
        rd.append_jsonl(metrics_path, record)
        reporter.epoch_end(record)
        _save_checkpoint(run_dir, epoch, model, optimizer, scheduler)

    results: dict[str, Any] = {
        "kind": "train", "name": run.name, "run_dir": str(run_dir), "genotype_source": source,
        "spec_hash": espec.digest(), "dataset": espec.dataset.name, "device": str(device),
        "seed": run.seed, "epochs": ev.epochs, "loader": "device" if train_on_device else "dataloader",
        "test_acc": record.get("test_acc"), "test_error": record.get("test_error"),
        "test_error_percent": 100.0 * record["test_error"] if record else None,
        "test_loss": record.get("test_loss"), "train_acc": record.get("train_acc"),
        "params": params, "params_with_auxiliary": params_with_aux if params_with_aux != params else None,
        "flops": flops, "macs": flops // 2, "input_shape": list(shape), "num_classes": num_classes,
        "cells": ev.cells, "channels": ev.channels,
        "wall_seconds": time.perf_counter() - t_start, "peak_memory_mb": peak_memory_mb(device),
        "genotype": genotype.to_dict(),
    }
    if search_cost is not None:
        results["search_cost"] = search_cost
    rd.write_json(run_dir / RESULTS_FILE, results)
    plot_curves(history, run_dir / CURVES_FILE, warn=getattr(reporter, "message", print))
    return results


def _save_checkpoint(run_dir: Path, epoch: int, model: nn.Module, optimizer: Any, scheduler: Any) -> None:
    buf = io.BytesIO()
    torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict()}, buf)
    rd.atomic_write_bytes(run_dir / rd.CHECKPOINT_FILE, buf.getvalue())


def search_cost(summary: dict[str, Any]) -> dict[str, Any]:
    """What the search that found the genotype cost (for ``results.json``)."""
    seconds = float(summary.get("wall_seconds", 0.0))
    gpu = str(summary.get("device", "")).startswith("cuda")
    return {"run_dir": summary.get("run_dir"), "wall_seconds": seconds, "device": summary.get("device"),
            "gpu_days": seconds / 86400 if gpu else None}


def plot_curves(history: list[dict[str, Any]], path: Path, warn: Any = print) -> bool:
    """Accuracy and loss per epoch (train and test) into ``path``; a failure is one warning line."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9, 3.5))
        FigureCanvasAgg(fig)
        epochs = [h["epoch"] + 1 for h in history]
        ax_acc, ax_loss = fig.subplots(1, 2)
        for key, label in (("train_acc", "train"), ("test_acc", "test")):
            ax_acc.plot(epochs, [h[key] for h in history], marker="." if len(epochs) < 30 else None, label=label)
        for key, label in (("train_loss", "train"), ("test_loss", "test")):
            ax_loss.plot(epochs, [h[key] for h in history], marker="." if len(epochs) < 30 else None, label=label)
        ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
        ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
        for ax in (ax_acc, ax_loss):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return True
    except Exception as exc:  # noqa: BLE001 - a figure never fails a run
        warn(f"warning: could not write {path.name}: {type(exc).__name__}: {exc}")
        return False
