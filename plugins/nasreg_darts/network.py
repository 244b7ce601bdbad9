"""The evaluation network of the ``darts-cell`` space: the discrete network a genotype describes.

This is DARTS's CIFAR evaluation network (``NetworkCIFAR`` in the paper's code), built from a
:class:`nasreg.Genotype` and the operation registry:

* a stem: 3x3 conv to ``stem_multiplier * channels`` channels, BatchNorm;
* ``cells`` cells; the ones at ``cells // 3`` and ``2 * cells // 3`` are reduction cells (stride 2
  on the edges that leave the cell's two input nodes, channels doubled); every other cell is a
  normal cell;
* a cell preprocesses its two inputs (the outputs of the two previous cells) with a 1x1
  ReLUConvBN, or a FactorizedReduce when the cell two back has twice the spatial size; every
  intermediate node sums its incoming edges (one op each, as the genotype lists them); the cell
  output concatenates the genotype's ``concat`` nodes (any subset of the intermediate nodes: the
  NASNet-A and AmoebaNet-A cells have 5 nodes and concatenate only the unused ones);
* optionally an auxiliary head (DARTS's ``AuxiliaryHeadCIFAR``) on the output of cell
  ``2 * cells // 3``, used while training only;
* global average pooling and a linear classifier.

Ops are built through their registry factories as ``factory(C, stride, True, **eval_kwargs)``:
``affine=True`` everywhere, and the op's ``eval_kwargs`` registry metadata, if any (the DARTS
pools declare ``{"bn": False}``: the evaluation network's pools carry no BatchNorm). Any
registered op works.

Drop path (DARTS's ``drop_path``): while training, each op output that is not an
``nn.Identity`` is zeroed per sample with probability :attr:`DartsEvalNetwork.drop_path_prob`
and the kept samples are scaled by ``1 / (1 - p)``. The training loop sets the probability every
epoch (``drop_path * epoch / epochs``).

The forward pass returns the logits; in training mode with the auxiliary head it returns
``(logits, auxiliary_logits)``. Parameter counts are reported with and without the head
(:meth:`DartsEvalNetwork.num_parameters`); DARTS's published figures are without it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import nasreg
from nasreg import GenotypeError

from .ops import FactorizedReduce, ReLUConvBN

__all__ = ["AuxiliaryHead", "DartsEvalNetwork", "EvalCell", "drop_path", "cell_plan"]


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole samples of ``x`` with probability ``p``; scale the kept ones by 1 / (1 - p)."""
    if p <= 0.0:
        return x
    keep = 1.0 - p
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * (mask / keep)


def cell_plan(genotype: nasreg.Genotype, cell_type: str
              ) -> tuple[dict[int, list[nasreg.GenotypeEdge]], list[int]]:
    """Check one cell of ``genotype``: every intermediate node 2..N has an incoming edge, inputs
    come from earlier nodes, ``concat`` names intermediate nodes once each, nodes combine by
    addition. Returns (node -> its edges, concat); raises :class:`GenotypeError` otherwise (the
    message starts with the key path, ``cells.normal...``: the caller names the file)."""
    where = f"cells.{cell_type}"
    cell = genotype.cells.get(cell_type)
    if cell is None:
        raise GenotypeError(f"{where}: missing (a darts-cell genotype has cells "
                            f"'normal' and 'reduce'; it has {sorted(genotype.cells)})")
    by_node = cell.by_node()
    nodes = sorted(by_node)
    last = nodes[-1]
    # The first node of 2.. without an edge (never a loop over a huge node number).
    gap = next((expected for expected, node in zip(range(2, 2 + len(nodes)), nodes) if node != expected), None)
    if nodes[0] < 2 or gap is not None:
        bad = nodes[0] if nodes[0] < 2 else gap
        raise GenotypeError(f"{where}: node {bad} has no incoming edge (intermediate nodes are "
                            f"numbered 2..{last}, each with at least one edge; 0 and 1 are the inputs)")
    for combine_node, method in cell.combine.items():
        if method != "add":
            raise GenotypeError(f"{where}.combine: node {combine_node} combines by {method!r}; the "
                                "darts-cell network sums a node's inputs (only 'add')")
    concat = list(cell.concat)
    bad_concat = [c for c in concat if not 2 <= c <= last]
    if bad_concat:
        raise GenotypeError(f"{where}.concat: node {bad_concat[0]} is not an intermediate node "
                            f"(expected nodes in 2..{last})")
    if len(set(concat)) != len(concat):
        raise GenotypeError(f"{where}.concat: a node is listed twice in {concat}")
    return by_node, concat


