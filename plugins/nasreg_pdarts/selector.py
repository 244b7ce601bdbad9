"""The ``pdarts`` selector: P-DARTS's progressive search (Chen, Xie, Wu and Tian, "Progressive
Differentiable Architecture Search", ICCV 2019; reference code ``train_search.py``).

Stage ``i`` searches a supernet of ``cells[i]`` cells (CIFAR-10: 5, 11, 17) with skip-connection
dropout at ``skip_dropout[i]`` (0.0, 0.4, 0.7), decayed over the stage's epochs; after it every
edge keeps its ``keep_ops[i]`` heaviest ops (softmax of the stage's alphas; 8 -> 5 -> 3). The last
stage ends in the space's derivation (darts-cell: the DARTS rule, per node the two edges whose
strongest non-zero op weighs most, on each that op), then the search-space regularization: while
the normal cell has more than ``max_skip_connects`` (2) skip connections, the kept skip connection
of least weight is struck (its weight set to 0) and the cell derived again, so that edge takes its
next best op, or another edge of its node takes its place (``delete_min_sk_prob``,
``keep_1_on``, ``keep_2_branches`` in the reference code).

Nothing here names an op: skip connections are the ops whose registry metadata has
``kind == "identity"``, zero ops those declaring ``is_zero`` (``run.zero_ops()``).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Annotated, Any, Callable

import nasreg
from nasreg import GenotypeEdge, Range, SpecError, StageResult

NAME = "pdarts"

Derive = Callable[[StageResult], dict[str, list[GenotypeEdge]]]


class ProgressiveSelector(nasreg.Selector):
    """P-DARTS: deeper supernets stage by stage over fewer ops per edge, skip dropout, at most
    ``max_skip_connects`` skip connections in the normal cell.

    The keys of ``[selector]``; their defaults are the paper's CIFAR-10 search.

    Keys:
        stages: number of search stages (the paper: 3).
        cells: per stage, the supernet's cell count, its ``[search_space] cells`` (the paper: 5, 11, 17).
        keep_ops: per stage but the last, how many ops every edge keeps after it, strictly
            decreasing (the paper: 5, 3; the last stage keeps one, by the derivation).
        skip_dropout: per stage, the initial skip-connection dropout rate, its ``[search_space]
            skip_dropout`` (the paper: 0.0, 0.4, 0.7).
        skip_dropout_decay: the rate's decay over a stage, ``[search_space] skip_dropout_decay``
            (0: constant; P-DARTS's code: 0.2).
        max_skip_connects: the most skip connections (identity-kind ops) a derived cell of
            ``skip_limit_cells`` keeps (the paper: 2).
        skip_limit_cells: the cell types the skip limit applies to (the paper: the normal cell).
        inherit_weights: start a stage from the previous stage's weights where ops persist (the
            paper trains every stage from scratch).
    """

    def __init__(self, stages: Annotated[int, Range(ge=1, le=10)] = 3,
                 cells: list[Annotated[int, Range(ge=1, le=100)]] = [5, 11, 17],  # noqa: B006 - never mutated
                 keep_ops: list[Annotated[int, Range(ge=1)]] = [5, 3],  # noqa: B006
                 skip_dropout: list[Annotated[float, Range(ge=0, lt=1)]] = [0.0, 0.4, 0.7],  # noqa: B006
                 skip_dropout_decay: Annotated[float, Range(ge=0)] = 0.2,
                 max_skip_connects: Annotated[int, Range(ge=0)] = 2,
                 skip_limit_cells: list[str] = ["normal"],  # noqa: B006
                 inherit_weights: bool = False) -> None:
        for key, values, want in (("cells", cells, stages), ("keep_ops", keep_ops, stages - 1),
                                  ("skip_dropout", skip_dropout, stages)):
            if len(values) != want:
                raise ValueError(f"{key}: expected {want} value{'s' if want != 1 else ''} (one per stage"
                                 f"{' but the last' if key == 'keep_ops' else ''}; stages = {stages}), "
                                 f"got {len(values)}")
        for i in range(1, len(keep_ops)):
            if keep_ops[i] >= keep_ops[i - 1]:
                raise ValueError(f"keep_ops: expected strictly decreasing counts, got {keep_ops[i - 1]} then "
                                 f"{keep_ops[i]} (after stages {i - 1} and {i})")
        self.num_stages = stages
        self.cells = list(cells)
        self.keep_ops = list(keep_ops)
        self.skip_dropout = list(skip_dropout)
        self.skip_dropout_decay = skip_dropout_decay
        self.max_skip_connects = max_skip_connects
        self.skip_limit_cells = list(skip_limit_cells)
        self.inherit_weights = inherit_weights

    def check(self, stages: list[tuple[int, int]]) -> None:
        """Every stage ranks ops by its alphas: it needs joint epochs (epochs > warm-up epochs)."""
        for i, (warmup, epochs) in enumerate(stages):
            if epochs <= warmup:
                raise SpecError(f"stage {i} has no joint epochs ({warmup} warm-up of {epochs}), so its alphas "
                                "never train and rank nothing: give it more epochs than warmup_epochs")

    def stage_space_keys(self, stage: int) -> dict[str, Any]:
        """Stage ``stage``'s supernet: its cell count and skip dropout."""
        return {"cells": self.cells[stage], "skip_dropout": self.skip_dropout[stage],
                "skip_dropout_decay": self.skip_dropout_decay}

    def next_candidates(self, result: StageResult, run: Any) -> nasreg.Candidates:
        """Every edge's ``keep_ops[stage]`` heaviest ops, in the stage's order."""
        self._check_cells(result)
        return prune(result, self.keep_ops[result.stage])

    def derive(self, result: StageResult, run: Any) -> nasreg.Genotype:
        """The space's derivation, then at most ``max_skip_connects`` skip connections in the
        ``skip_limit_cells``; the provenance lists the candidate counts of every stage and the
        skip connections struck."""
        self._check_cells(result)
        zero = run.zero_ops()
        ops = run.registries.operations
        kept, struck = limit_skip_connects(
            result, lambda r: run.space.derive(r, zero), lambda op: _is_identity(ops, op),
            self.max_skip_connects, self.skip_limit_cells)
        return nasreg.genotype_from_edges(
            kept, run, selector=NAME, stages=result.stage + 1, cells_per_stage=self.cells,
            keep_ops=self.keep_ops, max_skip_connects=self.max_skip_connects, skip_connects_struck=struck)

    def _check_cells(self, result: StageResult) -> None:
        unknown = [ct for ct in self.skip_limit_cells if ct not in result.candidates]
        if unknown:
            raise SpecError(f"[selector] skip_limit_cells: the search space has no {unknown[0]!r} cell "
                            f"(its cell types: {', '.join(sorted(result.candidates))})")


