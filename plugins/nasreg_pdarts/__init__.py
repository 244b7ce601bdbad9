"""Built-in plugin ``pdarts``: the ``pdarts`` selector (Chen et al., P-DARTS, ICCV 2019).

Three stages of DARTS over ever deeper supernets (``cells`` per stage, through the core's per-stage
space keys, :meth:`nasreg.Selector.stage_space_keys`) and ever smaller per-edge candidate sets
(``keep_ops``), with dropout on the skip connections (the darts-cell space's ``skip_dropout``);
the genotype is the DARTS derivation of the last stage with at most ``max_skip_connects`` skip
connections in the normal cell. :func:`prune` and :func:`limit_skip_connects` are pure functions.
"""

from __future__ import annotations

from nasreg import hookimpl

from .selector import NAME, ProgressiveSelector, limit_skip_connects, prune

__all__ = ["NAME", "ProgressiveSelector", "limit_skip_connects", "prune"]


@hookimpl
def register_selectors(register):
    register(NAME, ProgressiveSelector,
             description="P-DARTS: deeper supernets stage by stage over fewer ops per edge, skip dropout, "
                         "at most 2 skip connections in the normal cell")
