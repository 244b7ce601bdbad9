"""The ``argmax`` selector (the DARTS derivation) and a genotype helper other selectors can share.

``argmax`` runs one stage, then keeps, for every intermediate node, the ``inputs_per_node``
incoming edges whose strongest non-zero op weighs most, and on each that op
(:func:`nasreg.derive_topk`; zero ops such as ``none`` are never picked).
"""

from __future__ import annotations

from typing import Any

import nasreg

__all__ = ["ArgmaxSelector", "genotype_from_result", "provenance"]


def provenance(run: Any, selector_name: str, stages: int, **extra: Any) -> dict[str, Any]:
    """The provenance a genotype records: spec hash, nasreg version, seed, selector, stage count.

    ``extra`` keys are added as they are (they must be JSON values).
    """
    return {
        "spec_hash": run.spec.digest(),
        "nasreg_version": nasreg.__version__,
        "seed": run.seed,
        "selector": selector_name,
        "stages": stages,
        **extra,
    }


def genotype_from_result(result: nasreg.StageResult, run: Any, selector_name: str,
                         **extra_provenance: Any) -> nasreg.Genotype:
    """The DARTS derivation of a final :class:`~nasreg.StageResult`, as a :class:`~nasreg.Genotype`.

    Uses :func:`nasreg.derive_topk` with ``k = run.space.inputs_per_node`` and the registry's
    zero ops, names the space after ``[search_space] name`` and concatenates
    ``run.space.concat(cell_type)``. The stage count recorded is ``result.stage + 1``.
    ``extra_provenance`` is merged into the provenance (e.g. a selector's own settings).
    """
    kept = nasreg.derive_topk(result.alphas, result.candidates, result.edges, run.zero_ops(),
                              k=run.space.inputs_per_node)
    cells = {ct: nasreg.CellGenotype(edges=edges, concat=list(run.space.concat(ct)))
             for ct, edges in kept.items()}
    return nasreg.Genotype(space=run.spec.search_space.name, cells=cells,
                           provenance=provenance(run, selector_name, result.stage + 1, **extra_provenance))


class ArgmaxSelector(nasreg.Selector):
    """DARTS derivation: per node the 2 strongest edges, on each its strongest op other than none."""

    name = "argmax"
    num_stages = 1

    def derive(self, result: nasreg.StageResult, run: Any) -> nasreg.Genotype:
        return genotype_from_result(result, run, self.name)
