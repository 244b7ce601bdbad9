"""The selector contract: how many stages a search has and what each stage leaves for the next."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from .genotype import Genotype
from .space import Candidates, Edge


@dataclass
class StageResult:
    """What one search stage leaves behind.

    ``alphas[cell_type][edge]`` are the final softmax weights over ``candidates[cell_type][edge]``.
    ``grad_history[cell_type][edge][op]`` and ``alpha_history[...]`` hold one value per joint
    epoch (the ``[search] grad_stat`` statistic of the architecture gradient over the epoch's
    steps; the softmax weight at the epoch's end).
    """

    stage: int
    candidates: Candidates
    edges: dict[str, list[Edge]]
    alphas: dict[str, list[list[float]]]
    grad_history: dict[str, list[list[list[float]]]] = field(default_factory=dict)
    alpha_history: dict[str, list[list[list[float]]]] = field(default_factory=dict)
    num_weights: int = 0
    epoch_seconds: list[float] = field(default_factory=list)
    step_seconds: float = 0.0


class Selector(ABC):
    """What a ``register_selectors`` factory returns.

    The search runs :attr:`num_stages` stages. After every stage but the last, :meth:`next_candidates`
    picks the next stage's per-edge candidate sets; after the last, :meth:`derive` produces the
    genotype. ``run`` is the :class:`nasreg.RunContext` (registries, space, seed, run directory).
    """

    num_stages: int = 1
    #: Start each later stage from the previous stage's weights where ops persist (else fresh).
    inherit_weights: bool = False

    def check(self, stages: list[tuple[int, int]]) -> None:
        """Reject a stage plan (``(warmup, epochs)`` per stage) this selector cannot use, by raising
        :class:`nasreg.SpecError` or ``ValueError``. Called at validation, before any
        training."""

    def stage_space_keys(self, stage: int) -> dict[str, Any]:
        """``[search_space]`` keys that stage ``stage`` (from 0) sets to other values than the spec's
        (``{"cells": 11}``: a deeper supernet for that stage); ``{}`` (the default) keeps the spec's
        space. The engine builds each stage's space from the spec's keys with these on top, checked
        like the spec's own keys when the spec is validated (an error names ``[selector]``). A
        stage's space must have the same cell edges as the spec's (the candidate sets carry over).
        It must depend on ``stage`` and the selector's keys only: a resumed run asks again."""
        return {}

    def next_candidates(self, result: StageResult, run: Any) -> Candidates:
        raise NotImplementedError(f"{type(self).__name__} has one stage")

    @abstractmethod
    def derive(self, result: StageResult, run: Any) -> Genotype:
        """The genotype of the final stage."""
