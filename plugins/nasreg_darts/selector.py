"""The ``argmax`` selector: one stage, then the search space's own derivation.

For the darts-cell space that is the DARTS derivation (:meth:`nasreg_darts.space.DartsCellSpace.derive`):
for every intermediate node the ``inputs_per_node`` (2) incoming edges whose strongest non-zero op
weighs most, stronger edge first, and on each that op (zero ops such as ``none`` are never picked).
The selector holds no rule of its own: the rule belongs to the space, whose evaluation network is
built from what it derives.
"""

from __future__ import annotations

from typing import Any

import nasreg

__all__ = ["ArgmaxSelector"]


class ArgmaxSelector(nasreg.Selector):
    """DARTS derivation: per node the 2 strongest edges, on each its strongest op other than none."""

    name = "argmax"
    num_stages = 1

    def derive(self, result: nasreg.StageResult, run: Any) -> nasreg.Genotype:
        kept = run.space.derive(result, run.zero_ops())
        return nasreg.genotype_from_edges(kept, run, selector=self.name, stages=result.stage + 1)
