"""The network of a ``nasnet-cell`` genotype (NASNet's CIFAR layout, built from the registry).

* a stem: 3x3 conv to ``stem_multiplier * channels`` channels, BatchNorm;
* ``cells`` cells; the ones at ``cells // 3`` and ``2 * cells // 3`` are reduction cells (stride
  2 on the ops that read the cell's inputs, channels doubled), the others normal cells. With
  ``cells = 3N + 2`` this is NASNet's CIFAR network, N normal cells per stage and a reduction
  cell between stages (N = 6: 20 cells);
* a cell reads the outputs of the two previous cells (node 0: the one two back, after a 1x1
  ReLUConvBN, or a FactorizedReduce when it has twice the spatial size; node 1: the previous one,
  after a 1x1 ReLUConvBN) and computes its blocks (nodes 2, 3, ...): each applies one op to each
  of its inputs and combines the results by ``add`` (sum) or ``concat`` (concatenation, then a
  1x1 ReLUConvBN back to the cell's channels), as the genotype's ``combine`` says (default: add);
  the cell output concatenates the genotype's ``concat`` blocks (the unused ones);
* optionally an auxiliary head (DARTS's) after cell ``2 * cells // 3``, used while training;
* global average pooling and a linear classifier.

Ops are built as ``factory(C, stride, True, **eval_kwargs)``, like DARTS's evaluation network, so
any registered op works; the network is a :class:`nasreg.CellNetwork` of :class:`nasreg.CellBase`
cells, like DARTS's. Drop path (probability :attr:`NasnetNetwork.drop_path_prob`, set by the
training loop) zeroes op outputs per sample, never those of an ``nn.Identity``.
"""

from __future__ import annotations

import torch
from torch import nn

import nasreg
from nasreg import GenotypeError

__all__ = ["COMBINE_METHODS", "NasnetCell", "NasnetNetwork", "cell_plan"]

from .decisions import COMBINE_METHODS  # noqa: E402 - defined torch-free, re-exported


def cell_plan(genotype: nasreg.Genotype, cell_type: str, ops: nasreg.Registry
              ) -> tuple[dict[int, list[nasreg.GenotypeEdge]], list[int], dict[int, str]]:
    """Check one cell of a NASNet genotype; returns (node -> edges, concat, node -> combine).

    Blocks are nodes 2..N, each with at least one edge from an earlier node; ``concat`` names
    blocks once each (:func:`nasreg.check_cell`); ``combine`` is ``add`` or ``concat`` (missing:
    ``add``); every op is registered. Raises :class:`GenotypeError` with the key path
    (``cells.normal...``).
    """
    by_node, concat = nasreg.check_cell(genotype, cell_type, "nasnet-cell", noun="block", label="block node")
    last = max(by_node)
    combine = genotype.cells[cell_type].combine
    for node, method in combine.items():
        if node not in by_node:
            raise GenotypeError(f"cells.{cell_type}.combine: node {node} is not a block (2..{last})")
        if method not in COMBINE_METHODS:
            raise GenotypeError(f"cells.{cell_type}.combine: node {node}: unknown method {method!r} "
                                f"(expected one of {', '.join(COMBINE_METHODS)})")
    nasreg.check_cell_ops(by_node, cell_type, ops)
    return by_node, concat, {n: combine.get(n, "add") for n in sorted(by_node)}


class NasnetCell(nasreg.CellBase):
    """One NASNet cell: preprocessing, the blocks (one op per input, add or concat), concat
    (:class:`nasreg.CellBase`; a concat block adds a 1x1 ReLUConvBN back to the cell's channels)."""

    def __init__(self, by_node: dict[int, list[nasreg.GenotypeEdge]], concat: list[int],
                 combine: dict[int, str], C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, ops: nasreg.Registry):
        super().__init__(C_prev_prev, C_prev, C, reduction, reduction_prev, concat)
        #: per concat-combining node: the 1x1 ReLUConvBN back to C channels
        self.combiners = nn.ModuleDict()
        for node in sorted(by_node):
            inputs = self.add_node(node, by_node[node], C, ops)
            if combine[node] == "concat" and inputs > 1:
                self.combiners[str(node)] = nasreg.ReLUConvBN(inputs * C, C, 1, 1, 0, affine=True)

    def combine(self, node: int, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The block's concat combiner on its concatenated op outputs, else their sum."""
        if str(node) in self.combiners:
            return self.combiners[str(node)](torch.cat(outputs, dim=1))
        return super().combine(node, outputs)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        # Contiguous (a no-op unless an op returned a channels-last tensor): on CPU, torch 2.14's
        # oneDNN corrupts the heap in the backward pass of a 1x1 stride-2 convolution (the next
        # cell's FactorizedReduce) on a channels-last input of fewer than 8 channels.
        return super().forward(s0, s1, drop_prob).contiguous()


class NasnetNetwork(nasreg.CellNetwork):
    """The network of a ``nasnet-cell`` genotype (see the module docstring)."""

    def __init__(self, genotype: nasreg.Genotype, *, ops: nasreg.Registry, in_channels: int,
                 num_classes: int, cells: int = 5, channels: int = 8, stem_multiplier: int = 3,
                 auxiliary: bool = False):
        reductions = nasreg.default_reductions(cells) if cells >= 3 else []
        plans = {ct: cell_plan(genotype, ct, ops) for ct in self.cell_types(cells, channels, reductions)}

        def make_cell(C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool) -> NasnetCell:
            by_node, concat, combine = plans["reduce" if reduction else "normal"]
            return NasnetCell(by_node, concat, combine, C_prev_prev, C_prev, C, reduction, reduction_prev, ops)

        super().__init__(make_cell, in_channels=in_channels, num_classes=num_classes, cells=cells,
                         channels=channels, stem_multiplier=stem_multiplier, reductions=reductions,
                         auxiliary=auxiliary)
