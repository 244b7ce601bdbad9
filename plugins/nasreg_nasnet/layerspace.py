"""The layer-wise space object of NAS (``[search_space] name = "nas-layers"``), without torch.

:class:`NasLayersSpace` checks the space's keys, lists the controller's decisions and turns
choices into genotypes; its network (:mod:`nasreg_nasnet.layers`, which describes the space) is
imported when it is built. So ``nasreg validate`` builds the space without paying for torch.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import TYPE_CHECKING, Any, Sequence

import nasreg

from .decisions import DiscreteSpace
from .factories import FILTERS, HEIGHTS, WIDTHS, layer_op_name

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from torch import nn

__all__ = ["CELL", "NasLayersSpace"]

CELL = "layers"


class NasLayersSpace(DiscreteSpace, nasreg.SearchSpace):
    """Zoph and Le's layer-wise space (see the module docstring)."""

    name = "nas-layers"

    def __init__(self, layers: int = 4, filter_heights: Sequence[int] = HEIGHTS,
                 filter_widths: Sequence[int] = WIDTHS, filters: Sequence[int] = FILTERS,
                 strides: Sequence[int] = (1,), skip_connections: bool = True,
                 operations: Sequence[str] | None = None):
        for key, values in (("filter_heights", filter_heights), ("filter_widths", filter_widths),
                            ("filters", filters), ("strides", strides)):
            if not values:
                raise ValueError(f"{key}: expected at least one value")
            twice = [v for v, n in Counter(values).items() if n > 1]
            if twice:
                raise ValueError(f"{key}: the value {twice[0]!r} is listed twice")
        self.layers = layers
        self.filter_heights = list(filter_heights)
        self.filter_widths = list(filter_widths)
        self.filters = list(filters)
        self.strides = list(strides)
        self.skip_connections = skip_connections
        self.operations = [layer_op_name(h, w, f, s) for h, w, f, s in itertools.product(
            self.filter_heights, self.filter_widths, self.filters, self.strides)]

    # -- the decisions a controller makes --------------------------------------------------------
    def all_decisions(self) -> list[tuple[str, int]]:
        out = []
        for i in range(self.layers):
            out += [(f"layer{i}.filter_height", len(self.filter_heights)),
                    (f"layer{i}.filter_width", len(self.filter_widths)),
                    (f"layer{i}.filters", len(self.filters)),
                    (f"layer{i}.stride", len(self.strides))]
            if self.skip_connections:
                out += [(f"layer{i}.input_from_layer{j}", 2) for j in range(i)]
        return out

    def decision_kinds(self) -> list[str]:
        """The kind of each decision of :meth:`decisions` (for mutation-based strategies such as
        ``evolution``): ``filter_height``, ``filter_width``, ``filters``, ``stride`` or ``input``
        (an anchor: whether a layer reads an earlier one)."""
        return ["input" if ".input_from_" in name else name.rsplit(".", 1)[1] for name, _n in self.decisions()]

    def build_genotype(self, choices: list[int]) -> nasreg.Genotype:
        it = iter(choices)
        edges, consumed = [], set()
        for i in range(self.layers):
            h, w, f, s = (next(it) for _ in range(4))
            op = layer_op_name(self.filter_heights[h], self.filter_widths[w], self.filters[f], self.strides[s])
            if self.skip_connections:
                inputs = [j + 1 for j in range(i) if next(it)]
            else:
                inputs = [i] if i > 0 else []
            inputs = inputs or [0]  # a layer with no input takes the image
            consumed.update(k for k in inputs if k > 0)
            edges += [nasreg.GenotypeEdge(i + 1, k, op) for k in inputs]
        last = self.layers
        concat = [n for n in range(1, last + 1) if n == last or n not in consumed]
        cell = nasreg.CellGenotype(edges=edges, concat=concat, combine={n: "concat" for n in range(1, last + 1)})
        return nasreg.Genotype(space=self.name, cells={CELL: cell})

    # -- the SearchSpace contract ----------------------------------------------------------------
    def edges(self) -> dict[str, list[tuple[int, int]]]:
        return {CELL: [(k, i + 1) for i in range(self.layers) for k in range(i + 1)]}

    def concat(self, cell_type: str) -> list[int]:
        """Every layer (a genotype lists the last layer and the layers no other layer reads)."""
        if cell_type != CELL:
            raise KeyError(f"unknown cell type {cell_type!r} (expected {CELL!r})")
        return list(range(1, self.layers + 1))

    def build_network(self, genotype: nasreg.Genotype, *, ops: nasreg.Registry, in_channels: int,
                      num_classes: int, cells: int | None = None, channels: int | None = None,
                      auxiliary: bool = False, **keys: Any) -> nn.Module:
        """The network of ``genotype``. The genotype fixes every layer and its width, so the space
        declares no evaluation-network keys (``[evaluate]`` refuses ``cells``, ``channels`` and
        ``auxiliary``; given here, they are ignored)."""
        if keys:
            raise TypeError(f"nas-layers network: unknown key {sorted(keys)[0]!r}")
        from .layers import NasLayersNetwork

        return NasLayersNetwork(genotype, ops=ops, in_channels=in_channels, num_classes=num_classes)

    def __repr__(self) -> str:
        return (f"NasLayersSpace(layers={self.layers}, heights={self.filter_heights}, widths={self.filter_widths}, "
                f"filters={self.filters}, strides={self.strides}, skip_connections={self.skip_connections})")
