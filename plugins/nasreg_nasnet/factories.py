"""What the ``nasnet`` plugin registers: its op factories, the layer ops and the two space factories.

This module does not import torch, so loading the plugin (``nasreg validate``, ``list-plugins``)
stays fast: every factory imports the module that builds its torch objects when it is called.

* the five NASNet ops the ``darts`` plugin lacks (``OPERATIONS``; their modules are in
  :mod:`nasreg_nasnet.ops`, which lists all 13 NASNet ops and who registers each);
* the layer ops of ``nas-layers``, one per (height, width, filters, stride) of the paper's grid
  (:func:`register_layer_ops`; the module, ``LayerConv``, is in :mod:`nasreg_nasnet.layers`);
* the space factories :func:`nasnet_cell` (a :class:`nasreg_nasnet.space.NasnetCellSpace`) and
  :func:`nas_layers` (a :class:`nasreg_nasnet.layers.NasLayersSpace`). A factory's signature is
  its spec schema (see ``nasreg._core.params``), so the ``[search_space]`` keys are declared here, once;
* the ``nasnet-cell`` evaluation's registry metadata: its network's ``[evaluate]`` keys
  (:func:`nasnet_network`) and recipe (:data:`EVALUATION_DEFAULTS`). ``nas-layers`` declares
  neither: its genotype fixes every layer, and a spec gives its recipe (specs/nas-rl.toml).
"""

from __future__ import annotations

import functools
import itertools
from typing import TYPE_CHECKING, Annotated, Callable, Literal, Sequence

import nasreg
from nasreg import Range, Ref

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from torch import nn

__all__ = ["EVALUATION_DEFAULTS", "FILTERS", "HEIGHTS", "NASNET_OPERATIONS", "OPERATIONS", "STRIDES", "WIDTHS",
           "layer_op_name", "nas_layers", "nasnet_cell", "nasnet_network", "register_layer_ops"]

#: NASNet's 13 operations, by their registry names, in the order the paper lists them.
NASNET_OPERATIONS: tuple[str, ...] = (
    "skip_connect", "conv_1x3_3x1", "conv_7x1_1x7", "dil_conv_3x3", "avg_pool_3x3", "max_pool_3x3",
    "max_pool_5x5", "max_pool_7x7", "conv_1x1", "conv_3x3", "sep_conv_3x3", "sep_conv_5x5",
    "sep_conv_7x7",
)

# --- the five NASNet ops the DARTS plugin lacks ---------------------------------------------------

#: The five ops with their registry metadata, in registration order.
OPERATIONS = nasreg.OperationTable()
_POOL = {"is_zero": False, "parameter_free": True, "kind": "pool", "eval_kwargs": {"bn": False}}
_CONV = {"is_zero": False, "parameter_free": False, "kind": "conv"}


@OPERATIONS.add(**_CONV)
def conv_1x3_3x1(C: int, stride: int, affine: bool) -> nn.Module:
    """ReLU, 1x3 convolution, 3x1 convolution, BN (a NASNet op)."""
    from .ops import FactorizedConv

    return FactorizedConv(C, 3, stride, affine=affine)


@OPERATIONS.add(**_POOL)
def max_pool_5x5(C: int, stride: int, affine: bool, *, bn: bool = True) -> nn.Module:
    """5x5 max pooling, padding 2, then BatchNorm (``bn=False``: bare pool) (a NASNet op)."""
    from .ops import Pool

    return Pool("max", 5, C, stride, affine, bn=bn)


@OPERATIONS.add(**_POOL)
def max_pool_7x7(C: int, stride: int, affine: bool, *, bn: bool = True) -> nn.Module:
    """7x7 max pooling, padding 3, then BatchNorm (``bn=False``: bare pool) (a NASNet op)."""
    from .ops import Pool

    return Pool("max", 7, C, stride, affine, bn=bn)


@OPERATIONS.add(**_CONV)
def conv_1x1(C: int, stride: int, affine: bool) -> nn.Module:
    """ReLU, 1x1 convolution, BN (a NASNet op)."""
    return nasreg.ReLUConvBN(C, C, 1, stride, 0, affine=affine)


@OPERATIONS.add(**_CONV)
def conv_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    """ReLU, 3x3 convolution, BN (a NASNet op)."""
    return nasreg.ReLUConvBN(C, C, 3, stride, 1, affine=affine)


# --- the layer ops of nas-layers ------------------------------------------------------------------

#: The paper's grid, for which layer ops are registered.
HEIGHTS = WIDTHS = (1, 3, 5, 7)
FILTERS = (24, 36, 48, 64)
STRIDES = (1, 2, 3)


def layer_op_name(height: int, width: int, filters: int, stride: int = 1) -> str:
    """The registry name of a layer: ``conv_3x5_36``, ``conv_7x7_64_s2``."""
    return f"conv_{height}x{width}_{filters}" + (f"_s{stride}" if stride != 1 else "")


def _layer_factory(height: int, width: int, filters: int, stride: int,
                   C: int, stride_arg: int, affine: bool, *, in_channels: int | None = None) -> nn.Module:
    # The op contract: C channels in and out at the stride asked for (so the op works in any space).
    # The nas-layers network asks for C = the layer's filters, its stride, and its input width.
    from .layers import LayerConv

    return LayerConv(in_channels or C, C, height, width, stride_arg, affine)


