"""Generic building blocks of cell-based CNNs: the scaffolding of DARTS-style evaluation networks.

Nothing here knows an operation or a search method. A plugin whose genotypes describe cells
(normal and reduction cells, each reading the outputs of the two previous cells) builds its
evaluation network from these pieces and supplies only the cell:

* :class:`CellNetwork`: the stem (3x3 conv to ``stem_multiplier * channels`` channels, BN), a
  stack of cells (reduction cells double the channels; :func:`default_reductions` puts them at
  1/3 and 2/3 of the depth), each cell called as ``cell(s0, s1, drop_prob)`` on the outputs of the
  two previous cells, an optional :class:`AuxiliaryHead` after cell ``2 * cells // 3``, global
  average pooling and a linear classifier. The cells come from a factory the plugin passes.
* :class:`CellBase`: a cell's common parts: the preprocessing of its two inputs
  (:func:`cell_inputs`), one registry op per genotype edge (:func:`build_op`, stride 2 on the
  edges leaving the inputs of a reduction cell), drop path on the op outputs, the concatenation
  of the output nodes. A subclass decides how a node combines its op outputs.
* :func:`check_cell` and :func:`check_cell_ops`: the checks of a genotype's cell that every such
  network makes (nodes 2..N each with an edge, ``concat`` among them, registered ops).
* the conv blocks such cells are made of: :class:`ReLUConvBN`, :class:`FactorizedReduce`, and
  :func:`drop_path`; :func:`batch_norm_scaled` for ops implementing :class:`nasreg.MixedOp`'s
  fast path.
* re-exported from the torch-free ``nasreg._core.space`` for the plugin's other halves:
  :func:`operation_names` (the checked ``operations`` key of a cell space) and
  :class:`OperationTable` (a plugin's ops with their registry metadata, declared where each
  factory is defined, registered in one call).

Module names and their registration order are part of the contract (the same seed gives the same
initial weights, and checkpoints keep loading): ``stem``, ``cells``, ``auxiliary_head``,
``global_pooling``, ``classifier``; in a cell ``preprocess0``, ``preprocess1``, ``ops``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import GenotypeError, RegistryError
from .genotype import Genotype, GenotypeEdge
from .registry import Registry

__all__ = ["AuxiliaryHead", "CellBase", "CellNetwork", "FactorizedReduce", "OperationTable", "ReLUConvBN",
           "batch_norm_scaled", "build_op", "cell_inputs", "check_cell", "check_cell_ops", "default_reductions",
           "drop_path", "operation_names"]

#: ``make_cell(C_prev_prev, C_prev, C, reduction, reduction_prev) -> cell`` (see :class:`CellNetwork`).
CellFactory = Callable[[int, int, int, bool, bool], nn.Module]


# --- conv blocks ----------------------------------------------------------------------------------

def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole samples of ``x`` with probability ``p``; scale the kept ones by 1 / (1 - p)."""
    if p <= 0.0:
        return x
    keep = 1.0 - p
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * (mask / keep)


