"""The evaluation network of the ``darts-cell`` space: the discrete network a genotype describes.

This is DARTS's CIFAR evaluation network (``NetworkCIFAR`` in the paper's code), built from a
:class:`nasreg.Genotype` and the operation registry on nasreg's cell-network blocks
(:class:`nasreg.CellNetwork`, :class:`nasreg.CellBase`; ``AuxiliaryHead`` and ``drop_path`` are
re-exported from there):

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

import nasreg
from nasreg import AuxiliaryHead, GenotypeError, drop_path

__all__ = ["AuxiliaryHead", "DartsEvalNetwork", "EvalCell", "drop_path", "cell_plan"]


def cell_plan(genotype: nasreg.Genotype, cell_type: str
              ) -> tuple[dict[int, list[nasreg.GenotypeEdge]], list[int]]:
    """Check one cell of ``genotype``: the node structure and ``concat``
    (:func:`nasreg.check_cell`), and nodes combine by addition. Returns (node -> its edges,
    concat); raises :class:`GenotypeError` otherwise (the message starts with the key path,
    ``cells.normal...``: the caller names the file)."""
    by_node, concat = nasreg.check_cell(genotype, cell_type, "darts-cell")
    for node, method in genotype.cells[cell_type].combine.items():
        if method != "add":
            raise GenotypeError(f"cells.{cell_type}.combine: node {node} combines by {method!r}; the "
                                "darts-cell network sums a node's inputs (only 'add')")
    return by_node, concat


class EvalCell(nasreg.CellBase):
    """One cell of the evaluation network: preprocessing, one op per genotype edge, nodes summed,
    the ``concat`` nodes concatenated (:class:`nasreg.CellBase`)."""

    def __init__(self, by_node: dict[int, list[nasreg.GenotypeEdge]], concat: list[int],
                 C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool,
                 ops: nasreg.Registry):
        super().__init__(C_prev_prev, C_prev, C, reduction, reduction_prev, concat)
        for node in sorted(by_node):
            self.add_node(node, by_node[node], C, ops)


class DartsEvalNetwork(nasreg.CellNetwork):
    """DARTS's evaluation network for a genotype (see the module docstring)."""

    def __init__(self, genotype: nasreg.Genotype, *, ops: nasreg.Registry, in_channels: int,
                 num_classes: int, cells: int = 20, channels: int = 36, stem_multiplier: int = 3,
                 auxiliary: bool = False):
        reductions = nasreg.default_reductions(cells)
        plans = {ct: cell_plan(genotype, ct) for ct in self.cell_types(cells, channels, reductions)}
        for ct, (by_node, _concat) in plans.items():
            nasreg.check_cell_ops(by_node, ct, ops)

        def make_cell(C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool) -> EvalCell:
            by_node, concat = plans["reduce" if reduction else "normal"]
            return EvalCell(by_node, concat, C_prev_prev, C_prev, C, reduction, reduction_prev, ops)

        super().__init__(make_cell, in_channels=in_channels, num_classes=num_classes, cells=cells,
                         channels=channels, stem_multiplier=stem_multiplier, reductions=reductions,
                         auxiliary=auxiliary)
