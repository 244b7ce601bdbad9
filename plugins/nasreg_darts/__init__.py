"""nasreg's built-in DARTS plugin (Liu, Simonyan, Yang, ICLR 2019).

Registers, through the public plugin API only:

Registration imports no torch: the op and space factories are in :mod:`nasreg_darts.factories`
and import their torch modules when called; the strategy and selector modules import torch in
their methods.

* operations: the eight DARTS ops (``none``, ``max_pool_3x3``, ``avg_pool_3x3``,
  ``skip_connect``, ``sep_conv_3x3``, ``sep_conv_5x5``, ``dil_conv_3x3``, ``dil_conv_5x5``),
  and the NASNet ops ``sep_conv_7x7`` and ``conv_7x1_1x7`` that the published NASNet-A and
  AmoebaNet-A genotypes use, see :mod:`nasreg_darts.ops`;
* search space ``darts-cell``: the DARTS cell and its search supernet, see
  :mod:`nasreg_darts.space`, and the evaluation network a genotype describes, see
  :mod:`nasreg_darts.network`; its registry metadata declares the network's ``[evaluate]`` keys
  (``network_keys``: cells, channels, auxiliary, stem_multiplier) and DARTS's CIFAR-10 recipe as
  the evaluation defaults (``evaluation_defaults``), see :mod:`nasreg_darts.factories`;
* strategy ``darts``: bilevel optimization, first or second order, see
  :mod:`nasreg_darts.strategy`;
* selector ``argmax``: the DARTS derivation, see :mod:`nasreg_darts.selector`.
"""

from __future__ import annotations

from nasreg import hookimpl


@hookimpl
def register_operations(register):
    from .factories import OPERATIONS

    OPERATIONS.register_all(register)


@hookimpl
def register_search_spaces(register):
    from .factories import EVALUATION_DEFAULTS, darts_cell, darts_network

    register("darts-cell", darts_cell, network_keys=darts_network, evaluation_defaults=EVALUATION_DEFAULTS)


@hookimpl
def register_strategies(register):
    from .strategy import DartsStrategy

    register("darts", DartsStrategy, description="DARTS bilevel optimization, first or second order")


@hookimpl
def register_selectors(register):
    from .selector import ArgmaxSelector

    register("argmax", ArgmaxSelector, description="DARTS derivation: top-2 edges per node, strongest op")
