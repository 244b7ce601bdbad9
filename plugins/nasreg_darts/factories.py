"""What the ``darts`` plugin registers: its op factories, the ``darts-cell`` space factory, and the
space's evaluation network keys (:func:`darts_network`) and recipe (:data:`EVALUATION_DEFAULTS`).

This module does not import torch, so loading the plugin (``nasreg validate``, ``list-plugins``)
stays fast: every factory imports the module that builds its torch objects when it is called.
The op factories build the modules of :mod:`nasreg_darts.ops`; :func:`darts_cell` builds a
:class:`nasreg_darts.space.DartsCellSpace`. A factory's signature is its spec schema (see
``nasreg._core.params``), so the ``[search_space]`` keys of ``darts-cell`` are declared here, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import nasreg
from nasreg import Range, Ref

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from torch import nn

__all__ = ["EVALUATION_DEFAULTS", "OPERATIONS", "darts_cell", "darts_network"]

#: The registered ops with their metadata (see :mod:`nasreg_darts.ops`), in DARTS's PRIMITIVES
#: order, then the two NASNet ops.
OPERATIONS = nasreg.OperationTable()
_POOL = {"is_zero": False, "parameter_free": True, "kind": "pool", "eval_kwargs": {"bn": False}}
_CONV = {"is_zero": False, "parameter_free": False, "kind": "conv"}


@OPERATIONS.add(is_zero=True, parameter_free=True, kind="zero")
def none(C: int, stride: int, affine: bool) -> nn.Module:
    """Zeros of the output shape (the 'no edge' op)."""
    from .ops import Zero

    return Zero(stride)


@OPERATIONS.add(**_POOL)
def max_pool_3x3(C: int, stride: int, affine: bool, *, bn: bool = True) -> nn.Module:
    """3x3 max pooling, padding 1, then BatchNorm (``bn=False``: bare pool, as in DARTS evaluation)."""
    from .ops import PoolBN

    return PoolBN("max", C, stride, affine, bn=bn)


@OPERATIONS.add(**_POOL)
def avg_pool_3x3(C: int, stride: int, affine: bool, *, bn: bool = True) -> nn.Module:
    """3x3 average pooling (padding 1, padding not counted), then BatchNorm (``bn=False``: bare pool)."""
    from .ops import PoolBN

    return PoolBN("avg", C, stride, affine, bn=bn)


@OPERATIONS.add(is_zero=False, parameter_free=True, kind="identity")
def skip_connect(C: int, stride: int, affine: bool) -> nn.Module:
    """Identity at stride 1; FactorizedReduce at stride 2."""
    from .ops import FactorizedReduceOp, Identity

    return Identity() if stride == 1 else FactorizedReduceOp(C, C, affine=affine)


@OPERATIONS.add(**_CONV)
def sep_conv_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    """Separable 3x3 convolution (ReLU, depthwise 3x3, pointwise 1x1, BN; twice)."""
    from .ops import SepConv

    return SepConv(C, C, 3, stride, 1, affine=affine)


@OPERATIONS.add(**_CONV)
def sep_conv_5x5(C: int, stride: int, affine: bool) -> nn.Module:
    """Separable 5x5 convolution (ReLU, depthwise 5x5, pointwise 1x1, BN; twice)."""
    from .ops import SepConv

    return SepConv(C, C, 5, stride, 2, affine=affine)


@OPERATIONS.add(**_CONV)
def dil_conv_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    """Dilated separable 3x3 convolution, dilation 2 (ReLU, depthwise, pointwise 1x1, BN)."""
    from .ops import DilConv

    return DilConv(C, C, 3, stride, 2, 2, affine=affine)


@OPERATIONS.add(**_CONV)
def dil_conv_5x5(C: int, stride: int, affine: bool) -> nn.Module:
    """Dilated separable 5x5 convolution, dilation 2 (ReLU, depthwise, pointwise 1x1, BN)."""
    from .ops import DilConv

    return DilConv(C, C, 5, stride, 4, 2, affine=affine)


@OPERATIONS.add(**_CONV)
def sep_conv_7x7(C: int, stride: int, affine: bool) -> nn.Module:
    """Separable 7x7 convolution (ReLU, depthwise 7x7, pointwise 1x1, BN; twice), a NASNet op."""
    from .ops import SepConv

    return SepConv(C, C, 7, stride, 3, affine=affine)


@OPERATIONS.add(**_CONV)
def conv_7x1_1x7(C: int, stride: int, affine: bool) -> nn.Module:
    """ReLU, 1x7 convolution, 7x1 convolution, BN (a NASNet op)."""
    from .ops import Conv7x1x7

    return Conv7x1x7(C, stride, affine=affine)


# The return annotation is a name known at run time: ``nasreg._core.params`` resolves every annotation
# of a factory to check a spec's keys (a name under TYPE_CHECKING would leave them unchecked).
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
    partial_channels: Annotated[int, Range(ge=1)] = 1,
    edge_normalization: bool = False,
    skip_dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
    skip_dropout_decay: Annotated[float, Range(ge=0)] = 0.0,
    batched_edges: bool = True,
) -> nasreg.SearchSpace:
    """The DARTS cell: 2 input nodes, `nodes` intermediate nodes, normal and reduction cells.

    ``reductions`` lists the indices of the reduction cells (default: ``cells // 3`` and
    ``2 * cells // 3``). ``drop_path`` applies drop path to every op output of every edge except
    identities while the supernet trains. ``affine`` gives the cells' BatchNorms (ops and
    preprocessing) a scale and shift; the stem's BN always has one, as in DARTS.

    PC-DARTS (Xu et al., ICLR 2020): ``partial_channels`` = K > 1 sends only 1/K of each edge's
    input channels through its mixed op (ops built with C/K channels: about K times less op
    memory and compute), the rest bypass it, then the channels are shuffled in K groups;
    ``channels`` must be a multiple of K. ``edge_normalization`` adds one architecture parameter
    beta per edge: a node is the softmax(beta)-weighted sum of its incoming edges, and the
    derivation ranks edges by op weight x edge weight (PC-DARTS's rule). PC-DARTS uses K = 4 with
    edge normalization.

    P-DARTS (Chen et al., ICCV 2019): ``skip_dropout`` is the rate of a dropout on the output of
    every identity op (registry metadata ``kind = "identity"``: ``skip_connect``) on a stride-1
    edge while the supernet trains, as P-DARTS's ``nn.Dropout`` after ``Identity``.
    ``skip_dropout_decay`` = 0 keeps the rate constant; > 0 decays it per epoch as P-DARTS does:
    ``rate * (E - e - 1) / E`` in the stage's warm-up epochs, ``rate * exp(-(e - warmup) * decay)``
    in its joint epochs (P-DARTS: 0.2).

    ``batched_edges`` (default true) runs the edges in waves (those leaving the two input nodes,
    then those leaving each intermediate node), each op kind once per wave (one grouped conv for
    every ``sep_conv_3x3`` of the wave, ...; :mod:`nasreg_darts.batched`), where the ops implement
    the batched-op protocol and no strategy sets active ops; the same values as false, the
    per-edge mixed ops, in far fewer kernel calls.
    """
    from .cellspace import DartsCellSpace

    return DartsCellSpace(operations, nodes=nodes, cells=cells, channels=channels,
                          stem_multiplier=stem_multiplier, reductions=reductions, drop_path=drop_path,
                          affine=affine, alpha_init_std=alpha_init_std, partial_channels=partial_channels,
                          edge_normalization=edge_normalization, skip_dropout=skip_dropout,
                          skip_dropout_decay=skip_dropout_decay, batched_edges=batched_edges)


# --- the evaluation of a darts-cell genotype: its network's keys and DARTS's recipe ----------------
# Registry metadata of ``darts-cell`` (``network_keys``, ``evaluation_defaults``): the keys of
# ``[evaluate]`` that are not the core's recipe are these, and the recipe's defaults are DARTS's.

def darts_network(
    cells: Annotated[int, Range(ge=1, le=100)] = 20,
    channels: Annotated[int, Range(ge=1, le=1024)] = 36,
    auxiliary: bool = True,
    stem_multiplier: Annotated[int, Range(ge=1, le=64)] | None = None,
) -> dict:
    """The ``[evaluate]`` keys of the darts-cell evaluation network (DARTS's CIFAR-10 network: 20
    cells of 36 initial channels, the auxiliary tower at 2/3 depth); ``stem_multiplier`` defaults
    to the space's. They are passed to :meth:`nasreg_darts.space.DartsCellSpace.build_network`."""
    return {"cells": cells, "channels": channels, "auxiliary": auxiliary, "stem_multiplier": stem_multiplier}


#: DARTS's CIFAR-10 evaluation recipe (Liu et al., 2019; specs/eval-darts.toml spells it out): what
#: ``[evaluate]`` and ``nasreg train`` use for a darts-cell genotype where the spec says nothing.
EVALUATION_DEFAULTS: dict = {
    "epochs": 600, "batch_size": 96, "lr": 0.025, "lr_min": 0.0, "momentum": 0.9, "weight_decay": 3e-4,
    "grad_clip": 5.0, "label_smoothing": 0.0, "auxiliary_weight": 0.4, "drop_path": 0.2,
    "cutout": True, "cutout_length": 16, "data": {"dataset": "cifar10"},
}
