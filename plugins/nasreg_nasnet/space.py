"""The NASNet cell search space (``[search_space] name = "nasnet-cell"``; Zoph et al., 2018).

A network stacks two kinds of cells, a Normal cell (keeps the spatial size) and a Reduction cell
(halves it). Each cell has ``blocks`` blocks (B; NASNet: 5). Nodes 0 and 1 are the cell's inputs
(the outputs of the cell two back, h_{i-1}, and of the previous cell, h_i); block b is node
b + 2. A block makes five decisions, in the order NASNet's controller emits them:

1. its first input: node 0, 1 or an earlier block (b + 2 choices);
2. its second input (the same b + 2 choices);
3. the op applied to the first input (one of ``operations``);
4. the op applied to the second input;
5. how the two results are combined: ``add`` or ``concat`` (concatenation, then a 1x1 conv back
   to the cell's channels), from ``combine``.

The blocks no other block reads are concatenated as the cell output. The Normal cell's 5B
decisions come first, then the Reduction cell's: 10B in all (NASNet's 2 x 5B). Decisions with one
choice (``combine = ["add"]``, a single op) are not decisions and are left out.

A genotype of this space has cells ``normal`` and ``reduce``; block b contributes the edges
``(node=b+2, input, op)`` (first input first), ``combine[b+2]`` and, if unused, ``b+2`` in
``concat``. :meth:`NasnetCellSpace.build_network` builds the network (:mod:`nasreg_nasnet.network`);
the space has no supernet (a gradient strategy cannot search it). The space factory,
``nasnet_cell`` (the spec schema of this space), lives in the torch-free
:mod:`nasreg_nasnet.factories`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import nasreg

from .decisions import COMBINE_METHODS, DiscreteSpace

if TYPE_CHECKING:  # pragma: no cover - annotations only: torch is imported when a network is built
    from torch import nn

__all__ = ["CELL_TYPES", "NasnetCellSpace"]

CELL_TYPES = ("normal", "reduce")


class NasnetCellSpace(DiscreteSpace, nasreg.SearchSpace):
    """NASNet's Normal and Reduction cells of ``blocks`` blocks (see the module docstring)."""

    name = "nasnet-cell"
    inputs_per_node = 2

    def __init__(self, operations: list[str], blocks: int = 5, combine: list[str] | None = None,
                 cells: int = 5, channels: int = 8, stem_multiplier: int = 3):
        operations = nasreg.operation_names(operations)
        combine = list(COMBINE_METHODS if combine is None else combine)
        if not combine or len(set(combine)) != len(combine):
            raise ValueError(f"combine: expected distinct methods among {list(COMBINE_METHODS)}, got {combine}")
        self.operations = operations
        self.blocks = blocks
        self.combine = combine
        self.cells = cells
        self.channels = channels
        self.stem_multiplier = stem_multiplier

    # -- the decisions a controller makes --------------------------------------------------------
    def all_decisions(self) -> list[tuple[str, int]]:
        out = []
        for ct in CELL_TYPES:
            for b in range(self.blocks):
                out += [(f"{ct}.block{b}.input_a", b + 2), (f"{ct}.block{b}.input_b", b + 2),
                        (f"{ct}.block{b}.op_a", len(self.operations)),
                        (f"{ct}.block{b}.op_b", len(self.operations)),
                        (f"{ct}.block{b}.combine", len(self.combine))]
        return out

    def decision_kinds(self) -> list[str]:
        """The kind of each decision of :meth:`decisions`, for mutation-based strategies such as
        ``evolution``: ``input`` (which earlier state a block reads), ``op`` or ``combine``."""
        kinds = {"input_a": "input", "input_b": "input", "op_a": "op", "op_b": "op", "combine": "combine"}
        return [kinds[name.rsplit(".", 1)[1]] for name, _n in self.decisions()]

    def build_genotype(self, choices: list[int]) -> nasreg.Genotype:
        cells = {}
        it = iter(choices)
        for ct in CELL_TYPES:
            edges, combine, used = [], {}, set()
            for b in range(self.blocks):
                node = b + 2
                in_a, in_b, op_a, op_b, comb = (next(it) for _ in range(5))
                edges += [nasreg.GenotypeEdge(node, in_a, self.operations[op_a]),
                          nasreg.GenotypeEdge(node, in_b, self.operations[op_b])]
                combine[node] = self.combine[comb]
                used.update(i for i in (in_a, in_b) if i >= 2)
            concat = [n for n in range(2, self.blocks + 2) if n not in used]
            cells[ct] = nasreg.CellGenotype(edges=edges, concat=concat, combine=combine)
        return nasreg.Genotype(space=self.name, cells=cells)

    # -- the SearchSpace contract ----------------------------------------------------------------
    def edges(self) -> dict[str, list[tuple[int, int]]]:
        cell = [(i, b + 2) for b in range(self.blocks) for i in range(b + 2)]
        return {ct: list(cell) for ct in CELL_TYPES}

    def concat(self, cell_type: str) -> list[int]:
        """Every block (a genotype concatenates only its unused ones)."""
        if cell_type not in CELL_TYPES:
            raise KeyError(f"unknown cell type {cell_type!r} (expected one of {CELL_TYPES})")
        return list(range(2, self.blocks + 2))

    def build_network(self, genotype: nasreg.Genotype, *, ops: nasreg.Registry, in_channels: int,
                      num_classes: int, cells: int | None = None, channels: int | None = None,
                      auxiliary: bool = False, stem_multiplier: int | None = None, **keys: Any) -> nn.Module:
        """The network of ``genotype``: ``cells`` cells of ``channels`` initial channels (default:
        the space's own, the size children are trained at during a search; ``nasreg train`` and
        ``[evaluate]`` pass theirs). The genotype fixes the blocks; ``blocks`` is not used here."""
        if keys:
            raise TypeError(f"nasnet-cell network: unknown key {sorted(keys)[0]!r}")
        from .network import NasnetNetwork

        return NasnetNetwork(genotype, ops=ops, in_channels=in_channels, num_classes=num_classes,
                             cells=self.cells if cells is None else cells,
                             channels=self.channels if channels is None else channels,
                             stem_multiplier=stem_multiplier or self.stem_multiplier, auxiliary=auxiliary)

    def __repr__(self) -> str:
        return (f"NasnetCellSpace(blocks={self.blocks}, ops={len(self.operations)}, combine={self.combine}, "
                f"cells={self.cells}, channels={self.channels})")
