"""The ``dg-darts`` selector: DARTS in stages, each later stage over the heaviest op group of
every edge of the stage before (Park and Song, DG-DARTS, section 3.2)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import nasreg
from nasreg import (Component, Genotype, NasregError, Range, Ref, RunDir, RunDirError, Selector, SpecError,
                    StageResult, component, genotype_from_edges, write_json)

from .grouping import EdgeDecision, NoneGroupWins, Normalize, group_and_select

NAME = "dg-darts"
CLUSTERS_FILE = "clusters.json"


class GradientGroupedSelector(Selector):
    """DG-DARTS: group each edge's ops by their architecture-gradient trajectory, search the
    heaviest group again.

    Keys (the ``[selector]`` table):

    ``stages``           number of search stages (the paper: 2).
    ``clusterer``        the ``[selector.clusterer]`` table (default: ``elkan`` with the paper's
                         settings); its ``random_state``/``seed``, when unset, is the run's seed.
    ``features``         what is clustered: ``"gradient"`` (the architecture gradient per joint
                         epoch, the paper) or ``"alpha"`` (the softmax weight per joint epoch).
    ``normalize``        ``"none"`` (raw trajectories, the paper), ``"standardize"`` (per epoch,
                         across the edge's ops) or ``"l2"`` (per op trajectory).
    ``min_ops``          the fewest non-zero ops an edge keeps; the heaviest group is topped up.
    ``keep_none``        keep the zero op (``none``) in later stages' candidate sets.
    ``none_group_wins``  when the zero group is heaviest: ``"next"`` uses the heaviest non-zero
                         group, ``"keep"`` keeps only the top-up of ``min_ops`` ops.
    ``inherit_weights``  start later stages from the previous stage's weights where ops persist.
    ``plot``             write ``gradients_stage{N}.png`` at every selection.
    """

    def __init__(self, stages: Annotated[int, Range(ge=1, le=10)] = 2,
                 clusterer: Annotated[dict, Ref("clusterers")] = {"name": "elkan"},  # noqa: B006 - never mutated
                 features: Literal["gradient", "alpha"] = "gradient",
                 normalize: Normalize = "none",
                 min_ops: Annotated[int, Range(ge=1)] = 2,
                 keep_none: bool = False,
                 none_group_wins: NoneGroupWins = "next",
                 inherit_weights: bool = False,
                 plot: bool = True) -> None:
        self.num_stages = stages
        self.clusterer = clusterer
        self.features = features
        self.normalize = normalize
        self.min_ops = min_ops
        self.keep_none = keep_none
        self.none_group_wins = none_group_wins
        self.inherit_weights = inherit_weights
        self.plot = plot

    def check(self, stages: list[tuple[int, int]]) -> None:
        """Every stage followed by a selection needs joint epochs: their trajectories are clustered."""
        for i, (warmup, epochs) in enumerate(stages[:-1]):
            if epochs <= warmup:
                raise SpecError(f"stage {i} has no joint epochs ({warmup} warm-up of {epochs}), so there "
                                f"would be nothing to cluster: give it more epochs than warmup_epochs")

    # -- stage transitions -----------------------------------------------------------------------
    def build_clusterer(self, run: Any) -> Any:
        """The clusterer object: built from the spec table (seeded with the run's seed), or used as
        given when the selector was constructed with an object that has ``fit_predict``."""
        c = self.clusterer
        if hasattr(c, "fit_predict"):
            return c
        if isinstance(c, dict):
            c = component("clusterers", c, "[selector.clusterer]", run.registries)
        if not isinstance(c, Component):
            raise SpecError(f"[selector] clusterer: expected a table naming a clusterer, got {c!r}")
        out = c.build(random_state=run.seed, seed=run.seed)  # fills them only where the spec did not
        if not hasattr(out, "fit_predict"):
            raise SpecError(f"[selector.clusterer]: clusterer {c.name!r} built a {type(out).__name__}, "
                            "which has no fit_predict(X)")
        return out

    def trajectories(self, result: StageResult) -> dict[str, list[list[list[float]]]]:
        """The clustered trajectories of ``result``, checked: one per op, all of one length >= 1."""
        key = "grad_history" if self.features == "gradient" else "alpha_history"
        history = getattr(result, key)
        what = "architecture gradients" if self.features == "gradient" else "alpha trajectories"
        no_epochs = SpecError(
            f"stage {result.stage} has no joint epochs (its epochs are all warm-up epochs), so there "
            f"are no {what} to cluster: give [search] epochs more than warmup_epochs for stage {result.stage}")
        lengths = set()
        for ct, edges in result.candidates.items():
            rows = history.get(ct)
            if rows is None or len(rows) != len(edges):
                raise no_epochs if not history else NasregError(
                    f"stage {result.stage}: {key} has no trajectories for every {ct} edge")
            for e, ops in enumerate(edges):
                if len(rows[e]) != len(ops):
                    raise NasregError(f"stage {result.stage}: {key}[{ct}][{e}] has {len(rows[e])} "
                                      f"trajectories for {len(ops)} ops")
                for op, traj in zip(ops, rows[e]):
                    if not all(math.isfinite(v) for v in traj):
                        raise NasregError(f"stage {result.stage}: the {what} of {op!r} on {ct} edge {e} "
                                          "are not finite (did the search diverge?)")
                    lengths.add(len(traj))
        if not lengths or lengths == {0}:
            raise no_epochs
        if len(lengths) > 1:
            raise NasregError(f"stage {result.stage}: {key} trajectories differ in length ({sorted(lengths)})")
        return history

    def decide(self, result: StageResult, run: Any, history=None) -> dict[str, list[EdgeDecision]]:
        """The decision for every edge of every cell type (``history``: :meth:`trajectories`)."""
        history = self.trajectories(result) if history is None else history
        clusterer = self.build_clusterer(run)
        zero = run.zero_ops()
        with _single_threaded():
            return {
                ct: [group_and_select(ops, result.alphas[ct][e], history[ct][e], clusterer, zero,
                                      min_ops=self.min_ops, keep_none=self.keep_none,
                                      none_group_wins=self.none_group_wins, normalize=self.normalize)
                     for e, ops in enumerate(edges)]
                for ct, edges in result.candidates.items()
            }

    def next_candidates(self, result: StageResult, run: Any) -> nasreg.Candidates:
        history = self.trajectories(result)
        decisions = self.decide(result, run, history)
        run_dir = Path(run.run_dir)
        self._write_clusters(run_dir, result, decisions, seed=run.seed)
        if self.plot:
            from .plots import plot_gradients

            plot_gradients(run_dir / f"gradients_stage{result.stage}.png", result, history, decisions,
                           feature=self.features)
        return {ct: [d.chosen for d in ds] for ct, ds in decisions.items()}

    def _write_clusters(self, run_dir: Path, result: StageResult, decisions, seed: int) -> None:
        transitions = [t for t in load_clusters(run_dir).get("transitions", []) if t["from_stage"] < result.stage]
        cells = {}
        for ct, ds in decisions.items():
            cells[ct] = [{
                "edge": e,
                "input": result.edges[ct][e][0],
                "output": result.edges[ct][e][1],
                "candidates": list(result.candidates[ct][e]),
                "weights": list(result.alphas[ct][e]),
                **d.to_dict(),
            } for e, d in enumerate(ds)]
        transitions.append({
            "from_stage": result.stage,
            "to_stage": result.stage + 1,
            "candidate_counts": {"before": _counts(result.candidates),
                                 "after": _counts({ct: [d.chosen for d in ds] for ct, ds in decisions.items()})},
            "cells": cells,
        })
        clusterer = self.clusterer
        data = {
            "selector": NAME,
            "settings": {
                "features": self.features, "normalize": self.normalize, "min_ops": self.min_ops,
                "keep_none": self.keep_none, "none_group_wins": self.none_group_wins,
                "clusterer": clusterer.to_spec() if isinstance(clusterer, Component)
                else clusterer if isinstance(clusterer, dict) else type(clusterer).__name__,
                "seed": seed,
            },
            "transitions": transitions,
        }
        write_json(run_dir / CLUSTERS_FILE, data)

    # -- the genotype ----------------------------------------------------------------------------
    def derive(self, result: StageResult, run: Any) -> Genotype:
        """The space's derivation of the final stage (for darts-cell, the DARTS rule: the paper's
        last stage is plain DARTS), with the candidate counts of every stage in the provenance."""
        counts = [t["candidate_counts"]["before"] for t in load_clusters(Path(run.run_dir)).get("transitions", [])
                  if t["from_stage"] < result.stage]
        kept = run.space.derive(result, run.zero_ops())
        return genotype_from_edges(kept, run, selector=NAME, stages=result.stage + 1,
                                   candidates_per_stage=[*counts, _counts(result.candidates)])


def _single_threaded():
    """One OpenMP/BLAS thread while clustering: every fit has a handful of points, and thread
    start-up and synchronisation made scikit-learn's k-means 5-15x slower on 2 cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings threadpoolctl; a custom clusterer may not need it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _counts(candidates: nasreg.Candidates) -> dict[str, int]:
    """Total candidate ops per cell type (summed over edges)."""
    return {ct: sum(len(ops) for ops in edges) for ct, edges in candidates.items()}


def load_clusters(run_dir: Path) -> dict[str, Any]:
    """The ``clusters.json`` of a run directory (``{}`` when there is none), read by nasreg's
    bounded reader and checked where this selector reads it back (``transitions[i].from_stage``,
    ``.candidate_counts.before``): a damaged file is one :class:`nasreg.RunDirError` naming the key."""
    files = RunDir(run_dir)
    if not files.exists(CLUSTERS_FILE):
        return {}
    data = files.read_json(CLUSTERS_FILE, expect=dict)
    transitions = data.get("transitions", [])
    if not isinstance(transitions, list):
        raise RunDirError(f"{files.file(CLUSTERS_FILE)}: key \"transitions\": expected a list")
    for i, t in enumerate(transitions):
        where = f"{files.file(CLUSTERS_FILE)}: key \"transitions[{i}]"
        if not isinstance(t, dict):
            raise RunDirError(f"{where}\": expected an object")
        stage = t.get("from_stage")
        if not isinstance(stage, int) or isinstance(stage, bool) or stage < 0:
            raise RunDirError(f"{where}.from_stage\": expected a stage number")
        counts = t.get("candidate_counts")
        if not isinstance(counts, dict) or not isinstance(counts.get("before"), dict):
            raise RunDirError(f"{where}.candidate_counts.before\": expected an object")
    return data
