"""The DARTS cell search space (``[search_space] name = "darts-cell"``) and its supernet.

A cell is a DAG over ``nodes + 2`` nodes: nodes 0 and 1 are its inputs (the outputs of the two
previous cells, after a 1x1 ReLUConvBN, or a FactorizedReduce when the cell two back has twice
the spatial size), nodes 2 .. nodes+1 are intermediate nodes, each the sum of one mixed op per
earlier node. The cell's output concatenates the intermediate nodes. There are two cell types,
``normal`` and ``reduce``; a reduction cell doubles the channels and applies stride 2 on the
edges leaving its input nodes. All cells of one type share one alpha per edge.

The supernet is the DARTS search network: a 3x3 stem conv to ``stem_multiplier * channels``
channels with BatchNorm, the cells, global average pooling, a linear classifier. Every spatial
reduction rounds up (``ceil(H/2)``), so any input size H, W >= 1 works.
"""

from __future__ import annotations

import warnings
from typing import Annotated

import torch
from torch import nn

import nasreg
from nasreg import Range, Ref

from .ops import FactorizedReduce, ReLUConvBN

CELL_TYPES = ("normal", "reduce")


def default_reductions(cells: int) -> list[int]:
    """The DARTS rule: reduction cells at ``cells // 3`` and ``2 * cells // 3`` (deduplicated)."""
    return sorted({cells // 3, 2 * cells // 3})


class DropPathMixedOp(nasreg.MixedOp):
    """:class:`nasreg.MixedOp` with drop path on its op outputs while training.

    With probability ``drop_prob``, independently per sample and per op, an op's output is
    replaced by zeros; kept outputs are scaled by ``1 / (1 - drop_prob)`` (DARTS's ``drop_path``).
    Ops built as ``nn.Identity`` (``skip_connect`` at stride 1) are never dropped -- the rule of
    DARTS's evaluation network; zero ops have no module and nothing to drop. In eval mode, or
    with ``drop_prob == 0``, this is exactly :class:`nasreg.MixedOp` (same parameter names).
    """

    def __init__(self, candidates: list[str], C: int, stride: int, ops: nasreg.Registry,
                 affine: bool = False, drop_prob: float = 0.0):
        super().__init__(candidates, C, stride, ops, affine)
        self.drop_prob = float(drop_prob)
        # (position of the op in the candidate list, may it be dropped, module): public attributes only
        self._plan = [(self.candidates.index(name), not isinstance(module, nn.Identity), module)
                      for name, module in self.ops.items()]

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        p = self.drop_prob
        if not self.training or p <= 0.0 or not self._plan:
            return super().forward(x, weights)
        keep = 1.0 - p
        out = None
        for i, droppable, module in self._plan:
            y = module(x)
            if droppable:
                mask = torch.empty(y.shape[0], 1, 1, 1, device=y.device, dtype=y.dtype).bernoulli_(keep)
                y = y * (weights[i] / keep * mask)  # one elementwise multiply for weight and mask
            else:
                y = weights[i] * y
            out = y if out is None else out + y
        return out


class SearchCell(nn.Module):
    """One cell of the search supernet: preprocessing, a mixed op per edge, concat of the nodes."""

    def __init__(self, cell_type: str, edges: list[tuple[int, int]], candidates: list[list[str]],
                 C_prev_prev: int, C_prev: int, C: int, reduction_prev: bool, *,
                 ops: nasreg.Registry, affine: bool, drop_prob: float):
        super().__init__()
        self.cell_type = cell_type
        self.reduction = cell_type == "reduce"
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C, affine=affine)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=affine)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=affine)
        self.edges = nn.ModuleList()
        # node -> [(edge index, input node)] in edge order
        self._inputs: dict[int, list[tuple[int, int]]] = {}
        for idx, ((src, dst), cands) in enumerate(zip(edges, candidates)):
            stride = 2 if self.reduction and src < 2 else 1
            self.edges.append(DropPathMixedOp(cands, C, stride, ops, affine, drop_prob))
            self._inputs.setdefault(dst, []).append((idx, src))
        self._nodes = sorted(self._inputs)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in self._nodes:
            total = None
            for idx, src in self._inputs[node]:
                y = self.edges[idx](states[src], weights[idx])
                total = y if total is None else total + y
            states.append(total)
        return torch.cat(states[2:], dim=1)


