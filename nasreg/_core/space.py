"""The search-space contract: what a ``register_search_spaces`` factory returns.

``Candidates`` maps a cell type (``"normal"``, ``"reduce"``) to one list of op names per edge, in
the space's edge order; an ``Edge`` is ``(input node, output node)``. Every stage of a staged
search builds a fresh supernet from its own candidates (:mod:`nasreg._core.supernet`).

This module does not import torch: a space plugin subclasses :class:`SearchSpace` and declares its
ops in an :class:`OperationTable` at import time, and validating a spec or listing plugins must
not pay for torch. The networks a space builds are
torch modules, made only when a search or an evaluation asks for them.
"""

from __future__ import annotations

import copy
from collections import Counter
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .errors import SpecError
from .registry import Registry

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from torch import nn

    from .supernet import Supernet

Candidates = dict[str, list[list[str]]]
Edge = tuple[int, int]  # (input node, output node)


class SearchSpace(ABC):
    """What a ``register_search_spaces`` factory returns.

    A space knows its cell types, its edges and how to build a :class:`~nasreg.Supernet` over
    given per-edge candidates. A space also owns its derivation rule (:meth:`derive`): which edges
    and ops of a final stage make a genotype its networks can build.
    """

    #: The candidate ops of every edge at the start of a search (``[search_space] operations``).
    operations: list[str]
    #: How many incoming edges each node keeps in a derived genotype.
    inputs_per_node: int = 2
    #: Whether :meth:`build_supernet` builds one (False: a space of discrete samples only, searched
    #: by a sampling strategy); a spec pairing such a space with a supernet strategy is refused
    #: when it is validated.
    has_supernet: bool = True

    @abstractmethod
    def edges(self) -> dict[str, list[Edge]]:
        """Per cell type, its edges as (input node, output node), in alpha order."""

    @abstractmethod
    def concat(self, cell_type: str) -> list[int]:
        """The nodes a cell of ``cell_type`` concatenates as its output."""

    def full_candidates(self) -> Candidates:
        return {ct: [list(self.operations) for _ in edges] for ct, edges in self.edges().items()}

    @abstractmethod
    def build_supernet(self, candidates: Candidates, *, ops: Registry, in_channels: int,
                       num_classes: int) -> Supernet:
        """The supernet over ``candidates`` for images with ``in_channels`` and ``num_classes``."""

    def derive(self, result: Any, zero_ops: set[str]) -> dict[str, list[Any]]:
        """The kept edges (:class:`nasreg.GenotypeEdge`) per cell type of a final
        :class:`nasreg.StageResult`, never an op in ``zero_ops``: the space's rule, which a selector
        that only narrows candidates turns into a genotype with :func:`nasreg.genotype_from_edges`."""
        raise SpecError(f"[search_space]: {type(self).__name__} has no derivation rule (derive()), so "
                        "the [selector] must derive the genotype itself")

    def build_network(self, genotype: Any, *, ops: Registry, in_channels: int, num_classes: int,
                      **keys: Any) -> nn.Module:
        """The discrete network a genotype describes (for final evaluation).

        ``keys`` are the evaluation network's ``[evaluate]`` keys, which the space's registry entry
        declares with its ``network_keys`` metadata (a function whose signature is their schema;
        :mod:`nasreg._core.evaluate` passes what it returns for the spec's keys, defaults filled);
        a space that declares none gets none. The network returns the logits, or ``(logits,
        auxiliary_logits)`` in training mode when it has an auxiliary head (an ``auxiliary_head``
        attribute; the training loop then adds its loss); a ``drop_path_prob`` attribute, if any,
        is set before every epoch.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot build an evaluation network")


# --- what a space plugin declares at import time --------------------------------------------------

def operation_names(operations: Sequence[str]) -> list[str]:
    """The ``operations`` key of a cell space as a list: at least one name, none twice
    (``ValueError`` naming the key otherwise)."""
    operations = list(operations)
    if not operations:
        raise ValueError("operations: expected at least one operation")
    dupes = sorted(op for op, n in Counter(operations).items() if n > 1)  # linear: no list.count per op
    if dupes:
        shown = ", ".join(map(repr, dupes[:5])) + (f" and {len(dupes) - 5} more" if len(dupes) > 5 else "")
        raise ValueError(f"operations: {shown} listed more than once")
    return operations


class OperationTable:
    """A plugin's operations in registration order, each with its registry metadata.

    Declare an op where its factory is defined, and register them all from the
    ``register_operations`` hook. This class does not import torch: keep the factories in a module
    that does not either, importing their torch modules when called, and loading the plugin
    (``nasreg validate``, ``list-plugins``) stays fast::

        OPERATIONS = nasreg.OperationTable()

        @OPERATIONS.add(is_zero=False, parameter_free=False, kind="conv")
        def conv_3x3(C, stride, affine):
            '''ReLU, 3x3 convolution, BN.'''            # the registry's description
            return nasreg.ReLUConvBN(C, C, 3, stride, 1, affine=affine)

        @hookimpl
        def register_operations(register):
            OPERATIONS.register_all(register)
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}

    def add(self, name: str | None = None, **metadata: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: add the factory under ``name`` (default: the function's name) with
        ``metadata``; returns the factory unchanged. A name added twice raises ``ValueError``."""
        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            key = factory.__name__ if name is None else name
            if key in self._entries:
                raise ValueError(f"operation {key!r} is already in this table")
            self._entries[key] = (factory, copy.deepcopy(metadata))
            return factory
        return decorate

    def factories(self) -> dict[str, Callable[..., Any]]:
        """name -> factory, in order."""
        return {name: factory for name, (factory, _meta) in self._entries.items()}

    def metadata(self) -> dict[str, dict[str, Any]]:
        """name -> registry metadata (copies), in order."""
        return {name: copy.deepcopy(meta) for name, (_factory, meta) in self._entries.items()}

    def register_all(self, register: Callable[..., object]) -> None:
        """Register every op, in order, through a ``register_operations`` callable."""
        for name, (factory, meta) in self._entries.items():
            register(name, factory, **copy.deepcopy(meta))

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
