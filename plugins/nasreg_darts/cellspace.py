"""The DARTS cell search space object (``[search_space] name = "darts-cell"``), without torch.

:class:`DartsCellSpace` checks the space's keys and knows its edges; its supernet
(:class:`nasreg_darts.space.DartsSupernet`) and evaluation network are torch modules, imported
when it builds them. So ``nasreg validate`` builds the space (every check of its keys, the same
as ``nasreg run``'s) without paying for torch.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import TYPE_CHECKING

import nasreg

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from torch import nn

    from .space import DartsSupernet

__all__ = ["CELL_TYPES", "DartsCellSpace", "skip_dropout_rate"]

CELL_TYPES = ("normal", "reduce")


class DartsCellSpace(nasreg.SearchSpace):
    """The DARTS cell space: ``nodes`` intermediate nodes per cell, normal and reduction cells."""

    inputs_per_node = 2

    def __init__(self, operations: list[str], nodes: int = 4, cells: int = 8, channels: int = 16,
                 stem_multiplier: int = 3, reductions: list[int] | None = None, drop_path: float = 0.0,
                 affine: bool = False, alpha_init_std: float = 1e-3, partial_channels: int = 1,
                 edge_normalization: bool = False, skip_dropout: float = 0.0, skip_dropout_decay: float = 0.0,
                 batched_edges: bool = True):
        operations = nasreg.operation_names(operations)
        if reductions is None:
            reductions = sorted({cells // 3, 2 * cells // 3})  # nasreg.default_reductions (torch-free)
        bad = [r for r in reductions if not 0 <= r < cells]
        if bad:
            raise ValueError(f"reductions: cell index {bad[0]} is out of range: there are {cells} cells "
                             f"(indices 0 to {cells - 1})")
        twice = [r for r, n in Counter(reductions).items() if n > 1]
        if twice:
            raise ValueError(f"reductions: duplicate cell index {twice[0]} (listed more than once)")
        if partial_channels < 1 or channels % partial_channels:
            raise ValueError(f"partial_channels: channels ({channels}) must be a multiple of partial_channels "
                             f"({partial_channels})")
        self.operations = operations
        self.nodes = nodes
        self.cells = cells
        self.channels = channels
        self.stem_multiplier = stem_multiplier
        self.reductions = sorted(reductions)
        self.drop_path = drop_path
        self.affine = affine
        self.alpha_init_std = alpha_init_std
        self.partial_channels = int(partial_channels)
        self.edge_normalization = bool(edge_normalization)
        self.batched_edges = bool(batched_edges)
        if not 0.0 <= skip_dropout < 1.0:
            raise ValueError(f"skip_dropout: expected a rate in [0, 1), got {skip_dropout}")
        if skip_dropout_decay < 0:
            raise ValueError(f"skip_dropout_decay: expected a number >= 0, got {skip_dropout_decay}")
        self.skip_dropout = float(skip_dropout)
        self.skip_dropout_decay = float(skip_dropout_decay)
        missing = [ct for ct, n in (("normal", cells - len(self.reductions)), ("reduce", len(self.reductions)))
                   if n == 0]
        if missing:
            warnings.warn(f"darts-cell: no {missing[0]} cell among {cells} cells (reductions="
                          f"{self.reductions}): its architecture parameters get no gradient", stacklevel=3)

    def edges(self) -> dict[str, list[tuple[int, int]]]:
        cell = [(i, j) for j in range(2, self.nodes + 2) for i in range(j)]
        return {ct: list(cell) for ct in CELL_TYPES}

    def concat(self, cell_type: str) -> list[int]:
        if cell_type not in CELL_TYPES:
            raise KeyError(f"unknown cell type {cell_type!r} (expected one of {CELL_TYPES})")
        return list(range(2, self.nodes + 2))

    # -- discrete decisions (sampling strategies: reinforce, random, enas) ---------------------------
    @property
    def sampled_operations(self) -> list[str]:
        """The ops a sampled cell may put on an edge: ``operations`` without the zero ops (those
        the ``darts`` plugin's op table declares ``is_zero``, e.g. ``none``), in spec order."""
        from .factories import OPERATIONS  # torch-free

        meta = OPERATIONS.metadata()

        def zero(name: str) -> bool:
            plugin, _, bare = name.rpartition(":")
            return plugin in ("", "darts") and bool(meta.get(bare, {}).get("is_zero", False))

        return [op for op in self.operations if not zero(op)]

    def _all_decisions(self) -> list[tuple[str, int]]:
        """Every decision of a cell pair, single-choice ones included: per cell type and node
        ``j``, its first input (``j`` choices: nodes 0 .. j-1), its second input (``j - 1``: the
        other nodes, in order), then an op for each (ENAS's micro order: index 1, index 2, op 1,
        op 2)."""
        n_ops = len(self.sampled_operations)
        out = []
        for ct in CELL_TYPES:
            for j in range(2, self.nodes + 2):
                out += [(f"{ct} node {j} input 1", j), (f"{ct} node {j} input 2", j - 1),
                        (f"{ct} node {j} op 1", n_ops), (f"{ct} node {j} op 2", n_ops)]
        return out

    def decisions(self) -> list[tuple[str, int]]:
        """The decisions a controller emits for one architecture (name, number of choices), in
        order; decisions with a single choice (node 2's second input) are left out."""
        if not self.sampled_operations:
            raise ValueError("operations: every operation is a zero op: a sampled cell has nothing to put on its edges")
        return [(name, n) for name, n in self._all_decisions() if n > 1]

    def genotype_from_choices(self, choices) -> nasreg.Genotype:
        """The genotype of one choice per decision of :meth:`decisions` (``ValueError`` for a list
        of the wrong length or a choice out of range): per node two distinct inputs, an op each."""
        every = self._all_decisions()
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
        ops, cells, k = self.sampled_operations, {}, 0
        for ct in CELL_TYPES:
            edges = []
            for j in range(2, self.nodes + 2):
                a, b, op_a, op_b = full[k:k + 4]
                k += 4
                others = [i for i in range(j) if i != a]
                edges += [nasreg.GenotypeEdge(node=j, input=a, op=ops[op_a]),
                          nasreg.GenotypeEdge(node=j, input=others[b], op=ops[op_b])]
            cells[ct] = nasreg.CellGenotype(edges=edges, concat=self.concat(ct))
        return nasreg.Genotype(space="darts-cell", cells=cells)

    def search_space_size(self) -> int:
        """How many distinct choice sequences there are (the product of the choice counts)."""
        size = 1
        for _name, n in self.decisions():
            size *= n
        return size

    def derive(self, result: nasreg.StageResult, zero_ops: set[str]) -> dict[str, list[nasreg.GenotypeEdge]]:
        """The DARTS derivation of ``result``: per node the ``inputs_per_node`` (2) strongest edges,
        stronger first, on each its strongest op not in ``zero_ops`` (:func:`nasreg_darts.derive.derive_topk`)."""
        from .derive import derive_topk

        return derive_topk(result.alphas, result.candidates, result.edges, zero_ops, k=self.inputs_per_node)

    def check_candidates(self, candidates: nasreg.Candidates) -> None:
        """Raise ValueError unless ``candidates`` has one non-empty, duplicate-free op list per edge."""
        edges = self.edges()
        if set(candidates) != set(edges):
            raise ValueError(f"candidates: expected cell types {sorted(edges)}, got {sorted(candidates)}")
        for ct, cell_edges in edges.items():
            if len(candidates[ct]) != len(cell_edges):
                raise ValueError(f"candidates[{ct!r}]: expected {len(cell_edges)} edges, got {len(candidates[ct])}")
            for idx, cands in enumerate(candidates[ct]):
                if not cands:
                    raise ValueError(f"candidates[{ct!r}][{idx}]: no operation")
                twice = [op for op, n in Counter(cands).items() if n > 1]
                if twice:
                    raise ValueError(f"candidates[{ct!r}][{idx}]: duplicate operation {twice[0]!r}")

    def build_supernet(self, candidates: nasreg.Candidates, *, ops: nasreg.Registry, in_channels: int,
                       num_classes: int) -> DartsSupernet:
        from .space import DartsSupernet

        self.check_candidates(candidates)
        return DartsSupernet(self, candidates, ops=ops, in_channels=in_channels, num_classes=num_classes)

    def build_network(self, genotype: nasreg.Genotype, *, ops: nasreg.Registry, in_channels: int,
                      num_classes: int, cells: int = 20, channels: int = 36, auxiliary: bool = False,
                      stem_multiplier: int | None = None, **keys) -> nn.Module:
        """DARTS's evaluation network for ``genotype`` (:class:`nasreg_darts.network.DartsEvalNetwork`).

        ``cells`` and ``channels`` are the evaluation network's own (DARTS: 20 and 36), not the
        search supernet's; reductions follow the DARTS rule for that many cells. The cell's node
        count and its concat come from the genotype. ``stem_multiplier`` defaults to the space's.
        """
        from .network import DartsEvalNetwork

        if keys:
            raise TypeError(f"darts-cell network: unknown key {sorted(keys)[0]!r}")
        return DartsEvalNetwork(genotype, ops=ops, in_channels=in_channels, num_classes=num_classes,
                                cells=cells, channels=channels,
                                stem_multiplier=stem_multiplier or self.stem_multiplier,
                                auxiliary=auxiliary)

    def __repr__(self) -> str:
        pc = f", partial_channels={self.partial_channels}" if self.partial_channels > 1 else ""
        en = ", edge_normalization=True" if self.edge_normalization else ""
        sd = f", skip_dropout={self.skip_dropout:g}" if self.skip_dropout else ""
        return (f"DartsCellSpace(nodes={self.nodes}, cells={self.cells}, channels={self.channels}, "
                f"reductions={self.reductions}, ops={len(self.operations)}{pc}{en}{sd})")

    def memory_knobs(self) -> list[str]:
        """Spec settings that shrink a search step's memory (the pre-flight names them when it does
        not fit): partial channels (PC-DARTS), unless already at 1/4 or less."""
        return ["[search_space] partial_channels = 4"] if self.partial_channels < 4 else []


def skip_dropout_rate(rate: float, decay: float, epoch: int, epochs: int, warmup: int) -> float:
    """The skip-connection dropout rate of ``epoch`` (from 0) of a stage of ``epochs`` epochs, the
    first ``warmup`` of them warm-up epochs (P-DARTS, ``train_search.py``).

    ``decay`` = 0: ``rate`` in every epoch. ``decay`` > 0: P-DARTS's schedule, ``rate * (epochs -
    epoch - 1) / epochs`` in warm-up epochs and ``rate * exp(-(epoch - warmup) * decay)`` in joint
    epochs (the reference code's decay is 0.2)."""
    if decay <= 0 or rate <= 0:
        return rate
    if epoch < warmup:
        return rate * (epochs - epoch - 1) / epochs
    return rate * math.exp(-(epoch - warmup) * decay)