def register_layer_ops(register: Callable[..., object], heights: Sequence[int] = HEIGHTS,
                       widths: Sequence[int] = WIDTHS, filters: Sequence[int] = FILTERS,
                       strides: Sequence[int] = STRIDES) -> list[str]:
    """Register one layer op per (height, width, filters, stride); returns the names."""
    names = []
    for h, w, f, s in itertools.product(heights, widths, filters, strides):
        name = layer_op_name(h, w, f, s)
        factory = functools.partial(_layer_factory, h, w, f, s)
        register(name, factory, description=f"NAS layer: {h}x{w} conv, {f} filters, stride {s}, BN, ReLU",
                 is_zero=False, parameter_free=False, kind="nas-layer",
                 layer={"height": h, "width": w, "filters": f, "stride": s})
        names.append(name)
    return names


# --- the space factories --------------------------------------------------------------------------
# The return annotation is a name known at run time: ``nasreg._core.params`` resolves every annotation
# of a factory to check a spec's keys (a name under TYPE_CHECKING would leave them unchecked).

def nasnet_cell(
    operations: list[Annotated[str, Ref("operations")]] = list(NASNET_OPERATIONS),  # noqa: B006
    blocks: Annotated[int, Range(ge=1, le=16)] = 5,
    combine: list[Literal["add", "concat"]] = ["add", "concat"],  # noqa: B006
    cells: Annotated[int, Range(ge=1, le=100)] = 5,
    channels: Annotated[int, Range(ge=1, le=1024)] = 8,
    stem_multiplier: Annotated[int, Range(ge=1, le=64)] = 3,
) -> nasreg.SearchSpace:
    """NASNet's Normal and Reduction cells of B blocks (inputs, ops, add/concat), for sampling strategies.

    ``operations`` (default: NASNet's 13 ops) and ``combine`` are the choices of every block;
    ``blocks`` is B (NASNet: 5). ``cells`` and ``channels`` size the network each sampled child is
    trained as during a search (``cells = 3N + 2``: N normal cells per stage, a reduction cell
    between stages); ``nasreg train`` and ``[evaluate]`` use their own ``cells``/``channels``.
    """
    from .space import NasnetCellSpace

    return NasnetCellSpace(operations, blocks=blocks, combine=combine, cells=cells, channels=channels,
                           stem_multiplier=stem_multiplier)


def nas_layers(
    layers: Annotated[int, Range(ge=1, le=64)] = 4,
    filter_heights: list[Literal[1, 3, 5, 7]] = list(HEIGHTS),  # noqa: B006
    filter_widths: list[Literal[1, 3, 5, 7]] = list(WIDTHS),  # noqa: B006
    filters: list[Literal[24, 36, 48, 64]] = list(FILTERS),  # noqa: B006
    strides: list[Literal[1, 2, 3]] = [1],  # noqa: B006
    skip_connections: bool = True,
    operations: list[Annotated[str, Ref("operations")]] | None = None,
) -> nasreg.SearchSpace:
    """NAS's layer-wise space: per layer filter height, width, count, stride and skip connections.

    ``layers`` (paper: up to 15 on CIFAR-10) layers; the value lists are each layer's choices
    (the paper's grid, the keys accept no other values); ``strides = [1]`` (default) fixes the
    stride; ``skip_connections`` adds one anchor decision per earlier layer. ``operations`` is not
    used (the layer ops follow from the keys): it is accepted because ``nasreg train`` builds the
    space of a genotype with the genotype's ops.
    """
    from .layerspace import NasLayersSpace

    return NasLayersSpace(layers=layers, filter_heights=filter_heights, filter_widths=filter_widths,
                          filters=filters, strides=strides, skip_connections=skip_connections,
                          operations=operations)


# --- the evaluation of a nasnet-cell genotype: registry metadata of the space ---------------------

def nasnet_network(
    cells: Annotated[int, Range(ge=1, le=100)] = 20,
    channels: Annotated[int, Range(ge=1, le=1024)] = 36,
    auxiliary: bool = True,
) -> dict:
    """The ``[evaluate]`` keys of the nasnet-cell evaluation network: ``cells`` (3N + 2) cells of
    ``channels`` initial channels, the auxiliary head at 2/3 depth (passed to
    :meth:`nasreg_nasnet.space.NasnetCellSpace.build_network`)."""
    return {"cells": cells, "channels": channels, "auxiliary": auxiliary}


#: The recipe a nasnet-cell genotype trains with where the spec says nothing: NASNet-A's genotypes
#: are evaluated as DARTS evaluates its own (DARTS's CIFAR-10 recipe, specs/eval-darts.toml).
EVALUATION_DEFAULTS: dict = {"epochs": 600, "batch_size": 96, "lr": 0.025, "momentum": 0.9,
                             "weight_decay": 3e-4, "grad_clip": 5.0, "auxiliary_weight": 0.4,
                             "drop_path": 0.2, "cutout": True, "cutout_length": 16,
                             "data": {"dataset": "cifar10"}}
