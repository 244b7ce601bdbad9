"""The DG-DARTS decision for one edge, as a pure function (no run, no files, no torch).

:func:`group_and_select` takes the candidate ops of one mixed op, their final softmax weights and
their trajectories (the architecture gradient per joint epoch, or the softmax weight per epoch),
clusters the non-zero ops with any object that has ``fit_predict(X) -> labels``, makes the zero
ops a group of their own, sums the weights of each group and picks the stage-1 candidate set:

1. Groups are ranked by total weight (ties: the group whose first op comes first in candidate
   order).
2. The winner is the heaviest group. If that is the zero group, ``none_group_wins`` decides:
   ``"next"`` takes the heaviest non-zero group instead; ``"keep"`` lets the zero group win, so the
   edge gets only the top-up (step 3).
3. While the set has fewer than ``min_ops`` non-zero ops, ops of the next groups are added, group
   by group in decreasing group weight and, inside a group, by decreasing op weight.
4. Zero ops are in the set only when ``keep_none`` is true; then they always are (as in plain
   DARTS, where the zero op is always a candidate) and they do not count towards ``min_ops``.

The returned set keeps the original candidate order.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from nasreg import NasregError

Normalize = Literal["none", "standardize", "l2"]
NoneGroupWins = Literal["next", "keep"]

#: The rules that can decide an edge (``EdgeDecision.rule``), for ``clusters.json`` readers.
RULES = {
    "heaviest": "the heaviest group had at least min_ops ops",
    "heaviest+topup": "the heaviest group, topped up to min_ops from the next groups",
    "zero-heaviest:next": "the zero group was heaviest; the heaviest non-zero group was used",
    "zero-heaviest:next+topup": "the zero group was heaviest; the heaviest non-zero group, topped up",
    "zero-heaviest:keep+topup": "the zero group was heaviest and kept as winner; only the top-up",
    "single-op": "the edge has one non-zero op: nothing to cluster",
    "zero-only": "the edge has no non-zero op: its zero ops are kept",
}


@dataclass
class Group:
    """One group of ops of an edge: a cluster, or the zero ops."""

    ops: list[str]
    weights: list[float]
    weight: float
    zero: bool = False
    label: Any = None


@dataclass
class EdgeDecision:
    """What :func:`group_and_select` decided for one edge."""

    chosen: list[str]
    #: Groups in decreasing total weight.
    groups: list[Group]
    rule: str
    #: Ops added by the top-up, in the order they were added.
    topped_up: list[str] = field(default_factory=list)
    #: The number of clusters asked of the clusterer (after clamping); None when not clustered.
    n_clusters: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for g in out["groups"]:
            g["label"] = _jsonable(g["label"])
        return out


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def normalize_features(X: np.ndarray, how: Normalize) -> np.ndarray:
    """``"none"``: raw trajectories (the paper). ``"standardize"``: every epoch (column) to zero
    mean and unit variance across the edge's ops, so each epoch weighs the same. ``"l2"``: every
    op's trajectory (row) to unit length, so ops group by the shape of their trajectory, not its
    size. Constant columns and all-zero rows become zeros."""
    X = np.asarray(X, dtype=np.float64)
    if how == "none":
        return X
    if how == "standardize":
        std = X.std(axis=0)
        return np.divide(X - X.mean(axis=0), std, out=np.zeros_like(X), where=std > 0)
    if how == "l2":
        norm = np.linalg.norm(X, axis=1, keepdims=True)
        return np.divide(X, norm, out=np.zeros_like(X), where=norm > 0)
    raise ValueError(f"normalize: expected 'none', 'standardize' or 'l2', got {how!r}")


def cluster_labels(clusterer: Any, X: np.ndarray) -> tuple[list[Any], int | None]:
    """``clusterer.fit_predict(X)`` with the number of clusters clamped to the data.

    When ``X`` has fewer distinct rows than the clusterer's ``n_clusters`` (an edge with few ops,
    ops with identical trajectories), a copy of the clusterer with ``n_clusters`` = the number of
    distinct rows is fitted instead: k-means cannot make more clusters than there are distinct
    points. With one distinct row (or a single op) everything is one cluster and the clusterer is
    not called. Returns the labels and the ``n_clusters`` used (None for a clusterer without one).
    """
    n = X.shape[0]
    distinct = len(np.unique(X, axis=0)) if n else 0
    k = getattr(clusterer, "n_clusters", None)
    k = k if isinstance(k, int) and not isinstance(k, bool) else None
    if distinct <= 1 or k == 1:
        return [0] * n, (1 if k is not None else None)
    if k is not None and k > distinct:
        clusterer = copy.deepcopy(clusterer)
        if hasattr(clusterer, "set_params"):
            clusterer.set_params(n_clusters=distinct)
        else:
            clusterer.n_clusters = distinct
        k = distinct
    labels = clusterer.fit_predict(X)
    labels = list(np.asarray(labels).reshape(-1))
    if len(labels) != n:
        raise NasregError(f"clusterer {type(clusterer).__name__} returned {len(labels)} labels for {n} ops")
    return [_jsonable(label) for label in labels], k


def group_and_select(ops: Sequence[str], weights: Sequence[float], features: Sequence[Sequence[float]],
                     clusterer: Any, zero_ops: set[str] | frozenset[str], min_ops: int = 2,
                     keep_none: bool = False, none_group_wins: NoneGroupWins = "next",
                     normalize: Normalize = "none") -> EdgeDecision:
    """Group one edge's ops and choose its next-stage candidate set (see the module docstring).

    ``features[i]`` is the trajectory of ``ops[i]`` (rows of zero ops are ignored); ``clusterer``
    is anything with ``fit_predict``.
    """
    ops = list(ops)
    weights = [float(w) for w in weights]
    if len(weights) != len(ops) or len(features) != len(ops):
        raise ValueError(f"{len(ops)} ops, {len(weights)} weights and {len(features)} feature rows differ")
    if min_ops < 1:
        raise ValueError(f"min_ops must be >= 1, got {min_ops}")
    order = {op: i for i, op in enumerate(ops)}
    live = [i for i, op in enumerate(ops) if op not in zero_ops]
    zeros = [i for i, op in enumerate(ops) if op in zero_ops]

    groups: list[Group] = []
    n_clusters = None
    if live:
        X = normalize_features(np.array([list(features[i]) for i in live], dtype=np.float64), normalize)
        labels, n_clusters = cluster_labels(clusterer, X)
        by_label: dict[Any, list[int]] = {}
        for i, label in zip(live, labels):
            by_label.setdefault(label, []).append(i)
        for label, members in by_label.items():
            groups.append(Group([ops[i] for i in members], [weights[i] for i in members],
                                sum(weights[i] for i in members), label=label))
    if zeros:
        groups.append(Group([ops[i] for i in zeros], [weights[i] for i in zeros],
                            sum(weights[i] for i in zeros), zero=True, label="zero"))
    groups.sort(key=lambda g: (-g.weight, order[g.ops[0]]))

    kept_zero = [ops[i] for i in zeros] if keep_none else []
    if not live:
        return EdgeDecision(chosen=[ops[i] for i in zeros], groups=groups, rule="zero-only")
    if len(live) == 1:
        return EdgeDecision(chosen=_in_order([ops[live[0]], *kept_zero], order), groups=groups,
                            rule="single-op", n_clusters=n_clusters)

    live_groups = [g for g in groups if not g.zero]
    zero_first = groups[0].zero
    if zero_first and none_group_wins == "keep":
        chosen: list[str] = []
        rest = live_groups
        rule = "zero-heaviest:keep"
    else:
        chosen = list(live_groups[0].ops)
        rest = live_groups[1:]
        rule = "zero-heaviest:next" if zero_first else "heaviest"
    topped_up: list[str] = []
    for g in rest:
        if len(chosen) >= min_ops:
            break
        for op in sorted(g.ops, key=lambda o: (-weights[order[o]], order[o])):
            if len(chosen) >= min_ops:
                break
            chosen.append(op)
            topped_up.append(op)
    if topped_up or rule == "zero-heaviest:keep":
        rule += "+topup"
    return EdgeDecision(chosen=_in_order(chosen + kept_zero, order), groups=groups, rule=rule,
                        topped_up=topped_up, n_clusters=n_clusters)


def _in_order(chosen: list[str], order: dict[str, int]) -> list[str]:
    return sorted(set(chosen), key=order.__getitem__)
