"""The NASNet operations that the DARTS plugin does not already register.

NASNet's 13 operations (Zoph et al., 2018) and the registry names that build them:

=====================================  ==================  ======================
NASNet operation                       registry name       registered by
=====================================  ==================  ======================
identity                               ``skip_connect``    darts (FactorizedReduce at stride 2)
1x3 then 3x1 convolution               ``conv_1x3_3x1``    **nasnet**
1x7 then 7x1 convolution               ``conv_7x1_1x7``    darts (ReLU, 1x7, 7x1, BN: the same op)
3x3 dilated convolution                ``dil_conv_3x3``    darts
3x3 average pooling                    ``avg_pool_3x3``    darts
3x3 max pooling                        ``max_pool_3x3``    darts
5x5 max pooling                        ``max_pool_5x5``    **nasnet**
7x7 max pooling                        ``max_pool_7x7``    **nasnet**
1x1 convolution                        ``conv_1x1``        **nasnet**
3x3 convolution                        ``conv_3x3``        **nasnet**
3x3 depthwise-separable convolution    ``sep_conv_3x3``    darts
5x5 depthwise-separable convolution    ``sep_conv_5x5``    darts
7x7 depthwise-separable convolution    ``sep_conv_7x7``    darts
=====================================  ==================  ======================

The ops the DARTS plugin registers are reused by name, never registered twice (a name registered
by two plugins is an error of both). ``conv_7x1_1x7`` is DARTS's name for NASNet's "1x7 then 7x1
convolution" (the published NASNet-A genotype uses it); it is the same op, so this plugin does not
add a ``conv_1x7_7x1`` alias.

Every factory follows the operation contract, ``factory(C, stride, affine) -> nn.Module`` mapping
(N, C, H, W) to (N, C, ceil(H/stride), ceil(W/stride)), with the conventions of the DARTS ops:
convolutions are ReLU, conv, BatchNorm (NASNet's order); the pools carry a BatchNorm in a search
network and none in an evaluation network (``eval_kwargs = {"bn": False}``), as DARTS's pools do.

The registered factories (``OPERATIONS``, a :class:`nasreg.OperationTable`) and
``NASNET_OPERATIONS`` live in the torch-free :mod:`nasreg_nasnet.factories` (loading the plugin
imports no torch); they build the modules below when called.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FactorizedConv", "Pool"]


class FactorizedConv(nn.Module):
    """ReLU, a 1xk conv (stride along W), a kx1 conv (stride along H), BatchNorm."""

    def __init__(self, C: int, k: int, stride: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, k), stride=(1, stride), padding=(0, k // 2), bias=False),
            nn.Conv2d(C, C, (k, 1), stride=(stride, 1), padding=(k // 2, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Pool(nn.Module):
    """A kxk max or average pool (padding k // 2), then BatchNorm unless ``bn`` is False."""

    def __init__(self, kind: str, k: int, C: int, stride: int, affine: bool = True, bn: bool = True):
        super().__init__()
        if kind == "max":
            self.pool: nn.Module = nn.MaxPool2d(k, stride=stride, padding=k // 2)
        elif kind == "avg":
            self.pool = nn.AvgPool2d(k, stride=stride, padding=k // 2, count_include_pad=False)
        else:
            raise ValueError(f"pool kind must be 'max' or 'avg', got {kind!r}")
        self.bn = nn.BatchNorm2d(C, affine=affine) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pool(x))
