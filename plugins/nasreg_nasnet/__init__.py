"""nasreg's built-in NAS/NASNet plugin: the search spaces of Zoph and Le (2017) and Zoph et al. (2018).

Registers, through the public plugin API only:

* operations: the NASNet ops the ``darts`` plugin does not already register (``conv_1x3_3x1``,
  ``max_pool_5x5``, ``max_pool_7x7``, ``conv_1x1``, ``conv_3x3``; the other eight of NASNet's 13
  are DARTS's, reused by name, see :mod:`nasreg_nasnet.ops`), and the layer ops of the
  ``nas-layers`` space (``conv_{h}x{w}_{f}[_s{s}]``, see :mod:`nasreg_nasnet.layers`);
* search space ``nasnet-cell``: NASNet's Normal and Reduction cells of B blocks, see
  :mod:`nasreg_nasnet.space`, and the network of its genotypes, :mod:`nasreg_nasnet.network`
  (its ``[evaluate]`` keys and recipe defaults are registry metadata, see :mod:`nasreg_nasnet.factories`);
* search space ``nas-layers``: NAS's layer-wise space (filter sizes, counts, strides, anchor-point
  skip connections), see :mod:`nasreg_nasnet.layers`.

Both spaces are searched by sampling strategies (``reinforce`` and ``random`` of the ``rl``
plugin): they list their discrete decisions (``decisions()``) and turn one choice per decision
into a genotype (``genotype_from_choices()``), see :mod:`nasreg_nasnet.decisions`. Neither has a
supernet. Their genotypes train with ``nasreg train`` like DARTS's.

The plugin needs the ``darts`` plugin's ops (reused by name, through the registry); it imports
only :mod:`nasreg`: its network is built from nasreg's cell-network blocks (``nasreg.CellNetwork``).

Registration imports no torch: the op factories, the layer ops and the two space factories are in
:mod:`nasreg_nasnet.factories` and import their torch modules (``ops``, ``layers``, ``space``)
when called.
"""

from __future__ import annotations

from nasreg import hookimpl


@hookimpl
def register_operations(register):
    from .factories import OPERATIONS, register_layer_ops

    OPERATIONS.register_all(register)
    register_layer_ops(register)


@hookimpl
def register_search_spaces(register):
    from .factories import EVALUATION_DEFAULTS, nas_layers, nasnet_cell, nasnet_network

    register("nasnet-cell", nasnet_cell, network_keys=nasnet_network, evaluation_defaults=EVALUATION_DEFAULTS)
    register("nas-layers", nas_layers)  # no network keys (the genotype fixes every layer), no recipe