def _is_identity(ops: Any, name: str) -> bool:
    return ops.get(name).get("kind") == "identity"


def prune(result: StageResult, keep: int) -> nasreg.Candidates:
    """Per cell type and edge, the ``keep`` ops of heaviest softmax weight (ties: the earlier op),
    listed in the stage's candidate order; zero ops compete like the others (as in P-DARTS's
    ``get_min_k`` before the last stage)."""
    out: nasreg.Candidates = {}
    for ct, edges in result.candidates.items():
        out[ct] = []
        for ops, weights in zip(edges, result.alphas[ct]):
            ranked = sorted(range(len(ops)), key=lambda i: (-weights[i], i))[:keep]
            out[ct].append([ops[i] for i in sorted(ranked)])
    return out


def limit_skip_connects(result: StageResult, derive: Derive, is_identity: Callable[[str], bool],
                        limit: int, cell_types: list[str]) -> tuple[dict[str, list[GenotypeEdge]], list[dict]]:
    """``derive(result)``'s edges with at most ``limit`` identity ops in each of ``cell_types``.

    While a cell has more, its kept identity op of least weight gets weight 0 and the cell is
    derived again (P-DARTS's rule: that edge takes its next best op, or the node another edge).
    Returns the edges and what was struck, in order (``cell``, ``node``, ``input``, ``op``,
    ``weight``). A cell whose extra identities cannot be struck (an edge with no other non-zero
    op that its node must keep) keeps them, with a warning."""
    alphas = {ct: [list(w) for w in edges] for ct, edges in result.alphas.items()}
    index = {ct: {edge: e for e, edge in enumerate(edges)} for ct, edges in result.edges.items()}
    kept = derive(result)
    struck: list[dict] = []
    for ct in cell_types:
        while True:
            skips = []
            for edge in kept[ct]:
                if is_identity(edge.op):
                    e = index[ct][(edge.input, edge.node)]
                    w = alphas[ct][e][result.candidates[ct][e].index(edge.op)]
                    skips.append((w, e, edge))
            if len(skips) <= limit:
                break
            live = [s for s in skips if s[0] > 0]
            if not live:
                warnings.warn(f"pdarts: the {ct} cell keeps {len(skips)} skip connections (more than "
                              f"max_skip_connects = {limit}): their edges have no other op to take", stacklevel=2)
                break
            w, e, edge = min(live, key=lambda s: (s[0], s[1]))
            alphas[ct][e][result.candidates[ct][e].index(edge.op)] = 0.0
            struck.append({"cell": ct, "node": edge.node, "input": edge.input, "op": edge.op, "weight": w})
            kept = {**kept, ct: derive(dataclasses.replace(result, alphas=alphas))[ct]}
    return kept, struck
