"""The search-strategy contract: how weights and architecture parameters are optimized.

This module does not import torch (a strategy plugin subclasses these at import time; validating
a spec must not pay for torch): the torch types below are annotations only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import torch

    from .supernet import Supernet


class SearchStrategy(ABC):
    """What a ``register_strategies`` factory returns for a gradient-based (supernet) search.

    The core's epoch loop (:mod:`nasreg.search`) calls :meth:`setup` once per stage with a fresh
    supernet, :meth:`step` once per pair of batches, :meth:`end_epoch` after each epoch.
    After a step that updated the architecture, every architecture parameter's ``.grad`` must
    still hold the gradient used for that update: the core records it (DG-DARTS clusters it).

    Under ``torchrun`` each rank's batches are its slice of the global batch and the supernet's
    BatchNorms are synchronized; a strategy makes its updates global by passing every gradient it
    computes to :func:`nasreg.distributed.average_` (a no-op in one process) before using it.
    """

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


class SamplingStrategy(ABC):
    """What a ``register_strategies`` factory returns for a search that samples discrete
    architectures and trains each as an independent child (REINFORCE controllers, random search),
    instead of optimizing a supernet. It needs no ``[selector]``: it returns the genotype itself.
    """

    @abstractmethod
    def search(self, run: Any, bundle: Any, reporter: Any) -> Any:
        """Run the whole search; return the best :class:`nasreg.genotype.Genotype` found.

        ``run`` is the :class:`nasreg.run.Run` (spec, run directory, registries, space, device);
        ``bundle`` the :class:`nasreg.data.DatasetBundle`; ``reporter`` shows progress
        (``reporter.message(text)``). Write evidence (rewards, children) into ``run.run_dir``.
        Return a dict ``{"genotype": Genotype, **summary_fields}`` or the Genotype.
        """
