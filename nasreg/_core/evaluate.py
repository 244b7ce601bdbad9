"""Final evaluation: train the network a genotype describes from scratch, test it, record it.

One evaluation serves ``nasreg train GENOTYPE.json`` and the ``[evaluate]`` section of a search
spec (run right after the search on the genotype it found, into ``RUN_DIR/eval/``). It knows no
operation and no space: the genotype's search space builds the network
(:meth:`nasreg.SearchSpace.build_network`), the training engine :class:`nasreg.Trainer` trains it
(with :func:`eval_recipe`, the recipe below), and a callback records every epoch and fires the
``on_train_start`` / ``on_train_epoch_end`` / ``on_train_end`` hooks (``run``: a
:class:`TrainRun`). The loop relies only on this contract:

* ``model(x)`` returns the logits, or ``(logits, auxiliary_logits)`` in training mode when the
  network has an auxiliary head (its loss is then added, weighted by ``[evaluate] auxiliary_weight``);
* an optional ``auxiliary_head`` attribute (a module) whose parameters are reported separately;
* an optional ``drop_path_prob`` attribute, set before every epoch to
  ``drop_path * epoch / epochs`` (a linear schedule).

The recipe is :class:`nasreg._core.spec.EvaluateSection`; the other ``[evaluate]`` keys are the
evaluation network's, declared by the genotype's search space (``network_keys`` registry
metadata) and passed to its ``build_network``; the space's ``evaluation_defaults`` fill what the
spec leaves out (see :mod:`nasreg._core.evalspec`). A standalone evaluation spec (``nasreg train
--spec``) has the tables ``[run]`` and ``[evaluate]`` (with ``[evaluate.data]``); a search spec is
accepted too (its ``[evaluate]``, or its space's defaults, on its dataset).

What a training run writes (into its run directory):

``spec.toml``      the resolved evaluation spec (``[run]``, ``[evaluate]``)
``genotype.json``  the genotype trained
``metrics.jsonl``  one line per epoch: lr, drop-path probability, train loss and accuracy, test
                   loss, accuracy and error, epoch and wall seconds, peak memory
``checkpoint.pt``  at every epoch end and at a stop: the weights, optimizer and scheduler states,
                   the position (epoch, step), the data order, every RNG state and the metrics so
                   far; ``run_evaluation(..., resume=True)`` continues from it exactly
``weights.pt``     the final weights: the network's state dict (CPU tensors), written after the
                   last epoch, before ``results.json`` (``nasreg export`` reads it)
``results.json``   final test error, parameters (with and without the auxiliary head), FLOPs and
                   MACs of one forward pass of one image, the network's keys (``network``), wall
                   time, peak memory, search cost (after a search)
``curves.png``     the training curves (a figure that cannot be drawn costs a warning, never the run)

Ctrl-C or SIGTERM during the training stops it between two steps (:mod:`nasreg._core.stop`): a
checkpoint of that exact step, then :class:`nasreg.Interrupted` (exit status 130) naming how to
continue. Nothing in the run directory is written before every check has passed: the files are
(re)written once the network, the loaders and (resuming) the checkpoint have all been accepted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from . import params as P
from . import spec as spec_mod
from .executor import run_threads
from .data import DatasetBundle
from .device_loader import DeviceLoader, build_device_loader, choose
from .errors import DataError, GenotypeError, Interrupted, RegistryError, SpecError
from .figures import draw_guarded, new_figure
from .genotype import Genotype
from .loggers import attached as attached_loggers
from .params import Component
from .plugins import Plugins
from .progress import QuietReporter
from .run import RunBase
from .rundir import CURVES_FILE, EVAL_DIR, METRICS_FILE, RESULTS_FILE, SPEC_FILE, CheckpointError, RunDir
from .search import DivergenceError, configure_determinism, notify, peak_memory_mb, pick_device
from .stop import StopRequests
from .spec import EvaluateSection, RunSection
from .supernet import SearchSpace
from .export import write_weights
from .evalspec import EVAL_TABLES, SEARCH_TABLES, EvalSpec, from_search_spec, is_eval_spec, load_eval_spec, validate_eval_spec
from .trainer import (EpochStats, ResumeError, Trainer, TrainRecipe, cutout, drop_path_schedule, resume_position,
                      score, seed_everything)

__all__ = ["CURVES_FILE", "DivergenceError", "EVAL_DIR", "EvalSpec", "PreparedEval", "RESULTS_FILE", "TrainRun",
           "cutout", "describe_network", "drop_path_schedule", "eval_recipe", "from_search_spec", "is_eval_spec",
           "load_eval_spec", "prepare_evaluation", "run_evaluation", "score", "search_cost", "space_for"]
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


def build_network(space: SearchSpace, genotype: Genotype, registries: Any, keys: Mapping[str, Any] | None,
                  shape: tuple[int, int, int], num_classes: int, *, source: str = "genotype") -> nn.Module:
    """The evaluation network of ``genotype`` for images of ``shape`` (C, H, W); ``keys``: the
    network's keys, as bound to the space's ``network_keys`` (an :class:`EvalSpec`'s ``network``)."""
    if not can_build_networks(space):
        raise SpecError(f"{source}: search space {genotype.space!r} cannot build an evaluation network "
                        "(its SearchSpace does not implement build_network)")
    try:
        net = space.build_network(genotype, ops=registries.operations, in_channels=shape[0],
                                  num_classes=num_classes, **dict(keys or {}))
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
    """The dry run: build the network as ``[evaluate]`` says, count its parameters (with and
    without the auxiliary head, when it has one) and FLOPs. The image shape comes from the
    dataset's registry metadata when it declares one, else from the built dataset."""
    regs = plugins.registries
    space = space_for(genotype, regs, espec.search_space, source)
    espec.bind(genotype.space, regs)
    assert espec.dataset is not None
    known = dataset_shape(espec.dataset)
    if known is None:
        shape, classes = bundle_shape(espec.dataset.build())
    else:
        shape, classes = known
    net = build_network(space, genotype, regs, espec.network, shape, classes, source=source)
    without_aux, with_aux = count_parameters(net)
    flops = count_flops(net, shape)
    return {"genotype": source, "space": genotype.space, "network": network_record(espec.network),
            "dataset": espec.dataset.name, "input_shape": list(shape), "num_classes": classes,
            "params": without_aux, "params_with_auxiliary": with_aux if has_auxiliary_head(net) else None,
            "flops": flops, "macs": flops // 2}


def has_auxiliary_head(model: nn.Module) -> bool:
    return isinstance(getattr(model, "auxiliary_head", None), nn.Module)


def network_record(keys: Mapping[str, Any] | None) -> dict[str, Any]:
    """The network's keys as ``results.json`` and the dry run record them (unset ones left out)."""
    return {k: P.to_spec_value(v) for k, v in (keys or {}).items() if v is not None}


# ------------------------------------------------------------------------------------------------
# Training


@dataclass
class PreparedEval:
    """Everything an evaluation needs that can fail on bad input, built before training starts."""

    spec: EvalSpec
    plugins: Plugins
    device: torch.device
    space: SearchSpace
    bundle: DatasetBundle


@dataclass
class TrainRun(RunBase):
    """The run context of a training from scratch, what the ``on_train_*`` hooks get as ``run``.

    ``kind`` is ``"evaluate"`` (a search's ``[evaluate]``, into ``RUN_DIR/eval/``) or ``"train"``
    (``nasreg train``); ``spec`` the :class:`EvalSpec` (``spec.run``, ``spec.evaluate``,
    ``spec.dataset``); ``run_dir`` the folder written (``files``: the same as a
    :class:`nasreg.RunDir`); ``genotype`` the genotype trained and ``source`` where it came from;
    ``extras`` a free-form store for plugins (keyed by plugin name).
    """

    kind: str
    spec: EvalSpec
    plugins: Plugins
    run_dir: Path
    device: torch.device
    genotype: Genotype
    source: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> RunDir:
        return RunDir(self.run_dir)


def prepare_evaluation(espec: EvalSpec, plugins: Plugins, space: SearchSpace, *,
                       space_name: str | None = None, genotype: Genotype | None = None) -> PreparedEval:
    """Resolve ``[evaluate]`` for ``space``, registered as ``space_name`` (a genotype's
    ``genotype.space``, its space built by :func:`space_for`; default: the space the spec is
    bound to, or a search spec's own), pick the device, check the space builds networks, build
    the dataset and check its test split; with the ``genotype`` to train, also that its network
    can train on batches of the sizes ``[evaluate]`` makes (see :func:`_check_batches`)."""
    where = f"{espec.path}: [evaluate]" if espec.path is not None else "[evaluate]"
    name = space_name or espec.space or (espec.search_space.name if espec.search_space is not None else None)
    if name is None:
        raise SpecError(f"{where}: cannot tell which search space {type(space).__name__} is "
                        "(pass space_name=genotype.space)")
    espec.bind(name, plugins.registries)
    assert espec.dataset is not None and espec.evaluate is not None
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
    prepared = PreparedEval(espec, plugins, device, space, bundle)
    if genotype is not None:
        shape, classes = bundle_shape(bundle)
        _check_batches(prepared, shape, lambda: build_network(space, genotype, plugins.registries, espec.network,
                                                              shape, classes))
    return prepared


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


def _loaders(prepared: PreparedEval) -> tuple[Any, Any, bool]:
    """``(train loader, test loader, whether training batches are made on the device)``."""
    espec, device, bundle = prepared.spec, prepared.device, prepared.bundle
    ev, seed = espec.evaluate, espec.run.seed
    train_set: Any = bundle.train
    if ev.limit and ev.limit < len(train_set):
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
        train_set = Subset(train_set, order[:ev.limit].tolist())
    where = f"{espec.path}: [evaluate] loader" if espec.path is not None else "[evaluate] loader"
    train_on_device = choose(ev.loader, train_set, device, where=where, name=espec.dataset.name)
    test_on_device = choose(ev.loader, bundle.test, device, where=where, name=espec.dataset.name)
    train_loader = _loader(train_set, ev, device, True, seed + 1, on_device=train_on_device)
    test_loader = _loader(bundle.test, ev, device, False, 0, on_device=test_on_device)
    return train_loader, test_loader, train_on_device


def eval_recipe(ev: EvaluateSection, train_on_device: bool = False, checkpoint: Path | None = None) -> TrainRecipe:
    """The engine's recipe of ``[evaluate]`` (cutout in the loop unless the device loader makes it)."""
    where = f" (last checkpoint: {checkpoint})" if checkpoint is not None else ""
    return TrainRecipe(
        epochs=ev.epochs, lr=ev.lr, momentum=ev.momentum, weight_decay=ev.weight_decay, grad_clip=ev.grad_clip,
        lr_min=ev.lr_min, schedule="epoch", label_smoothing=ev.label_smoothing,
        auxiliary_weight=ev.auxiliary_weight or None, drop_path=ev.drop_path,
        cutout_length=ev.cutout_length if ev.cutout and not train_on_device else 0, amp=ev.amp,
        batch_norm="running", test="epoch", on_divergence="raise",
        divergence_hint=f"{where}; try a lower [evaluate] lr")


def run_evaluation(prepared: PreparedEval, genotype: Genotype, run_dir: Path, reporter: Any = None, *,
                   source: str = "genotype", search_cost: dict[str, Any] | None = None,
                   kind: str | None = None, resume: bool = False, continue_with: str | None = None,
                   notice: str | None = None) -> dict[str, Any]:
    """Train ``genotype``'s network as ``prepared`` says, into ``run_dir``; returns the results.

    ``kind`` (for the ``on_train_*`` hooks): ``"evaluate"`` after a search, ``"train"`` otherwise
    (default: ``"evaluate"`` when a ``search_cost`` is given). With ``resume`` a checkpoint in
    ``run_dir`` is continued from exactly (one of another spec or genotype, or damaged, is a
    one-line :class:`nasreg.CheckpointError` before anything is written); without one the
    training starts afresh. Ctrl-C / SIGTERM stop it between two steps with a checkpoint:
    :class:`nasreg.Interrupted`, whose message ends with ``continue with: {continue_with}``
    when given. ``notice``: a line for ``reporter.message`` once every check has passed (so that
    a refusal stays the only line)."""
    threads = torch.get_num_threads()
    kind = kind or ("evaluate" if search_cost is not None else "train")
    try:
        with StopRequests() as stop, attached_loggers(prepared.plugins, prepared.spec.loggers, reporter):
            return _run(prepared, genotype, Path(run_dir), reporter or QuietReporter(), source, search_cost,
                        kind, stop, resume, notice)
    except Interrupted as exc:
        then = f"continue with: {continue_with}" if continue_with else f"the checkpoint: {RunDir(run_dir).checkpoint}"
        raise Interrupted(f"{exc}; checkpoint written; {then}") from None
    finally:
        torch.set_num_threads(threads)


def _run(prepared: PreparedEval, genotype: Genotype, run_dir: Path, reporter: Any, source: str,
         search_cost: dict[str, Any] | None, kind: str, stop: StopRequests, resume: bool,
         notice: str | None) -> dict[str, Any]:
    espec, device = prepared.spec, prepared.device
    t_start = time.perf_counter()
    torch.set_num_threads(run_threads(espec.run.threads))  # 0: the free cores
    configure_determinism(espec.run.deterministic, device)
    seed_everything(espec.run.seed)

    shape, num_classes = bundle_shape(prepared.bundle)
    model = build_network(prepared.space, genotype, prepared.plugins.registries, espec.network, shape,
                          num_classes, source=source)
    params, params_with_aux = count_parameters(model)
    flops = count_flops(model, shape)
    model = model.to(device)
    train_loader, test_loader, train_on_device = _loaders(prepared)
    _check_batches(prepared, shape, lambda: model)
    files = RunDir(run_dir)
    point = _resume_point(files, espec, genotype) if resume else None

    run = TrainRun(kind, espec, prepared.plugins, run_dir, device, genotype, source)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    recorder = _Recorder(run, reporter, t_start, params, point, notice)
    trainer = Trainer(model, eval_recipe(espec.evaluate, train_on_device, files.checkpoint), device,
                      reporter=reporter, callbacks=[recorder], stop=stop)
    try:
        trainer.fit(train_loader, test_loader, resume=point)
    except ResumeError as exc:  # raised before on_train_start: nothing written yet
        raise CheckpointError(f"{files.checkpoint}: {exc}; delete it to train from the start") from None

    write_weights(files, model)  # weights.pt: the final weights, before results.json (nasreg export reads them)
    record = recorder.history[-1] if recorder.history else {}
    results = _results(run, record, recorder.t_start, search_cost, loader="device" if train_on_device else "dataloader",
                       params=params, params_with_aux=params_with_aux, flops=flops, shape=shape,
                       num_classes=num_classes)
    files.write_json(RESULTS_FILE, results)
    plot_curves(recorder.history, files.curves, warn=getattr(reporter, "message", print))
    notify(run.plugins, "on_train_end", reporter, run=run, kind=kind, results=results)
    return results


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _genotype_digest(genotype: Genotype) -> str:
    d = genotype.to_dict()
    return _digest({"space": d["space"], "cells": d["cells"]})


def _resume_point(files: RunDir, espec: EvalSpec, genotype: Genotype) -> dict[str, Any] | None:
    """The run directory's training checkpoint, checked against this spec and genotype (its
    position and history too), or None when there is none (then the training starts afresh).
    Any mismatch or damage: a one-line :class:`CheckpointError` that says what differs."""
    if not files.exists(files.checkpoint.name):
        return None
    path, state = files.checkpoint, files.load_checkpoint(kind="train")

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}; delete it to train from the start")

    for key, ours, noun in (("spec_hash", espec.digest(), "evaluation spec"),
                            ("genotype_hash", _genotype_digest(genotype), "genotype")):
        if state.get(key) != ours:
            raise refuse(f"written for another {noun} ({key} {str(state.get(key))[:40]!r}, this run's {ours!r})")
    try:
        pos = resume_position(state, espec.evaluate.epochs)
    except ValueError as exc:
        raise refuse(str(exc)) from None
    history = state.get("history")
    if not (isinstance(history, list) and len(history) == pos["epoch"]
            and all(isinstance(h, dict) and h.get("epoch") == i for i, h in enumerate(history))):
        raise refuse(f"history: expected the metrics of epochs 0 to {pos['epoch'] - 1}")
    if not isinstance(state.get("elapsed"), (int, float)):
        raise refuse("elapsed: expected a number of seconds")
    return state


def _check_batches(prepared: PreparedEval, shape: tuple[int, int, int], network: Any) -> None:
    """Refuse, before anything is written, a training whose batches hold one image (``batch_size
    = 1``, or one training image) when the network has a batch norm that then sees one value per
    channel (a 1x1 feature map, as the auxiliary head's): torch cannot train it. (A last batch of
    one image is dropped instead, see :func:`_drop_last`.) ``network()`` gives the network, only
    built when the batch sizes call for the check."""
    ev, espec = prepared.spec.evaluate, prepared.spec
    n_train = len(prepared.bundle.train)  # type: ignore[arg-type]
    n_train = min(n_train, ev.limit) if ev.limit else n_train
    if ev.batch_size > 1 and n_train > 1:
        return
    model = network()
    layers = _single_value_batch_norms(model, shape, next(model.parameters(), torch.zeros(0)).device)
    if not layers:
        return
    where = f"{espec.path}: [evaluate]" if espec.path is not None else "[evaluate]"
    hint = " or auxiliary = false" if has_auxiliary_head(model) else ""
    what = ("batch_size: 1 image per training batch" if ev.batch_size == 1 else
            f"limit: {n_train} training image" if ev.limit else f"[evaluate.data]: the training split holds {n_train} image")
    fix = "a batch_size >= 2" if ev.batch_size == 1 else "at least 2 training images"
    raise SpecError(f"{where} {what} cannot train this network: its batch norm {layers[0]!r} would see a single "
                    f"value per channel (a 1x1 feature map); use {fix}{hint}")


def _single_value_batch_norms(model: nn.Module, shape: tuple[int, int, int], device: torch.device) -> list[str]:
    """The batch-norm layers that see one value per channel in training mode when a batch holds
    one image (found with a batch of two zero images; weights, buffers and RNG left as they were)."""
    found: list[str] = []

    def probe(name: str):
        return lambda _m, inputs: found.append(name) if inputs[0].numel() // max(inputs[0].shape[1], 1) <= 2 else None

    hooks = [m.register_forward_pre_hook(probe(name)) for name, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            model.train()
            model(torch.zeros(2, *shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.load_state_dict(saved)
        model.train(was_training)
    return found


class _Recorder:
    """The evaluation's engine callback: the run directory's files once training starts, then per
    epoch the ``metrics.jsonl`` line, the progress display, the checkpoint and the ``on_train_*``
    hooks; at a stop, the checkpoint of that step. ``point``: the checkpoint resumed from;
    ``notice``: a line to show when training starts (every check passed)."""

    def __init__(self, run: TrainRun, reporter: Any, t_start: float, params: int,
                 point: dict[str, Any] | None = None, notice: str | None = None):
        self.run, self.reporter, self.params, self.point, self.notice = run, reporter, params, point, notice
        self.t_start = t_start - float(point["elapsed"]) if point is not None else t_start
        self.history: list[dict[str, Any]] = list(point["history"]) if point is not None else []

    def on_train_start(self, trainer: Trainer, steps_per_epoch: int) -> None:
        self._write_start()
        epochs = trainer.recipe.epochs
        start = getattr(self.reporter, "train_start", None)
        if start is not None:
            start(epochs, steps_per_epoch, self.params)
        notify(self.run.plugins, "on_train_start", self.reporter, run=self.run, kind=self.run.kind,
               epochs=epochs, steps=steps_per_epoch, params=self.params)

    def _write_start(self) -> None:
        """Every check has passed: a fresh run writes its spec, genotype and an empty metrics
        file; a resumed one its metrics up to the checkpoint (dropping lines written after it)."""
        files, run = self.run.files.mkdir(), self.run
        if self.notice:
            self.reporter.message(self.notice)
        if self.point is None:
            files.write_toml(SPEC_FILE, spec_mod._drop_none(run.spec.resolved()))
            run.genotype.save(files.genotype)
        else:
            pos = self.point["position"]
            self.reporter.message(f"resuming the training in {run.run_dir} at epoch {pos['epoch']}"
                                  + (f", step {pos['step']}" if pos["step"] else ""))
        files.write_jsonl(METRICS_FILE, self.history)

    def on_epoch_end(self, trainer: Trainer, stats: EpochStats) -> None:
        record = {
            "epoch": stats.epoch, "lr": stats.lr, "drop_path_prob": stats.drop_path_prob,
            "train_loss": stats.train_loss, "train_acc": stats.train_acc,
            "test_loss": stats.test_loss, "test_acc": stats.test_acc, "test_error": 1.0 - stats.test_acc,
            "epoch_seconds": stats.seconds, "wall_seconds": time.perf_counter() - self.t_start,
            "peak_memory_mb": peak_memory_mb(trainer.device),
        }
        self.history.append(record)
        self.run.files.append_jsonl(METRICS_FILE, record)
        self.reporter.epoch_end(record)
        _save_checkpoint(self.run.run_dir, stats.epoch, self._state(trainer))
        notify(self.run.plugins, "on_train_epoch_end", self.reporter, run=self.run, kind=self.run.kind,
               epoch=stats.epoch, metrics=record)

    def on_stop(self, trainer: Trainer, epoch: int, step: int) -> None:
        _save_checkpoint(self.run.run_dir, epoch - 1, self._state(trainer))

    def _state(self, trainer: Trainer) -> dict[str, Any]:
        """The checkpoint: the engine's state, the metrics so far, what it belongs to."""
        return {**trainer.state_dict(), "history": list(self.history), "spec_hash": self.run.spec.digest(),
                "genotype_hash": _genotype_digest(self.run.genotype),
                "elapsed": time.perf_counter() - self.t_start}


def _results(run: TrainRun, record: dict[str, Any], t_start: float, search_cost: dict[str, Any] | None, *,
             loader: str, params: int, params_with_aux: int, flops: int, shape: tuple[int, int, int],
             num_classes: int) -> dict[str, Any]:
    """What ``results.json`` holds."""
    espec, ev = run.spec, run.spec.evaluate
    results: dict[str, Any] = {
        "kind": run.kind, "name": espec.run.name, "run_dir": str(run.run_dir), "genotype_source": run.source,
        "spec_hash": espec.digest(), "dataset": espec.dataset.name, "device": str(run.device),
        "seed": espec.run.seed, "epochs": ev.epochs, "loader": loader,
        "test_acc": record.get("test_acc"), "test_error": record.get("test_error"),
        "test_error_percent": 100.0 * record["test_error"] if record else None,
        "test_loss": record.get("test_loss"), "train_acc": record.get("train_acc"),
        "params": params, "params_with_auxiliary": params_with_aux if params_with_aux != params else None,
        "flops": flops, "macs": flops // 2, "input_shape": list(shape), "num_classes": num_classes,
        "network": network_record(espec.network),
        "wall_seconds": time.perf_counter() - t_start, "peak_memory_mb": peak_memory_mb(run.device),
        "genotype": run.genotype.to_dict(),
    }
    if search_cost is not None:
        results["search_cost"] = search_cost
    return results


def _save_checkpoint(run_dir: Path, epoch: int, state: dict[str, Any]) -> None:
    """A ``"train"`` checkpoint: ``state`` (:meth:`_Recorder._state`), ``epoch`` the last
    finished epoch (-1: none yet)."""
    RunDir(run_dir).save_checkpoint({**state, "epoch": epoch}, kind="train")


def search_cost(summary: dict[str, Any]) -> dict[str, Any]:
    """What the search that found the genotype cost (for ``results.json``)."""
    seconds = float(summary.get("wall_seconds", 0.0))
    gpu = str(summary.get("device", "")).startswith("cuda")
    return {"run_dir": summary.get("run_dir"), "wall_seconds": seconds, "device": summary.get("device"),
            "gpu_days": seconds / 86400 if gpu else None}


def plot_curves(history: list[dict[str, Any]], path: Path, warn: Any = print) -> bool:
    """Accuracy, loss (train and test) and the learning rate per epoch into ``path``
    (:func:`curves_figure`); a failure is one warning line."""
    return draw_guarded(Path(path).name, _draw_curves, history, Path(path), warn_with=warn)


def _draw_curves(history: list[dict[str, Any]], path: Path) -> None:
    curves_figure(history).savefig(path, dpi=100)


def curves_figure(history: list[dict[str, Any]]) -> Any:
    """The figure of ``curves.png``: three panels against the epoch, accuracy and loss (train and
    test) and the learning rate the epoch trained at, with the drop-path probability on a second
    axis of that panel when the records have it; one legend below the panels."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(11, 3.8)
    epochs = [h["epoch"] + 1 for h in history]
    marker = "." if len(epochs) < 30 else None
    ax_acc, ax_loss, ax_lr = fig.subplots(1, 3)
    colors = {"train": "C0", "test": "C1"}
    for ax, metric in ((ax_acc, "acc"), (ax_loss, "loss")):
        for split, color in colors.items():
            key = f"{split}_{metric}"
            if all(key in h for h in history):
                ax.plot(epochs, [h[key] for h in history], marker=marker, color=color)
    handles = [Line2D([], [], color=c, marker=marker) for c in colors.values()]
    labels = list(colors)
    if all("lr" in h for h in history):
        ax_lr.plot(epochs, [h["lr"] for h in history], marker=marker, color="C2")
        handles.append(Line2D([], [], color="C2", marker=marker))
        labels.append("learning rate")
    if history and all("drop_path_prob" in h for h in history):
        ax_dp = ax_lr.twinx()
        ax_dp.plot(epochs, [h["drop_path_prob"] for h in history], marker=marker, color="C4", ls="--")
        ax_dp.set_ylabel("drop-path probability", color="C4")
        ax_dp.set_ylim(bottom=0.0)
        handles.append(Line2D([], [], color="C4", ls="--", marker=marker))
        labels.append("drop-path probability")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="schedule")
    ax_lr.set_ylim(bottom=0.0)
    for ax in (ax_acc, ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), frameon=False, fontsize=9)
    return fig