def batch_norm_scaled(bn: nn.Module, x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``scale * bn(x)`` in one pass for a ``BatchNorm2d`` ``bn``: the (scalar) ``scale`` becomes
    the BN's affine weight (times its own weight and bias when it has them).

    For ops that implement :class:`nasreg.MixedOp`'s ``fused_forward``. Running statistics,
    ``num_batches_tracked`` and train/eval mode behave exactly as in ``bn(x)``; a module that is
    not a plain BatchNorm falls back to ``scale * bn(x)``. Forward hooks of ``bn`` are not called
    on this path.
    """
    if scale is None:
        return bn(x)
    if type(bn) is not nn.BatchNorm2d or bn._forward_hooks or bn._forward_pre_hooks:
        return bn(x) * scale  # e.g. a synchronized BatchNorm (torchrun): its own forward
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep = not bn.training or bn.track_running_stats
    # contiguous: a stride-0 (expanded) weight sends native_batch_norm down a 2x slower path
    weight = scale.expand(x.shape[1]).contiguous() if bn.weight is None else bn.weight * scale
    bias = None if bn.bias is None else bn.bias * scale
    return F.batch_norm(x, bn.running_mean if keep else None, bn.running_var if keep else None, weight, bias,
                        use_batch_stats, factor, bn.eps)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class ReLUConvBN(nn.Module):
    """ReLU, a (dense) convolution without bias, BatchNorm (``self.op``, a ``Sequential``).

    The cell preprocessing block (1x1, stride 1); also a plain conv op (``ReLUConvBN(C, C, k,
    stride, k // 2)``).
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Halve H and W with two 1x1 stride-2 convs, the second offset by one pixel; concat; BN.

    Output is (N, C_out, ceil(H/2), ceil(W/2)) for any H, W >= 1 (odd sizes are zero-padded at the
    bottom/right before the offset; even sizes are exactly DARTS). An odd ``C_out`` gives the
    second conv the extra channel. Implements :class:`nasreg.MixedOp`'s fast path (it is also an
    op: an identity at stride 2).
    """

    #: The block starts with ReLU(x): :meth:`fused_forward` accepts a shared ``relu(x)``.
    relu_input = True

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused_forward(x)

    def fused_forward(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                      x_relu: torch.Tensor | None = None) -> torch.Tensor:
        """``scale * self(x)``, with ``x_relu = relu(x)`` when the caller has it."""
        x = x_relu if x_relu is not None else self.relu(x)
        h, w = x.shape[-2:]
        shifted = x if not (h % 2 or w % 2) else F.pad(x, (0, w % 2, 0, h % 2))
        x1 = x
        if x.device.type == "cpu" and 2 <= x.shape[1] < 8 and _is_channels_last(x):
            # torch 2.14 (oneDNN) corrupts the heap in the CPU backward of a 1x1 stride-2 conv on a
            # channels-last input with 2 to 7 channels and an even size: give conv_1 NCHW.
            x1 = x.contiguous()
        out = torch.cat([self.conv_1(x1), self.conv_2(shifted[:, :, 1:, 1:])], dim=1)
        return batch_norm_scaled(self.bn, out, scale)


def cell_inputs(C_prev_prev: int, C_prev: int, C: int, reduction_prev: bool,
                affine: bool = True) -> tuple[nn.Module, nn.Module]:
    """The preprocessing of a cell's two inputs, to ``C`` channels each: (for the output of the
    cell two back, for the previous cell's). The first is a :class:`FactorizedReduce` when the
    previous cell reduced (the cell two back has twice the spatial size), else a 1x1
    :class:`ReLUConvBN`; the second is a 1x1 ReLUConvBN. Built in that order."""
    if reduction_prev:
        first: nn.Module = FactorizedReduce(C_prev_prev, C, affine=affine)
    else:
        first = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=affine)
    return first, ReLUConvBN(C_prev, C, 1, 1, 0, affine=affine)


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


# --- cells ----------------------------------------------------------------------------------------

def check_cell(genotype: Genotype, cell_type: str, space: str, *, noun: str = "intermediate node",
               label: str = "node") -> tuple[dict[int, list[GenotypeEdge]], list[int]]:
    """Check the node structure of cell ``cell_type`` of ``genotype``: the cell exists, its
    intermediate nodes are 2..N, each with at least one incoming edge (0 and 1 are the cell's
    inputs), ``concat`` names intermediate nodes once each. Returns (node -> its edges, concat).

    Raises :class:`nasreg.GenotypeError` starting with the key path (``cells.normal...``; the
    caller names the file); ``space`` names the space in the message, ``noun`` what an
    intermediate node is called (``"block"``) and ``label`` how one is named before its number
    (``"block node"``)."""
    where = f"cells.{cell_type}"
    cell = genotype.cells.get(cell_type)
    if cell is None:
        raise GenotypeError(f"{where}: missing (a {space} genotype has cells 'normal' and 'reduce'; "
                            f"it has {sorted(genotype.cells)})")
    by_node = cell.by_node()
    nodes = sorted(by_node)
    last = nodes[-1]
    if nodes[0] < 2:
        raise GenotypeError(f"{where}: node {nodes[0]} has an incoming edge, but nodes 0 and 1 are the "
                            f"cell's inputs ({noun}s are nodes 2, 3, ...)")
    # The first node of 2.. without an edge (never a loop over a huge node number).
    gap = next((expected for expected, node in zip(range(2, 2 + len(nodes)), nodes) if node != expected), None)
    if gap is not None:
        raise GenotypeError(f"{where}: {label} {gap} has no incoming edge ({noun}s are nodes 2..{last}, "
                            "each with at least one edge; 0 and 1 are the inputs)")
    concat = list(cell.concat)
    bad = [c for c in concat if not 2 <= c <= last]
    if bad:
        article = "an" if noun[:1] in "aeiou" else "a"
        raise GenotypeError(f"{where}.concat: node {bad[0]} is not {article} {noun} (expected nodes in 2..{last})")
    if len(set(concat)) != len(concat):
        raise GenotypeError(f"{where}.concat: a node is listed twice in {concat}")
    return by_node, concat


def check_cell_ops(by_node: dict[int, list[GenotypeEdge]], cell_type: str, ops: Registry) -> None:
    """Raise :class:`nasreg.GenotypeError` (``cells.<type>: unknown operation ...``) unless every
    edge's op is registered."""
    for edges in by_node.values():
        for edge in edges:
            try:
                ops.get(edge.op)
            except RegistryError as exc:
                raise GenotypeError(f"cells.{cell_type}: {exc}") from None


def build_op(ops: Registry, name: str, C: int, stride: int) -> nn.Module:
    """The evaluation-network instance of operation ``name``: ``factory(C, stride, True,
    **eval_kwargs)`` (``affine=True``, plus the op's ``eval_kwargs`` registry metadata, if any:
    e.g. the DARTS pools' ``{"bn": False}``). Raises ``TypeError`` if the factory returns
    something other than an ``nn.Module``."""
    entry = ops.get(name)
    module = entry.factory(C, stride, True, **dict(entry.get("eval_kwargs", None) or {}))
    if not isinstance(module, nn.Module):
        raise TypeError(f"operation {name!r} factory returned {type(module).__name__}, not an nn.Module")
    return module


class CellBase(nn.Module):
    """The common parts of an evaluation-network cell (subclass it; see the module docstring).

    ``__init__`` builds the input preprocessing (:func:`cell_inputs`), an empty ``ops``
    ``ModuleList`` and records the output nodes ``concat`` (``multiplier = len(concat)``: the cell
    outputs ``multiplier * C`` channels). The subclass then calls :meth:`add_node` for every
    intermediate node in increasing order (nodes 0 and 1 are the preprocessed inputs), adding any
    modules of its own in between. :meth:`forward` computes each node as :meth:`combine` of its
    op outputs (default: their sum) and concatenates the ``concat`` nodes.

    Drop path: while training with ``drop_prob > 0``, every op output that is not an
    ``nn.Identity`` goes through :func:`drop_path`.
    """

    def __init__(self, C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool,
                 concat: Sequence[int]):
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = cell_inputs(C_prev_prev, C_prev, C, reduction_prev)
        self.ops = nn.ModuleList()
        #: the intermediate nodes, in order, and per node [(index into self.ops, input node, may it be dropped)]
        self._node_ids: list[int] = []
        self._nodes: list[list[tuple[int, int, bool]]] = []
        self.concat = list(concat)
        self.multiplier = len(self.concat)

    def add_node(self, node: int, edges: Sequence[Any], C: int, ops: Registry) -> int:
        """Build one op per edge into ``node`` (``edge.input``, ``edge.op``; stride 2 on the edges
        from nodes 0 and 1 of a reduction cell), in edge order; returns the number of edges."""
        inputs = []
        for edge in edges:
            stride = 2 if self.reduction and edge.input < 2 else 1
            module = build_op(ops, edge.op, C, stride)
            inputs.append((len(self.ops), edge.input, not isinstance(module, nn.Identity)))
            self.ops.append(module)
        self._node_ids.append(node)
        self._nodes.append(inputs)
        return len(inputs)

    def combine(self, node: int, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Node ``node`` from its op outputs (in edge order): their sum, left to right."""
        total = outputs[0]
        for h in outputs[1:]:
            total = total + h
        return total

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        dropping = self.training and drop_prob > 0.0
        for node, inputs in zip(self._node_ids, self._nodes):
            outputs = []
            for idx, src, droppable in inputs:
                h = self.ops[idx](states[src])
                outputs.append(drop_path(h, drop_prob) if dropping and droppable else h)
            states[node] = self.combine(node, outputs)
        return torch.cat([states[i] for i in self.concat], dim=1)


# --- the network ----------------------------------------------------------------------------------

def default_reductions(cells: int) -> list[int]:
    """The DARTS rule: reduction cells at ``cells // 3`` and ``2 * cells // 3`` (deduplicated)."""
    return sorted({cells // 3, 2 * cells // 3})


class CellNetwork(nn.Module):
    """Stem, a stack of cells, an optional auxiliary head, global pooling and a classifier.

    ``make_cell(C_prev_prev, C_prev, C, reduction, reduction_prev)`` builds cell ``i`` (in order)
    from the channels of the two previous outputs, its own channel count ``C`` (``channels``,
    doubled at every reduction cell), whether it is a reduction cell (``i in reductions``) and
    whether the previous one was. A cell is called ``cell(s0, s1, drop_prob)`` (the outputs of the
    cell two back and of the previous one; the stem's output for both at first) and has an
    attribute ``multiplier``: it outputs ``multiplier * C`` channels.

    With ``auxiliary``, an :class:`AuxiliaryHead` reads the output of cell ``2 * cells // 3``
    (:attr:`auxiliary_index`); in training mode the forward pass then returns ``(logits,
    auxiliary_logits)``, else the logits. :attr:`drop_path_prob` is passed to every cell (the
    training loop sets it per epoch).
    """

    def __init__(self, make_cell: CellFactory, *, in_channels: int, num_classes: int, cells: int,
                 channels: int, stem_multiplier: int = 3, reductions: Sequence[int] | None = None,
                 auxiliary: bool = False):
        super().__init__()
        reductions = default_reductions(cells) if reductions is None else reductions
        self.cell_types(cells, channels, reductions)
        self.num_cells = cells
        self.reductions = sorted(reductions)
        #: The drop-path probability of the next forward passes (set per epoch by the training loop).
        self.drop_path_prob = 0.0
        C_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr))
        self.auxiliary_index = 2 * cells // 3
        self.cells, C_prev, C_aux = self._stack(make_cell, C_curr, channels)
        self.auxiliary_head = AuxiliaryHead(C_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    @staticmethod
    def cell_types(cells: int, channels: int, reductions: Sequence[int]) -> list[str]:
        """The cell types a stack uses, sorted (``"normal"``, ``"reduce"``); raises ``ValueError``
        unless ``cells`` and ``channels`` are >= 1. For checking a genotype's cells first."""
        if cells < 1 or channels < 1:
            raise ValueError(f"cells and channels must be >= 1, got cells={cells}, channels={channels}")
        return sorted({"reduce" if i in reductions else "normal" for i in range(cells)})

    def _stack(self, make_cell: CellFactory, C_stem: int, C_curr: int) -> tuple[nn.ModuleList, int, int]:
        """The cells; returns them, the last one's output channels and the auxiliary head's input's."""
        stack = nn.ModuleList()
        C_prev_prev, C_prev = C_stem, C_stem
        reduction_prev = False
        C_aux = C_prev
        for i in range(self.num_cells):
            reduction = i in self.reductions
            if reduction:
                C_curr *= 2
            cell = make_cell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            stack.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self.auxiliary_index:
                C_aux = C_prev
        return stack, C_prev, C_aux

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


# --- the plugin's other halves: torch-free, defined in nasreg.space (a plugin's registration
# hooks use them without importing torch) -------------------------------------------------------

from .space import OperationTable, operation_names  # noqa: E402,F401 - re-exported
