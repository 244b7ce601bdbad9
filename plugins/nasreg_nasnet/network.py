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
any registered op works. Drop path (probability :attr:`NasnetNetwork.drop_path_prob`, set by the
training loop) zeroes op outputs per sample, never those of an ``nn.Identity``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import nasreg
from nasreg import GenotypeError
from nasreg_darts.network import AuxiliaryHead, drop_path
from nasreg_darts.ops import FactorizedReduce, ReLUConvBN

__all__ = ["COMBINE_METHODS", "NasnetCell", "NasnetNetwork", "cell_plan"]

COMBINE_METHODS = ("add", "concat")


def cell_plan(genotype: nasreg.Genotype, cell_type: str, ops: nasreg.Registry
              ) -> tuple[dict[int, list[nasreg.GenotypeEdge]], list[int], dict[int, str]]:
    """Check one cell of a NASNet genotype; returns (node -> edges, concat, node -> combine).

    Blocks are nodes 2..N, each with at least one edge from an earlier node; ``concat`` names
    blocks once each; ``combine`` is ``add`` or ``concat`` (missing: ``add``); every op is
    registered. Raises :class:`GenotypeError` with the key path (``cells.normal...``).
    """
    where = f"cells.{cell_type}"
    cell = genotype.cells.get(cell_type)
    if cell is None:
        raise GenotypeError(f"{where}: missing (a nasnet-cell genotype has cells 'normal' and "
                            f"'reduce'; it has {sorted(genotype.cells)})")
    by_node = cell.by_node()
    nodes = sorted(by_node)
    if nodes[0] < 2:
        raise GenotypeError(f"{where}: node {nodes[0]} has an incoming edge, but nodes 0 and 1 are "
                            "the cell's inputs (blocks are nodes 2, 3, ...)")
    gap = next((n for n, m in zip(range(2, 2 + len(nodes)), nodes) if n != m), None)
    if gap is not None:
        raise GenotypeError(f"{where}: block node {gap} has no incoming edge (blocks are nodes "
                            f"2..{nodes[-1]}, each with at least one edge)")
    last = nodes[-1]
    for node, method in cell.combine.items():
        if node not in by_node:
            raise GenotypeError(f"{where}.combine: node {node} is not a block (2..{last})")
        if method not in COMBINE_METHODS:
            raise GenotypeError(f"{where}.combine: node {node}: unknown method {method!r} "
                                f"(expected one of {', '.join(COMBINE_METHODS)})")
    concat = list(cell.concat)
    bad = [c for c in concat if not 2 <= c <= last]
    if bad:
        raise GenotypeError(f"{where}.concat: node {bad[0]} is not a block (expected nodes in 2..{last})")
    if len(set(concat)) != len(concat):
        raise GenotypeError(f"{where}.concat: a node is listed twice in {concat}")
    for node_edges in by_node.values():
        for e in node_edges:
            try:
                ops.get(e.op)
            except nasreg.RegistryError as exc:
                raise GenotypeError(f"{where}: {exc}") from None
    combine = {n: cell.combine.get(n, "add") for n in nodes}
    return by_node, concat, combine


class NasnetCell(nn.Module):
    """One NASNet cell: preprocessing, the blocks (one op per input, add or concat), concat."""

    def __init__(self, by_node: dict[int, list[nasreg.GenotypeEdge]], concat: list[int],
                 combine: dict[int, str], C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, ops: nasreg.Registry):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C, affine=True)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=True)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=True)
        self.ops = nn.ModuleList()
        #: per concat-combining node: the 1x1 ReLUConvBN back to C channels
        self.combiners = nn.ModuleDict()
        #: per node, in order: (node, [(index into self.ops, input node, may it be dropped)])
        self._nodes: list[tuple[int, list[tuple[int, int, bool]]]] = []
        for node in sorted(by_node):
            inputs = []
            for edge in by_node[node]:
                entry = ops.get(edge.op)
                stride = 2 if reduction and edge.input < 2 else 1
                module = entry.factory(C, stride, True, **dict(entry.get("eval_kwargs", None) or {}))
                if not isinstance(module, nn.Module):
                    raise TypeError(f"operation {edge.op!r} factory returned {type(module).__name__}, "
                                    "not an nn.Module")
                inputs.append((len(self.ops), edge.input, not isinstance(module, nn.Identity)))
                self.ops.append(module)
            if combine[node] == "concat" and len(inputs) > 1:
                self.combiners[str(node)] = ReLUConvBN(len(inputs) * C, C, 1, 1, 0, affine=True)
            self._nodes.append((node, inputs))
        self.concat = list(concat)
        self.multiplier = len(concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states: dict[int, torch.Tensor] = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        dropping = self.training and drop_prob > 0.0
        for node, inputs in self._nodes:
            outs = []
            for idx, src, droppable in inputs:
                h = self.ops[idx](states[src])
                if dropping and droppable:
                    h = drop_path(h, drop_prob)
                outs.append(h)
            combiner = self.combiners[str(node)] if str(node) in self.combiners else None
            if combiner is not None:
                states[node] = combiner(torch.cat(outs, dim=1))
            else:
                total = outs[0]
                for h in outs[1:]:
                    total = total + h
                states[node] = total
        # Contiguous (a no-op unless an op returned a channels-last tensor): on CPU, torch 2.14's
        # oneDNN corrupts the heap in the backward pass of a 1x1 stride-2 convolution (the next
        # cell's FactorizedReduce) on a channels-last input of fewer than 8 channels.
        return torch.cat([states[i] for i in self.concat], dim=1).contiguous()


class NasnetNetwork(nn.Module):
    """The network of a ``nasnet-cell`` genotype (see the module docstring)."""

    def __init__(self, genotype: nasreg.Genotype, *, ops: nasreg.Registry, in_channels: int,
                 num_classes: int, cells: int = 5, channels: int = 8, stem_multiplier: int = 3,
                 auxiliary: bool = False):
        super().__init__()
        if cells < 1 or channels < 1:
            raise ValueError(f"cells and channels must be >= 1, got cells={cells}, channels={channels}")
        self.reductions = sorted({cells // 3, 2 * cells // 3}) if cells >= 3 else []
        types = {"reduce" if i in self.reductions else "normal" for i in range(cells)}
        plans = {ct: cell_plan(genotype, ct, ops) for ct in sorted(types)}
        #: The drop-path probability of the next forward passes (set per epoch by the training loop).
        self.drop_path_prob = 0.0
        C_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        self.auxiliary_index = 2 * cells // 3
        C_aux = C_prev
        for i in range(cells):
            reduction = i in self.reductions
            if reduction:
                C_curr *= 2
            by_node, concat, combine = plans["reduce" if reduction else "normal"]
            cell = NasnetCell(by_node, concat, combine, C_prev_prev, C_prev, C_curr, reduction,
                              reduction_prev, ops)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self.auxiliary_index:
                C_aux = C_prev
        self.auxiliary_head = AuxiliaryHead(C_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor) -> Any:
        aux_logits = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.auxiliary_index and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return (logits, aux_logits) if aux_logits is not None else logits
