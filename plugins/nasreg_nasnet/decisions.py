"""What makes a search space samplable by a controller: an ordered list of discrete decisions.

A space that a sampling strategy (``reinforce``, ``random``) can search implements two methods:

``decisions() -> list[tuple[str, int]]``
    The decisions of one architecture, in the order a controller emits them: a name (for logs)
    and the number of choices (>= 2; decisions with a single choice are left out, they are not
    decisions). The number of choices may depend on the position (a NASNet block picks among
    more inputs the later it comes).
``genotype_from_choices(choices: Sequence[int]) -> nasreg.Genotype``
    The genotype of one choice per decision (``0 <= choices[i] < decisions()[i][1]``).
``decision_kinds() -> list[str]`` (optional)
    One kind per decision of ``decisions()``, for strategies that mutate one decision of a kind
    (``evolution``): ``input`` for a decision choosing which earlier state a node reads, ``op`` for
    one choosing an operation, any other name for the rest. Without it every decision is alike.

:class:`DiscreteSpace` implements both from one method, :meth:`DiscreteSpace.all_decisions`
(every decision, single-choice ones included) and :meth:`DiscreteSpace.build_genotype` (which
receives one choice for every decision of ``all_decisions``). It raises ``ValueError`` for a
choice list of the wrong length or a choice out of range. Such a space has no supernet: its
``build_supernet`` raises :class:`NotASupernetSpace`.
"""

from __future__ import annotations

from typing import Any, Sequence

import nasreg

__all__ = ["COMBINE_METHODS", "DiscreteSpace", "NotASupernetSpace"]

#: How a NASNet block combines its two op outputs (the ``combine`` key's choices).
COMBINE_METHODS = ("add", "concat")


class NotASupernetSpace(NotImplementedError, nasreg.SpecError):
    """A sampling-only space was asked for a supernet (a gradient strategy such as ``darts``).

    Both a ``NotImplementedError`` (what the contract says) and a :class:`nasreg.SpecError`, so the
    command line reports it on one line."""


class DiscreteSpace:
    """Mixin: ``decisions()`` and ``genotype_from_choices()`` from the full decision list."""

    #: No supernet (see :class:`nasreg.SearchSpace`): a spec with a gradient strategy is refused.
    has_supernet = False

    def all_decisions(self) -> list[tuple[str, int]]:
        raise NotImplementedError

    def build_genotype(self, choices: list[int]) -> nasreg.Genotype:
        raise NotImplementedError

    def decisions(self) -> list[tuple[str, int]]:
        return [(name, n) for name, n in self.all_decisions() if n > 1]

    def genotype_from_choices(self, choices: Sequence[int]) -> nasreg.Genotype:
        every = self.all_decisions()
        asked = [i for i, (_name, n) in enumerate(every) if n > 1]
        choices = [int(c) for c in choices]
        if len(choices) != len(asked):
            raise ValueError(f"expected {len(asked)} choices (one per decision), got {len(choices)}")
        full = [0] * len(every)
        for i, c in zip(asked, choices):
            name, n = every[i]
            if not 0 <= c < n:
                raise ValueError(f"decision {name!r}: choice {c} is out of range (0..{n - 1})")
            full[i] = c
        return self.build_genotype(full)

    def build_supernet(self, candidates: Any, *, ops: nasreg.Registry, in_channels: int,
                       num_classes: int) -> Any:
        """A discrete space has no supernet: raises :class:`NotASupernetSpace` (one line)."""
        raise not_a_supernet(self)

    def search_space_size(self) -> int:
        """How many distinct choice sequences there are (the product of the choice counts)."""
        size = 1
        for _name, n in self.decisions():
            size *= n
        return size


def not_a_supernet(space: Any) -> NotASupernetSpace:
    name = getattr(space, "name", type(space).__name__)
    return NotASupernetSpace(
        f"search space {name!r} samples discrete architectures and has no supernet: search it with a "
        "sampling strategy ([strategy] name = \"reinforce\" or \"random\"), not a gradient-based one")
