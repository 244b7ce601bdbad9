"""The layer-wise search space of NAS (``[search_space] name = "nas-layers"``; Zoph and Le, 2017).

A network is a stack of ``layers`` convolutional layers (conv, BatchNorm, ReLU). For every layer
the controller picks, in this order:

* the filter height, from ``filter_heights`` (paper: 1, 3, 5, 7);
* the filter width, from ``filter_widths`` (paper: 1, 3, 5, 7);
* the number of filters, from ``filters`` (paper: 24, 36, 48, 64);
* the stride, from ``strides`` (paper: 1, 2, 3, or fixed at 1; default fixed at 1, and a
  decision with one choice is not asked);
* with ``skip_connections``, one binary decision per earlier layer (the anchor points): does this
  layer read that one?

The rules of the paper (and of seed 003) turn these choices into a network:

* a layer's inputs are concatenated along the channels; **a layer with no input takes the
  image** (layer 0 always does; without ``skip_connections`` layer i reads layer i - 1);
* **layers with no consumer are concatenated into the final layer**: the classifier reads the
  concatenation of the last layer and of every layer no other layer reads (global average
  pooling, then a linear layer);
* **mismatched sizes are zero-padded**: maps of different heights or widths (strides > 1) are
  zero-padded at the bottom and the right to the largest height and width before a concatenation.

The paper's anchor point is a content-based sigmoid over the earlier layers' anchor states; here
every anchor decision is an ordinary two-way decision of the controller (no, yes), emitted after
the layer's hyperparameters as in the paper.

Genotype encoding
-----------------
One cell, ``layers``. Node 0 is the image, node i + 1 is layer i. Layer i has one edge per input,
``(node=i+1, input=k, op)``, where k = 0 is the image and k = j + 1 is layer j; every edge of a
layer names the same op, **the layer itself**: ``conv_{h}x{w}_{f}`` (stride 1) or
``conv_{h}x{w}_{f}_s{s}`` (stride s), e.g. ``conv_3x5_36``, ``conv_7x7_64_s2``. ``combine`` is
``concat`` for every layer and ``concat`` lists the layers the classifier reads. So a genotype is
plain nasreg JSON, validated against the operation registry like any other.

For that, this plugin registers one operation per layer configuration of the paper's grid
(heights and widths 1, 3, 5, 7; filters 24, 36, 48, 64; strides 1, 2, 3: 192 names, registry
metadata ``kind = "nas-layer"`` and ``layer = {height, width, filters, stride}``, which the network
reads: it never parses a name). As an operation, ``conv_3x5_36`` is a 3x5 convolution with 36
filters, BatchNorm and ReLU: its factory follows the contract (``factory(C, stride, affine)`` maps
C to C channels) only at ``C = 36`` and its own stride, and raises ``ValueError`` otherwise; the
network passes the number of input channels as ``in_channels``. The space's keys accept values of
that grid only; another plugin can register more layers with
:func:`nasreg_nasnet.factories.register_layer_ops`.

The grid (``HEIGHTS``, ``WIDTHS``, ``FILTERS``, ``STRIDES``), :func:`layer_op_name`, the layer
ops' registration and the ``nas_layers`` space factory (the spec schema of this space) live in the
torch-free :mod:`nasreg_nasnet.factories`; this module holds the torch side.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import nasreg
from nasreg import GenotypeError

from .decisions import DiscreteSpace
from .factories import FILTERS, HEIGHTS, WIDTHS, layer_op_name

__all__ = ["LayerConv", "NasLayersNetwork", "NasLayersSpace", "concat_padded"]

from .layerspace import CELL, NasLayersSpace  # noqa: E402 - the space (torch-free), re-exported


class LayerConv(nn.Module):
    """One NAS layer: an h x w convolution ('same' padding, the layer's stride), BatchNorm, ReLU."""

    def __init__(self, in_channels: int, filters: int, height: int, width: int, stride: int,
                 affine: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, filters, (height, width), stride=stride,
                              padding=(height // 2, width // 2), bias=False)
        self.bn = nn.BatchNorm2d(filters, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def concat_padded(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate feature maps along the channels, zero-padding each at the bottom and the right
    to the largest height and width among them (the paper's rule for mismatched sizes)."""
    if len(maps) == 1:
        return maps[0]
    H = max(m.shape[-2] for m in maps)
    W = max(m.shape[-1] for m in maps)
    padded = [m if m.shape[-2:] == (H, W) else F.pad(m, (0, W - m.shape[-1], 0, H - m.shape[-2]))
              for m in maps]
    return torch.cat(padded, dim=1)


def layer_plan(genotype: nasreg.Genotype, ops: nasreg.Registry
               ) -> tuple[list[tuple[list[int], str, dict[str, int]]], list[int]]:
    """Check a nas-layers genotype; returns ([(inputs, op name, layer hyperparameters)] per layer,
    concat). Raises :class:`GenotypeError` with the key path."""
    where = f"cells.{CELL}"
    cell = genotype.cells.get(CELL)
    if cell is None or len(genotype.cells) != 1:
        raise GenotypeError(f"cells: a nas-layers genotype has one cell, {CELL!r}; it has {sorted(genotype.cells)}")
    by_node = cell.by_node()
    nodes = sorted(by_node)
    gap = next((n for n, m in zip(range(1, 1 + len(nodes)), nodes) if n != m), None)
    if gap is not None:
        raise GenotypeError(f"{where}: layer node {gap} has no incoming edge (layers are nodes 1..{nodes[-1]}, "
                            "node 0 is the image; a layer without input reads the image)")
    plan = []
    for node in nodes:
        edges = by_node[node]
        names = {e.op for e in edges}
        if len(names) != 1:
            raise GenotypeError(f"{where}: layer node {node}: its edges name different ops {sorted(names)} "
                                "(every edge of a layer names the layer's op)")
        op = edges[0].op
        try:
            entry = ops.get(op)
        except nasreg.RegistryError as exc:
            raise GenotypeError(f"{where}: {exc}") from None
        layer = entry.get("layer")
        if not isinstance(layer, dict):
            raise GenotypeError(f"{where}: layer node {node}: operation {op!r} is not a nas-layers layer op "
                                "(expected e.g. 'conv_3x5_36')")
        inputs = [e.input for e in edges]
        if len(set(inputs)) != len(inputs):
            raise GenotypeError(f"{where}: layer node {node} reads node {inputs} more than once")
        plan.append((inputs, op, layer))
    last = nodes[-1]
    concat = list(cell.concat)
    bad = [c for c in concat if not 1 <= c <= last]
    if bad:
        raise GenotypeError(f"{where}.concat: node {bad[0]} is not a layer (expected nodes in 1..{last})")
    if last not in concat:
        raise GenotypeError(f"{where}.concat: the last layer (node {last}) must be in concat (the final layer)")
    if len(set(concat)) != len(concat):
        raise GenotypeError(f"{where}.concat: a node is listed twice in {concat}")
    return plan, concat


class NasLayersNetwork(nn.Module):
    """The network of a ``nas-layers`` genotype (see the module docstring)."""

    def __init__(self, genotype: nasreg.Genotype, *, ops: nasreg.Registry, in_channels: int, num_classes: int):
        super().__init__()
        plan, self.concat = layer_plan(genotype, ops)
        channels = [in_channels]
        self.layers = nn.ModuleList()
        self.inputs: list[list[int]] = []
        for inputs, op, layer in plan:
            c_in = sum(channels[k] for k in inputs)
            module = ops.get(op).factory(layer["filters"], layer["stride"], True, in_channels=c_in)
            if not isinstance(module, nn.Module):
                raise TypeError(f"operation {op!r} factory returned {type(module).__name__}, not an nn.Module")
            self.layers.append(module)
            self.inputs.append(list(inputs))
            channels.append(layer["filters"])
        self.out_channels = sum(channels[c] for c in self.concat)
        self.classifier = nn.Linear(self.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for layer, inputs in zip(self.layers, self.inputs):
            states.append(layer(concat_padded([states[k] for k in inputs])))
        out = concat_padded([states[c] for c in self.concat])
        return self.classifier(out.mean(dim=(2, 3)))
