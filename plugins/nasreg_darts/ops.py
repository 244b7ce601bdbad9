"""The eight DARTS candidate operations and the building blocks they are made of.

Every registered factory has the signature the ``register_operations`` hook asks for,
``factory(C, stride, affine) -> nn.Module``, mapping (N, C, H, W) to (N, C, ceil(H/stride),
ceil(W/stride)). The ceiling holds for every op and every size (odd sizes included), so the
outputs of all ops on an edge always have the same shape.

Choices worth knowing:

* **Pools carry a BatchNorm.** The DARTS search network appends ``BatchNorm2d(C, affine=False)``
  to both pools (the conv ops end in a BN, a bare pool would not be on the same scale). Here the
  BN is part of the op and follows the ``affine`` argument, so the search supernet (``affine=False``)
  matches the original search code exactly. DARTS's *evaluation* network uses bare pools; an
  evaluation network gets them with the extra keyword ``bn=False``
  (``factory(C, stride, affine, bn=False)``), which the core never passes.
* **skip_connect at stride 2** is a :class:`FactorizedReduce` (two 1x1 stride-2 convs, the second
  one offset by one pixel, concatenated, then BN). On odd sizes the offset input is zero-padded at
  the bottom/right so both halves have ceil(H/2) rows; on even sizes this is exactly DARTS.
* **The cell blocks are nasreg's**: :class:`FactorizedReduce`, :class:`ReLUConvBN` (the cell
  preprocessing) and :func:`batch_norm_scaled` come from :mod:`nasreg` (``nasreg._core.cellnet``) and
  are re-exported here; the registered factories are declared in :mod:`nasreg_darts.factories`
  (``OPERATIONS``, a :class:`nasreg.OperationTable`, re-exported here).
* **none** returns fresh zeros of the output shape (no compute on the input). The core's
  :class:`nasreg.MixedOp` never builds it at all (it is declared ``is_zero``).
* **Two NASNet ops** are registered besides the eight DARTS ops, ``sep_conv_7x7`` and
  ``conv_7x1_1x7`` (ReLU, 1x7 conv, 7x1 conv, BN), with DARTS's definitions: the published
  NASNet-A and AmoebaNet-A genotypes (``genotypes/``) use them, so those can be trained. They are
  not in the default candidate list of any shipped spec.

Speed (the search supernet spends nearly all its time in these ops), without changing what they
compute:

* **Depthwise convolutions** are :class:`DepthwiseConv2d`, an ``nn.Conv2d`` (same parameters and
  attributes) that on CPU runs a *dilated* depthwise conv as a non-dilated one: at stride 1 on
  the ``d x d`` phase sub-images stacked along the batch (space-to-batch, as TensorFlow's atrous
  conv), at stride ``d`` on the one phase the conv reads. oneDNN's dilated depthwise backward is
  2 to 10x slower than its non-dilated one; the result is the same up to float rounding.
* **The mixed-op fast path** (:meth:`fused_forward`, see :class:`nasreg.MixedOp`): an op that
  starts with a ReLU takes the edge input's ReLU from its caller (computed once per cell node
  instead of once per op and edge, and saved once for backward), and an op that ends with a
  BatchNorm folds the mixing weight into the BN's affine transform (``w * BN(z)`` is a BN with
  scale ``w``), which saves a multiply pass and the memory of the op output that
  ``w * op(x)`` keeps for its backward. ``forward`` itself is unchanged.

Registry metadata of every op:

``is_zero``
    True only for ``none`` (the core skips its compute; selectors ignore it).
``parameter_free``
    True when the op has no trainable weights *as the search supernet builds it*: at stride 1
    with ``affine=False``. That is ``none``, the two pools and ``skip_connect`` -- the ops the
    DARTS literature calls parameter-free. (At stride 2 ``skip_connect`` becomes a
    FactorizedReduce with 1x1 convs, and with ``affine=True`` the pools' BN has a scale and a
    shift; neither changes the flag.)
``kind``
    Purely descriptive: ``"zero"``, ``"pool"``, ``"identity"`` or ``"conv"``.
``eval_kwargs``
    Extra keyword arguments an *evaluation* network passes to the factory (the pools:
    ``{"bn": False}``, DARTS's bare evaluation pools). The search supernet never passes them;
    an op without the key is built the same way in both networks.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nasreg import FactorizedReduce, ReLUConvBN, batch_norm_scaled

__all__ = [
    "ReLUConvBN", "DilConv", "SepConv", "FactorizedReduce", "Zero", "PoolBN", "Conv7x1x7", "OPS",
    "OP_METADATA", "OPERATIONS", "DepthwiseConv2d", "batch_norm_scaled", "Identity", "FactorizedReduceOp",
    "register_all",
]


# --- building blocks of the fast path -------------------------------------------------------------

def _sequential_fused(seq: nn.Sequential, x: torch.Tensor, scale: torch.Tensor | None,
                      x_relu: torch.Tensor | None) -> torch.Tensor:
    """``scale * seq(x)`` for a ReLU-first, BatchNorm-last ``Sequential``, reusing ``x_relu``."""
    layers = list(seq)
    h = x_relu if x_relu is not None else layers[0](x)
    for layer in layers[1:-1]:
        h = layer(h)
    return batch_norm_scaled(layers[-1], h, scale)


class _ReLUFirstSequential(nn.Module):
    """Base of the ops that are ``self.op = nn.Sequential(ReLU, ..., BatchNorm2d)``."""

    #: The op starts with ReLU(x): :meth:`fused_forward` accepts a shared ``relu(x)``.
    relu_input = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)

    def fused_forward(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                      x_relu: torch.Tensor | None = None) -> torch.Tensor:
        """``scale * self(x)``, with ``x_relu = relu(x)`` when the caller has it."""
        return _sequential_fused(self.op, x, scale, x_relu)

    def batch_key(self):
        """The batched-op protocol (:mod:`nasreg_darts.batched`): ops of this class with equal
        layer settings run as one call; ``None`` for a layer sequence it does not know (a conv
        with a bias or with groups other than 1 or depthwise, a layer of another type)."""
        layers = list(self.op)
        if (type(self).forward is not _ReLUFirstSequential.forward
                or not {type(m) for m in layers} <= _BATCHABLE_LAYERS
                or type(layers[0]) is not nn.ReLU or type(layers[-1]) is not nn.BatchNorm2d):
            return None
        for m in layers:
            if isinstance(m, nn.Conv2d) and (m.bias is not None or m.padding_mode != "zeros" or not (
                    m.groups == 1 or m.groups == m.in_channels == m.out_channels)):
                return None
        return tuple((type(m).__name__, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                      m.dilation, m.groups) if isinstance(m, nn.Conv2d)
                     else (type(m).__name__, getattr(m, "num_features", None), getattr(m, "affine", None),
                           getattr(m, "inplace", None))
                     for m in layers)

    @classmethod
    def batched_forward(cls, modules: list[nn.Module], x: torch.Tensor, scales: torch.Tensor,
                        x_relu: torch.Tensor | None) -> torch.Tensor:
        """Block ``e`` of the result is ``scale_e * modules[e](x_e)``: each layer once for all E
        modules (depthwise convs as one grouped conv over E * C channels, the others with
        ``groups = E``, BNs over E * C channels)."""
        from .batched import batch_norm_stacked, depthwise_stacked, pointwise_stacked

        seqs = [list(m.op) for m in modules]
        h = x_relu if x_relu is not None else torch.relu(x)
        last = len(seqs[0]) - 1
        for j in range(1, len(seqs[0])):
            layers = [s[j] for s in seqs]
            m = layers[0]
            if isinstance(m, nn.ReLU):
                h = torch.relu_(h) if m.inplace else torch.relu(h)  # h is a BN output here, the op's own
            elif isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels:
                h = depthwise_stacked(h, layers)
            elif isinstance(m, nn.Conv2d):
                h = pointwise_stacked(h, layers)
            else:
                h = batch_norm_stacked(layers, h, scales if j == last else None)
        return h


def _phase_depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                     d: int, pad: int) -> torch.Tensor:
    """A depthwise conv with dilation ``d`` and padding ``d * (k - 1) / 2`` (k odd), stride 1 or
    ``d``, computed with non-dilated convs (see :class:`DepthwiseConv2d`)."""
    C = x.shape[1]
    p = pad // d
    fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format  # the output keeps it
    if stride == d:
        # out[h] = sum_i w[i] x[d*h + d*i - pad] = sum_i w[i] x_0[h + i - p]: only phase 0 is read.
        return F.conv2d(x[:, :, ::d, ::d].contiguous(memory_format=fmt), weight, bias, padding=p, groups=C)
    N, _, H, W = x.shape
    ph, pw = (-H) % d, (-W) % d
    if ph or pw:  # zeros at the bottom/right: those rows and columns are the conv's padding anyway
        x = F.pad(x, (0, pw, 0, ph))
    Hd, Wd = (H + ph) // d, (W + pw) // d
    # (N, C, H, W) -> (d*d*N, C, H/d, W/d), phase (a, b) = x[:, :, a::d, b::d]; channels-last inside
    xs = (x.permute(0, 2, 3, 1).reshape(N, Hd, d, Wd, d, C).permute(2, 4, 0, 1, 3, 5)
          .reshape(d * d * N, Hd, Wd, C).permute(0, 3, 1, 2))
    y = F.conv2d(xs, weight, bias, padding=p, groups=C)
    y = (y.permute(0, 2, 3, 1).reshape(d, d, N, Hd, Wd, C).permute(2, 3, 0, 4, 1, 5)
         .reshape(N, Hd * d, Wd * d, C).permute(0, 3, 1, 2))
    # In the input's memory format (a channels-last input gets the channels-last result as is).
    return (y[:, :, :H, :W] if (ph or pw) else y).contiguous(memory_format=fmt)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (``groups == in_channels == out_channels``); same parameters.

    On CPU a dilated one (dilation ``d > 1``, the same in both directions, odd square kernel,
    "same" padding ``d * (k - 1) / 2``, stride 1 or ``d``) runs as a non-dilated conv: at stride
    ``d`` on ``x[:, :, ::d, ::d]``, the only pixels it reads; at stride 1 on the ``d * d`` phase
    sub-images ``x[:, :, a::d, b::d]`` stacked along the batch, whose outputs interleave back into
    the full output. Same arithmetic, different kernels: oneDNN's non-dilated depthwise kernels
    (forward and, above all, backward) are several times faster than its dilated ones. Anything
    else, and every other device, uses ``nn.Conv2d.forward``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        k, d, s, p = self.kernel_size, self.dilation, self.stride, self.padding
        self._phase = (self.groups == self.in_channels == self.out_channels and d[0] == d[1] > 1
                       and k[0] == k[1] and k[0] % 2 == 1 and s[0] == s[1] and s[0] in (1, d[0])
                       and isinstance(p, tuple) and p[0] == p[1] == d[0] * (k[0] - 1) // 2
                       and self.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._phase and x.device.type == "cpu" and x.dim() == 4:
            return _phase_depthwise(x, self.weight, self.bias, self.stride[0], self.dilation[0], self.padding[0])
        return super().forward(x)


_BATCHABLE_LAYERS = {nn.ReLU, nn.Conv2d, DepthwiseConv2d, nn.BatchNorm2d}


class DilConv(_ReLUFirstSequential):
    """ReLU, depthwise kxk conv (with ``dilation``), pointwise 1x1 conv, BatchNorm."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            DepthwiseConv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                            groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(_ReLUFirstSequential):
    """Two (ReLU, depthwise kxk, pointwise 1x1, BN) blocks; only the first one has the stride."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),  # the input is shared with the other ops of the edge
            DepthwiseConv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=True),  # acts on this op's own BN output: safe, saves a copy
            DepthwiseConv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class Zero(nn.Module):
    """Zeros of shape (N, C, ceil(H/stride), ceil(W/stride))."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.stride
        return x.new_zeros(n, c, -(-h // s), -(-w // s))


class PoolBN(nn.Module):
    """A 3x3 pool (padding 1) followed by BatchNorm, or by nothing when ``bn`` is False."""

    def __init__(self, kind: str, C: int, stride: int, affine: bool = True, bn: bool = True):
        super().__init__()
        if kind == "max":
            self.pool: nn.Module = nn.MaxPool2d(3, stride=stride, padding=1)
        elif kind == "avg":
            self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        else:
            raise ValueError(f"pool kind must be 'max' or 'avg', got {kind!r}")
        self.bn = nn.BatchNorm2d(C, affine=affine) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pool(x))

    def fused_forward(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                      x_relu: torch.Tensor | None = None) -> torch.Tensor:
        """``scale * self(x)`` (the scale folded into the BN when there is one)."""
        y = self.pool(x)
        if isinstance(self.bn, nn.BatchNorm2d):
            return batch_norm_scaled(self.bn, y, scale)
        return y if scale is None else y * scale

    def batch_key(self):
        """The batched-op protocol (:mod:`nasreg_darts.batched`): the pool is computed once for
        all E edges, the E BNs as one over E * C channels."""
        if type(self).forward is not PoolBN.forward or type(self.bn) not in (nn.BatchNorm2d, nn.Identity):
            return None
        p = self.pool
        return (type(p).__name__, p.kernel_size, p.stride, p.padding, getattr(p, "count_include_pad", None),
                getattr(p, "dilation", None), getattr(p, "ceil_mode", None), type(self.bn).__name__,
                getattr(self.bn, "num_features", None), getattr(self.bn, "affine", None))

    @classmethod
    def batched_forward(cls, modules: list[nn.Module], x: torch.Tensor, scales: torch.Tensor,
                        x_relu: torch.Tensor | None) -> torch.Tensor:
        from .batched import batch_norm_stacked

        y = modules[0].pool(x)  # per channel: every edge's pool at once
        if isinstance(modules[0].bn, nn.BatchNorm2d):
            return batch_norm_stacked([m.bn for m in modules], y, scales)
        return y * scales.view(1, -1, 1, 1)


class Identity(nn.Identity):
    """``skip_connect`` at stride 1: ``nn.Identity`` with the batched-op protocol."""

    def batch_key(self):
        return () if type(self).forward is nn.Identity.forward else None

    @classmethod
    def batched_forward(cls, modules: list[nn.Module], x: torch.Tensor, scales: torch.Tensor,
                        x_relu: torch.Tensor | None) -> torch.Tensor:
        return x * scales.view(1, -1, 1, 1)


class FactorizedReduceOp(FactorizedReduce):
    """``skip_connect`` at stride 2: :class:`nasreg.FactorizedReduce` (same parameters) with the
    batched-op protocol."""

    def batch_key(self):
        if type(self).fused_forward is not FactorizedReduce.fused_forward or type(self.bn) is not nn.BatchNorm2d:
            return None
        return (self.conv_1.in_channels, self.conv_1.out_channels, self.conv_2.out_channels, self.bn.affine)

    @classmethod
    def batched_forward(cls, modules: list[nn.Module], x: torch.Tensor, scales: torch.Tensor,
                        x_relu: torch.Tensor | None) -> torch.Tensor:
        from .batched import batch_norm_stacked, pointwise_stacked

        E = len(modules)
        h = x_relu if x_relu is not None else torch.relu(x)
        hh, ww = h.shape[-2:]
        shifted = h if not (hh % 2 or ww % 2) else F.pad(h, (0, ww % 2, 0, hh % 2))
        h1 = h
        if h.device.type == "cpu" and 2 <= x.shape[1] // E < 8 and _is_channels_last(h):
            h1 = h.contiguous()  # see nasreg.FactorizedReduce: a oneDNN bug with 2 to 7 channels
        a = pointwise_stacked(h1, [m.conv_1 for m in modules])
        b = pointwise_stacked(shifted[:, :, 1:, 1:], [m.conv_2 for m in modules])
        out = torch.cat([a.unflatten(1, (E, -1)), b.unflatten(1, (E, -1))], dim=2).flatten(1, 2)
        return batch_norm_stacked([m.bn for m in modules], out, scales)


class Conv7x1x7(_ReLUFirstSequential):
    """ReLU, a 1x7 conv then a 7x1 conv (the stride split between them), BatchNorm (NASNet's op)."""

    def __init__(self, C: int, stride: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )


# --- the registered factories ---------------------------------------------------------------------
# They live in the torch-free :mod:`nasreg_darts.factories` (loading the plugin imports no torch)
# and build the modules above when called; re-exported here.

from .factories import OPERATIONS  # noqa: E402

#: name -> factory, and name -> registry metadata, in registration order.
OPS: dict[str, Callable[..., nn.Module]] = OPERATIONS.factories()
OP_METADATA: dict[str, dict[str, object]] = OPERATIONS.metadata()

#: Registers the ten ops with their metadata through a ``register_operations`` callable.
register_all = OPERATIONS.register_all
