"""Built-in plugin ``dgdarts``: the ``dg-darts`` selector (Park and Song, DG-DARTS).

Stage 0 is DARTS over all candidate ops. After it, on every edge the non-zero ops are clustered
by the trajectory of their architecture gradient over the joint epochs (Elkan k-means by default),
the zero op is a group of its own, and the heaviest group (by summed softmax weight), topped up to
``min_ops`` ops, is the edge's candidate set for stage 1: DARTS again, over fewer ops. The genotype
is the DARTS derivation of the last stage. Each selection writes ``clusters.json`` (every edge's
groups, weights, chosen set and deciding rule) and ``gradients_stage{N}.png`` into the run
directory.

The decision for one edge is :func:`group_and_select`, a pure function.
"""

from __future__ import annotations

from nasreg import hookimpl

from .grouping import EdgeDecision, Group, group_and_select
from .selector import NAME, GradientGroupedSelector, load_clusters

__all__ = ["GradientGroupedSelector", "group_and_select", "EdgeDecision", "Group", "load_clusters", "NAME"]


@hookimpl
def register_selectors(register):
    register(NAME, GradientGroupedSelector,
             description="DG-DARTS: group ops by architecture-gradient trajectory, search the heaviest group again")
