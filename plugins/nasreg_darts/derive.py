"""The DARTS derivation rule: architecture weights to the edges of a discrete cell.

Liu et al. (ICLR 2019), section 2.4, and ``_parse`` in the reference code (``model_search.py``):
for every intermediate node keep the ``k`` incoming edges whose strongest non-zero op weighs
most, and on each edge that op. The zero ops (``none``) are never picked.

The darts-cell space applies it (:meth:`nasreg_darts.space.DartsCellSpace.derive`, ``k`` = its
``inputs_per_node``); the selectors that end in the DARTS derivation (``argmax``, ``dg-darts``)
reach it through the space, never by importing this module.
"""

from __future__ import annotations

from typing import Iterable

from nasreg import GenotypeEdge

__all__ = ["derive_topk"]


def derive_topk(alphas: dict[str, list[list[float]]], candidates: dict[str, list[list[str]]],
                edges: dict[str, list[tuple[int, int]]], zero_ops: Iterable[str], k: int = 2
                ) -> dict[str, list[GenotypeEdge]]:
    """The kept edges of every cell type: per node the ``k`` strongest, stronger edge first.

    ``alphas[ct][e]`` are the weights of ``candidates[ct][e]`` on edge ``edges[ct][e]`` (input
    node, output node). An edge's strength is the weight of its strongest op not in
    ``zero_ops``; an edge whose ops are all zero ops is never kept. Ties go to the earlier op on
    an edge and to the lower input node between edges.

    Nodes are listed in increasing order; a node's kept edges are listed **stronger first**, as
    the reference code and its published genotypes list them (DARTS_V2's normal cell starts
    ``('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
    ('sep_conv_3x3', 1), ('skip_connect', 0)``: node 4 reads input 1 before input 0).
    """
    zero = set(zero_ops)
    out: dict[str, list[GenotypeEdge]] = {}
    for ct, cell_edges in edges.items():
        by_node: dict[int, list[tuple[float, GenotypeEdge]]] = {}
        for (src, dst), weights, ops in zip(cell_edges, alphas[ct], candidates[ct]):
            best = _strongest_op(weights, ops, zero)
            if best is not None:
                by_node.setdefault(dst, []).append((best[0], GenotypeEdge(dst, src, best[1])))
        out[ct] = [edge for dst in sorted(by_node) for edge in _strongest_edges(by_node[dst], k)]
    return out


def _strongest_op(weights: list[float], ops: list[str], zero: set[str]) -> tuple[float, str] | None:
    """(weight, name) of the heaviest op not in ``zero`` (the first of equals), or None."""
    best = None
    for w, op in zip(weights, ops):
        if op not in zero and (best is None or w > best[0]):
            best = (w, op)
    return best


def _strongest_edges(ranked: list[tuple[float, GenotypeEdge]], k: int) -> list[GenotypeEdge]:
    """The ``k`` heaviest edges into one node, heaviest first (ties: lower input node first)."""
    ordered = sorted(ranked, key=lambda t: (-t[0], t[1].input))
    return [edge for _, edge in ordered[:k]]
