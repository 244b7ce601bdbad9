"""The search-strategy contract: how a search finds its architecture.

Every ``register_strategies`` factory returns a :class:`Strategy`. Two kinds ship with nasreg:

* :class:`SearchStrategy`: the core trains a supernet with it (stages planned by the
  ``[selector]``, epochs, steps, checkpoints, pre-flight estimate), the strategy supplying the
  optimization (``setup`` / ``step`` / ``end_epoch``);
* :class:`SamplingStrategy`: it samples discrete architectures and trains each child itself,
  returning the genotype; the core only seeds, writes the run files and fires the hooks.

The engine (:mod:`nasreg._core.search`) never asks which class a strategy is: it reads the attributes
and methods of :class:`Strategy` and calls :meth:`Strategy.run_search`.

This module does not import torch (a strategy plugin subclasses these at import time; validating
a spec must not pay for torch): the torch types below are annotations only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import torch

    from .search import SearchJob
    from .supernet import Supernet


class Strategy(ABC):
    """What every ``register_strategies`` factory returns: the part of a strategy the engine reads.

    The engine builds a strategy through one function (:func:`nasreg._core.spec.build_strategy`),
    once per need: once when the spec is prepared (to read the attributes below and, for the
    pre-flight estimate, those of :class:`SearchStrategy`), then a fresh instance for each stage
    of a supernet search or, after seeding, for a sampling search. Construction must therefore
    have no side effects beyond the object and must not draw random numbers.

    * :attr:`trains_supernet`: True when the core trains a supernet with it. The spec then needs
      a ``[selector]`` (which plans the stages and derives the genotype) and the pre-flight
      estimate measures a step. False: the strategy finds the genotype itself.
    * :attr:`supports_torchrun`: False when the strategy must run in one process; ``nasreg run``
      under ``torchrun`` is then refused before anything runs.
    * :meth:`run_search`: the entry point. ``nasreg._core.search.run_search`` calls it with a
      :class:`nasreg.SearchJob` (the prepared spec, run directory, reporter, resume flag)
      and returns what it returns, the run's summary. Each kind hands the job to the engine it
      needs (``job.train_supernet()``, ``job.sample()``).
    """

    #: The core trains a supernet with this strategy (needs a ``[selector]``; pre-flight estimate).
    trains_supernet: ClassVar[bool] = True
    #: The strategy can run in several processes under ``torchrun``.
    supports_torchrun: ClassVar[bool] = True

    @abstractmethod
    def run_search(self, job: SearchJob) -> dict[str, Any]:
        """Run the search ``job`` describes into its run directory; return the summary."""


class SearchStrategy(Strategy):
    """What a ``register_strategies`` factory returns for a gradient-based (supernet) search.

    The core's epoch loop (:mod:`nasreg._core.search`) calls :meth:`setup` once per stage with a fresh
    supernet (and a fresh strategy instance), :meth:`step` once per pair of batches,
    :meth:`end_epoch` after each epoch. After a step that updated the architecture, every
    architecture parameter's ``.grad`` must still hold the gradient used for that update: the
    core records it (DG-DARTS clusters it). :meth:`state_dict` / :meth:`load_state_dict` go into
    and come out of checkpoints (after :meth:`setup`), so a resumed stage continues exactly.

    What the core asks a strategy instead of knowing its knobs (all optional):

    * :attr:`passes_per_step`: forward + backward passes of one step with an architecture
      update (pre-flight FLOPs; default 2);
    * :attr:`weight_copies`: how many weight-sized tensors a step holds (weights, gradients,
      momentum, snapshots; pre-flight memory; default 3);
    * :meth:`memory_knobs`: spec settings that would shrink a step's memory, named for the user
      when the estimate does not fit (e.g. ``"[strategy] order = 1"``);
    * :meth:`divergence_hint`: what to try when the loss becomes NaN or infinite.

    Under ``torchrun`` each rank's batches are its slice of the global batch and the supernet's
    BatchNorms are synchronized; a strategy makes its updates global by passing every gradient it
    computes to :func:`nasreg.average_across_ranks_` (a no-op in one process) before using it.
    """

    trains_supernet: ClassVar[bool] = True
    supports_torchrun: ClassVar[bool] = True
    #: Forward + backward passes of one search step with an architecture update.
    passes_per_step: int = 2
    #: Weight-sized tensors one step holds (weights, their gradients, optimizer state, copies).
    weight_copies: int = 3

    def run_search(self, job: SearchJob) -> dict[str, Any]:
        """The core's supernet loop over the selector's stages."""
        return job.train_supernet()

    @abstractmethod
    def setup(self, model: Supernet, *, epochs: int, steps_per_epoch: int) -> None:
        """Create optimizers and schedulers for ``model`` (called once per stage)."""

    @abstractmethod
    def step(self, train_batch: tuple[torch.Tensor, torch.Tensor],
             val_batch: tuple[torch.Tensor, torch.Tensor], *, update_alpha: bool) -> dict[str, float]:
        """One search step: an architecture step on ``val_batch`` (when ``update_alpha``), then a
        weight step on ``train_batch``. Returns at least ``train_loss`` and ``train_correct``
        (number of correct predictions in the train batch)."""

    def end_epoch(self) -> None:
        """Advance learning-rate schedules."""

    def current_lr(self) -> float | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def memory_knobs(self) -> list[str]:
        """Spec settings (``"[strategy] key = value"``) that would make a step use less memory."""
        return []

    def divergence_hint(self) -> str | None:
        """What to try when training diverges (appended to the error), or None."""
        return None


class SamplingStrategy(Strategy):
    """What a ``register_strategies`` factory returns for a search that samples discrete
    architectures and trains each as an independent child (REINFORCE controllers, random search),
    instead of optimizing a supernet. It needs no ``[selector]``: it returns the genotype itself.
    It runs in one process (``supports_torchrun`` False) and has no pre-flight estimate.
    """

    trains_supernet: ClassVar[bool] = False
    supports_torchrun: ClassVar[bool] = False

    def run_search(self, job: SearchJob) -> dict[str, Any]:
        """The core seeds, writes the spec, calls :meth:`search` on a fresh instance, then writes
        the genotype and the summary."""
        return job.sample()

    @abstractmethod
    def search(self, run: Any, bundle: Any, reporter: Any) -> Any:
        """Run the whole search; return the best :class:`nasreg.Genotype` found.

        ``run`` is the :class:`nasreg.RunContext` (spec, run directory, registries, space, device);
        ``bundle`` the :class:`nasreg.DatasetBundle`; ``reporter`` shows progress
        (``reporter.message(text)``). Write evidence (rewards, children) into ``run.run_dir``.
        Return a dict ``{"genotype": Genotype, **summary_fields}`` or the Genotype.
        """