class EvalCell(nn.Module):
    """One cell of the evaluation network: preprocessing, one op per genotype edge, concat."""

    def __init__(self, by_node: dict[int, list[nasreg.GenotypeEdge]], concat: list[int],
                 C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool,
                 ops: nasreg.Registry):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C, affine=True)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=True)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=True)
        self.ops = nn.ModuleList()
        #: per node, in order: [(index into self.ops, input node, may it be dropped)]
        self._nodes: list[list[tuple[int, int, bool]]] = []
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
            self._nodes.append(inputs)
        self.concat = list(concat)
        self.multiplier = len(concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        dropping = self.training and drop_prob > 0.0
        for inputs in self._nodes:
            total = None
            for idx, src, droppable in inputs:
                h = self.ops[idx](states[src])
                if dropping and droppable:
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's CIFAR auxiliary head: ReLU, 5x5 average pool (stride 3), 1x1 conv to 128, BN, ReLU,
    2x2 conv to 768, BN, ReLU, linear classifier.

    On CIFAR the head sees 8x8 maps and this is exactly DARTS's head. Maps smaller than 8x8
    (tiny images) are average-pooled to 2x2 instead of the 5x5/3 pool, and a result larger than
    1x1 (big images) is averaged to 1x1 before the classifier, so any input size works with the
    same weights.
    """

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
        self.features = nn.Sequential(
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)  # not in place: x is the next cells' input too
        x = self.pool(x) if min(x.shape[-2:]) >= 8 else F.adaptive_avg_pool2d(x, 2)
        x = self.features(x)
        if x.shape[-2:] != (1, 1):
            x = F.adaptive_avg_pool2d(x, 1)
        return self.classifier(x.flatten(1))


class DartsEvalNetwork(nn.Module):
    """DARTS's evaluation network for a genotype (see the module docstring)."""

    def __init__(self, genotype: nasreg.Genotype, *, ops: nasreg.Registry, in_channels: int,
                 num_classes: int, cells: int = 20, channels: int = 36, stem_multiplier: int = 3,
                 auxiliary: bool = False):
        super().__init__()
        if cells < 1 or channels < 1:
            raise ValueError(f"cells and channels must be >= 1, got cells={cells}, channels={channels}")
        self.num_cells = cells
        self.reductions = sorted({cells // 3, 2 * cells // 3})
        types = {"reduce" if i in self.reductions else "normal" for i in range(cells)}
        plans = {ct: cell_plan(genotype, ct) for ct in sorted(types)}
        for ct, (by_node, _concat) in plans.items():
            for edges in by_node.values():
                for e in edges:
                    try:
                        ops.get(e.op)
                    except nasreg.RegistryError as exc:
                        raise GenotypeError(f"cells.{ct}: {exc}") from None
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
            by_node, concat = plans["reduce" if reduction else "normal"]
            cell = EvalCell(by_node, concat, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, ops)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self.auxiliary_index:
                C_aux = C_prev
        self.auxiliary_head = AuxiliaryHead(C_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def num_parameters(self, auxiliary: bool = False) -> int:
        """Trainable parameters, the auxiliary head's included only with ``auxiliary``."""
        head = {id(p) for p in self.auxiliary_head.parameters()} if self.auxiliary_head is not None else set()
        return sum(p.numel() for p in self.parameters() if auxiliary or id(p) not in head)

    def forward(self, x: torch.Tensor) -> Any:
        aux_logits = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.auxiliary_index and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return (logits, aux_logits) if aux_logits is not None else logits
