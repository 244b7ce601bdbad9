"""Training children: each sampled architecture is an independent trial, in-process or in a pool.

A child is trained from scratch by the core's training engine (:class:`nasreg.Trainer`, with
:func:`child_recipe`) for ``child_epochs`` epochs (SGD with momentum, a learning rate annealed
by a cosine every step, gradient clipping) on the search's train half and scored on its validation half:
the split of :func:`nasreg.split_train_val` with ``[data] train_portion``, ``limit`` and the
run's seed, the same for every child. Its reward is the validation accuracy (BatchNorm statistics
as ``[search] eval_batch_norm`` says: ``batch`` normalizes with each batch's statistics, which
suits children trained for a few steps; ``running`` is plain eval mode). A child whose loss
becomes NaN or infinite gets reward 0 and is marked ``diverged``; the search goes on.

Each child is seeded with its own seed (from the run's seed and its index), so its result does not
depend on where it runs or on what ran before it.

Children train through an executor (:class:`nasreg.Executor`), one task per child, in order: with
no ``[executor]`` in the search spec, the local one with the strategy's ``workers``: 1 trains them
in the search's process, one after the other (with ``child_threads`` threads, 0: the search's
own); more trains them in that many worker processes (``spawn``), ``child_threads`` threads each
(0: the free cores divided among the workers). A search spec's ``[executor]`` table picks another
(``workers`` must then stay 1): ``name = "ray"`` makes every child a Ray task, on a local Ray
instance or a cluster, declaring ``max(child_threads, 1)`` CPUs (at least the executor's
``cpus_per_task``, which is also the task's torch threads) and, on CUDA, a GPU. A worker (a
process of the pool, a Ray worker) rebuilds the plugins, the spec, the dataset and the space from
a :class:`nasreg.SpecSnapshot` of the spec once, and keeps them for every child it trains (``[run]
plugins`` and the modules or files given with ``--plugin``: a plugin handed to the loader as an
object cannot be rebuilt there; on a cluster, nasreg and the dataset must be where the workers run,
see the ``ray`` executor's ``runtime_env``). On CUDA, a pool's child k runs on GPU ``k mod (number
of GPUs)``; a Ray child on the GPU Ray assigned it. The tasks, their seeds and so the rewards are
the same wherever the children run; a child whose training fails there fails the search with one
line naming it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import nasreg

__all__ = ["ChildConfig", "ChildContext", "ChildTask", "ChildTrainer", "child_recipe", "child_seed",
           "train_child"]


@dataclass(frozen=True)
class ChildConfig:
    """How every child is trained (the strategy's ``child_*`` keys)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    grad_clip: float
    eval_batch_norm: str = "batch"
    threads: int = 0
    #: Keys of the space's ``build_network`` for every child, as (key, value) pairs (e.g.
    #: ``(("cells", 5), ("channels", 8))``); empty: the space's defaults.
    network: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ChildTask:
    """One child to train: its index in the search, its genotype (as a dict), seed and device."""

    index: int
    genotype: dict[str, Any]
    seed: int
    device: str


@dataclass
class ChildContext:
    """What training a child needs besides the task: the space, the ops, the data split."""

    space: Any
    ops: Any
    train: Any
    val: Any
    in_channels: int
    num_classes: int


def child_seed(run_seed: int, index: int) -> int:
    """The seed of child ``index`` of a search with seed ``run_seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(run_seed), int(index)]).generate_state(1)[0] & 0x7FFFFFFF)


def context_from(spec: Any, space: Any, ops: Any, bundle: Any) -> ChildContext:
    train, val = nasreg.split_train_val(bundle, spec.data.train_portion, spec.run.seed, spec.data.limit)
    return ChildContext(space=space, ops=ops, train=train, val=val, in_channels=int(bundle.in_channels),
                        num_classes=int(bundle.num_classes))


def _finite(x: float) -> bool:
    return math.isfinite(x)


def child_recipe(cfg: ChildConfig) -> Any:
    """The training engine's recipe of a child: SGD with momentum, a cosine from ``lr`` to 0
    stepped every step, gradient clipping, no augmentation, auxiliary logits ignored, one
    validation pass at the end (BatchNorm as ``eval_batch_norm`` says), and a diverging loss
    stops the child instead of the search."""
    return nasreg.TrainRecipe(epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                              grad_clip=cfg.grad_clip, schedule="step", batch_norm=cfg.eval_batch_norm,
                              test="end", on_divergence="stop")


def _loaders(task: ChildTask, ctx: ChildContext, cfg: ChildConfig) -> tuple[DataLoader, DataLoader]:
    n = len(ctx.train)
    train_loader = DataLoader(ctx.train, batch_size=cfg.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(task.seed),
                              # a last batch of one image breaks BatchNorm on 1x1 maps: drop it
                              drop_last=n > cfg.batch_size and n % cfg.batch_size == 1)
    val_loader = DataLoader(ctx.val, batch_size=max(cfg.batch_size, 256), shuffle=False)
    return train_loader, val_loader


def train_child(task: ChildTask, ctx: ChildContext, cfg: ChildConfig) -> dict[str, Any]:
    """Train one child from scratch and score it; returns reward, losses, parameters, seconds."""
    t0 = time.perf_counter()
    nasreg.seed_everything(task.seed)
    device = torch.device(task.device)
    genotype = nasreg.Genotype.from_dict(task.genotype, source=f"child {task.index}")
    model: nn.Module = ctx.space.build_network(genotype, ops=ctx.ops, in_channels=ctx.in_channels,
                                               num_classes=ctx.num_classes, **dict(cfg.network))
    params = sum(p.numel() for p in model.parameters())
    model = model.to(device)
    train_loader, val_loader = _loaders(task, ctx, cfg)
    fit = nasreg.Trainer(model, child_recipe(cfg), device).fit(train_loader, val_loader)
    diverged = fit.diverged
    val_loss, val_acc = (float("nan"), 0.0) if diverged else (fit.test_loss, fit.test_acc)
    if not _finite(val_loss):
        diverged, val_acc = True, 0.0
    return {
        "reward": float(val_acc), "val_acc": float(val_acc),
        "val_loss": float(val_loss) if _finite(val_loss) else None,
        "train_loss": fit.train_loss, "train_acc": fit.train_acc,
        "params": int(params), "seconds": time.perf_counter() - t0, "diverged": diverged,
    }


# --- the executor ------------------------------------------------------------------------------------


def _setup_worker(payload: dict[str, Any]) -> ChildContext:
    """A worker's context (once per worker process): plugins, spec, dataset, space and split rebuilt.
    (Its torch threads are the executor's: a pool's ``threads``, a Ray task's CPUs.)"""
    spec, plugins = payload["spec"].rebuild()
    return context_from(spec, spec.search_space.build(), plugins.registries.operations, spec.dataset.build())


@dataclass(frozen=True)
class _WorkerTask:
    """A child task with its training config, as it travels to a worker."""

    child: ChildTask
    cfg: ChildConfig


def _train_worker_task(ctx: ChildContext, item: _WorkerTask) -> dict[str, Any]:
    return train_child(item.child, ctx, item.cfg)


class ChildTrainer:
    """Trains lists of children, in order, through an executor (a context manager that closes it):
    in this process (the local executor with one worker: the default), in worker processes, or as
    Ray tasks (a search spec's ``[executor]``)."""

    def __init__(self, run: Any, bundle: Any, cfg: ChildConfig, workers: int, executor: Any = None):
        self.run, self.cfg, self.workers = run, cfg, workers
        self.device = run.device
        self.ctx = context_from(run.spec, run.space, run.registries.operations, bundle)
        self.executor = executor if executor is not None else nasreg.LocalExecutor(workers=workers,
                                                                                    threads=cfg.threads)
        self._payload: Any = None

    @property
    def in_process(self) -> bool:
        """Whether children train in the search's own process (the local executor, one at a time)."""
        return isinstance(self.executor, nasreg.LocalExecutor) and self.executor.slots == 1

    def __enter__(self) -> "ChildTrainer":
        if not self.in_process:
            self._payload = {"spec": nasreg.SpecSnapshot.of(self.run.spec, self.run.plugins), "cfg": self.cfg}
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.executor.close()

    def device_for(self, index: int) -> str:
        """Child ``index``'s device: the search's, except on CUDA in a local pool (round robin over
        the GPUs, unless the pool gives each worker its own) and in a Ray task (the GPU Ray assigned,
        the only one it sees)."""
        dev = self.device
        if dev.type != "cuda" or self.in_process:
            return str(dev)
        if not isinstance(self.executor, nasreg.LocalExecutor):
            return "cuda"
        if dev.index is None and not self.executor.gpus and torch.cuda.device_count() > 1:
            return f"cuda:{index % torch.cuda.device_count()}"
        return str(dev)

    def resources(self) -> Any:
        """What one child declares: ``child_threads`` CPUs (at least 1) and, on CUDA, one GPU."""
        return nasreg.Resources(cpus=max(self.cfg.threads, 1), gpus=1.0 if self.device.type == "cuda" else 0.0)

    def train(self, tasks: Sequence[ChildTask]) -> Iterator[dict[str, Any]]:
        """The results of ``tasks``, in order (as each becomes available); a child whose training
        fails (not a divergence: that is a reward of 0) fails the search with its error."""
        if self._payload is None:  # in this process: the search's own context
            threads = torch.get_num_threads()
            try:
                if self.cfg.threads:
                    torch.set_num_threads(self.cfg.threads)
                for task in tasks:
                    yield train_child(task, self.ctx, self.cfg)
            finally:
                torch.set_num_threads(threads)
            return
        tasks = list(tasks)
        items = [_WorkerTask(task, self.cfg) for task in tasks]
        key = f"{self.run.spec.digest()}:{self.cfg}"
        for outcome in self.executor.map(_train_worker_task, items, setup=_setup_worker, payload=self._payload,
                                         payload_key=key, ordered=True, resources=self.resources()):
            if not outcome.ok:
                _fail(tasks[outcome.index], outcome)
            yield outcome.value


def _fail(task: ChildTask, outcome: Any) -> None:
    """A child that failed in a worker: its own nasreg error as it is (an interrupted child stays
    :class:`nasreg.Interrupted`), anything else one line naming the child."""
    if isinstance(outcome.exception, nasreg.NasregError):
        raise outcome.exception
    raise nasreg.NasregError(f"child {task.index} failed: {outcome.error}") from outcome.exception


def config_dict(cfg: ChildConfig) -> dict[str, Any]:
    return asdict(cfg)