class DartsSupernet(nasreg.Supernet):
    """The DARTS search network over per-edge candidate sets."""

    def __init__(self, space: "DartsCellSpace", candidates: nasreg.Candidates, *, ops: nasreg.Registry,
                 in_channels: int, num_classes: int):
        super().__init__(candidates, alpha_init_std=space.alpha_init_std)
        edges = space.edges()
        C = space.channels
        C_curr = space.stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),  # affine, as in the DARTS search network
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        reduction_prev = False
        self.cells = nn.ModuleList()
        reductions = set(space.reductions)
        for i in range(space.cells):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            ct = "reduce" if reduction else "normal"
            self.cells.append(SearchCell(ct, edges[ct], self.candidates[ct], C_prev_prev, C_prev, C_curr,
                                         reduction_prev, ops=ops, affine=space.affine,
                                         drop_prob=space.drop_path))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, space.nodes * C_curr
        self._used_types = sorted({cell.cell_type for cell in self.cells})
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    @property
    def drop_prob(self) -> float:
        """The drop-path probability of every mixed op (set it to change it during a search)."""
        return next((m.drop_prob for m in self.modules() if isinstance(m, DropPathMixedOp)), 0.0)

    @drop_prob.setter
    def drop_prob(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {p}")
        for m in self.modules():
            if isinstance(m, DropPathMixedOp):
                m.drop_prob = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = {ct: self.edge_weights(ct) for ct in self._used_types}  # one softmax per forward
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, weights[cell.cell_type])
        return self.classifier(self.global_pooling(s1).flatten(1))


class DartsCellSpace(nasreg.SearchSpace):
    """The DARTS cell space: ``nodes`` intermediate nodes per cell, normal and reduction cells."""

    inputs_per_node = 2

    def __init__(self, operations: list[str], nodes: int = 4, cells: int = 8, channels: int = 16,
                 stem_multiplier: int = 3, reductions: list[int] | None = None, drop_path: float = 0.0,
                 affine: bool = False, alpha_init_std: float = 1e-3):
        operations = list(operations)
        if not operations:
            raise ValueError("operations: expected at least one operation")
        dupes = sorted({op for op in operations if operations.count(op) > 1})
        if dupes:
            raise ValueError(f"operations: {', '.join(map(repr, dupes))} listed more than once")
        if reductions is None:
            reductions = default_reductions(cells)
        bad = [r for r in reductions if not 0 <= r < cells]
        if bad:
            raise ValueError(f"reductions: cell index {bad[0]} is out of range: there are {cells} cells "
                             f"(indices 0 to {cells - 1})")
        if len(set(reductions)) != len(reductions):
            raise ValueError(f"reductions: duplicate cell index in {list(reductions)}")
        self.operations = operations
        self.nodes = nodes
        self.cells = cells
        self.channels = channels
        self.stem_multiplier = stem_multiplier
        self.reductions = sorted(reductions)
        self.drop_path = drop_path
        self.affine = affine
        self.alpha_init_std = alpha_init_std
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
                if len(set(cands)) != len(cands):
                    raise ValueError(f"candidates[{ct!r}][{idx}]: duplicate operation in {list(cands)}")

    def build_supernet(self, candidates: nasreg.Candidates, *, ops: nasreg.Registry, in_channels: int,
                       num_classes: int) -> DartsSupernet:
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
        return (f"DartsCellSpace(nodes={self.nodes}, cells={self.cells}, channels={self.channels}, "
                f"reductions={self.reductions}, ops={len(self.operations)})")


def darts_cell(
    operations: list[Annotated[str, Ref("operations")]],
    nodes: Annotated[int, Range(ge=1, le=16)] = 4,
    cells: Annotated[int, Range(ge=1, le=100)] = 8,
    channels: Annotated[int, Range(ge=1, le=1024)] = 16,
    stem_multiplier: Annotated[int, Range(ge=1, le=64)] = 3,
    reductions: list[Annotated[int, Range(ge=0)]] | None = None,
    drop_path: Annotated[float, Range(ge=0, lt=1)] = 0.0,
    affine: bool = False,
    alpha_init_std: Annotated[float, Range(ge=0, le=10)] = 1e-3,
) -> DartsCellSpace:
    """The DARTS cell: 2 input nodes, `nodes` intermediate nodes, normal and reduction cells.

    ``reductions`` lists the indices of the reduction cells (default: ``cells // 3`` and
    ``2 * cells // 3``). ``drop_path`` applies drop path to every op output of every edge except
    identities while the supernet trains. ``affine`` gives the cells' BatchNorms (ops and
    preprocessing) a scale and shift; the stem's BN always has one, as in DARTS.
    """
    return DartsCellSpace(operations, nodes=nodes, cells=cells, channels=channels,
                          stem_multiplier=stem_multiplier, reductions=reductions, drop_path=drop_path,
                          affine=affine, alpha_init_std=alpha_init_std)
