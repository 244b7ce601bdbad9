"""Built-in plugin ``plots``: evidence figures written into the run directory when a run ends.

It observes a run through the ``on_run_end`` hook only, reading what the run directory already
holds:

* ``alphas.png``: the softmax weight of every candidate op over the epochs of all stages, for the
  first few edges of every cell type (from ``metrics.jsonl`` and ``stages.json``);
* ``cell_<type>.png``: a diagram of every cell of the genotype (inputs c_{k-2}, c_{k-1}, the
  intermediate nodes, the output c_{k}; edges labelled with their op).

Figures are drawn with matplotlib's Agg canvas (no pyplot, no global backend change; matplotlib
is imported only when drawing). A figure that cannot be drawn never fails the run: it costs one
warning line on stderr. :func:`guarded` and :func:`new_figure` serve other plugins' figures too.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

import nasreg
from nasreg import RunDir, RunDirError, hookimpl

__all__ = ["on_run_end", "plot_alphas", "plot_cell", "new_figure", "guarded", "warn"]

#: How many edges of every cell type ``alphas.png`` shows.
ALPHA_EDGES_PER_CELL = 3


# -- helpers (the core's; kept here under their old names) -----------------------------------------

new_figure = nasreg.new_figure
warn = nasreg.warn


def guarded(what: str, draw: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Call ``draw``; on any exception print ``plots: could not write <what>: ...`` and return False."""
    return nasreg.draw_guarded(what, draw, *args, prefix="plots", **kwargs)


def _color(i: int) -> str:
    return f"C{i % 10}"


# -- the hook ------------------------------------------------------------------------------------

@hookimpl
def on_run_end(run, genotype):
    """Write ``alphas.png`` and one ``cell_<type>.png`` per cell into the run directory."""
    try:
        run_dir = Path(run.run_dir)
    except Exception as exc:  # noqa: BLE001
        warn(f"plots: no run directory to write figures into: {exc}")
        return
    files = RunDir(run_dir)
    if files.metrics.exists() or files.stages.exists():  # a sampling search has no alphas to show
        guarded("alphas.png", plot_alphas, files.metrics, files.stages, files / "alphas.png")
    cells = getattr(genotype, "cells", None) or {}
    for cell_type, cell in cells.items():
        name = f"cell_{re.sub(r'[^A-Za-z0-9_.-]', '_', str(cell_type))}.png"
        guarded(name, plot_cell, cell, run_dir / name, title=f"{cell_type} cell")


# -- alphas.png ----------------------------------------------------------------------------------

def _read_epochs(metrics: Path) -> list[dict[str, Any]]:
    """Epoch records with alphas, in (stage, epoch) order; a repeated epoch (a resumed run) keeps
    its last record, and unreadable lines (a run killed mid-write) are skipped."""
    metrics = Path(metrics)
    if not metrics.is_file():
        raise RunDirError(f"{metrics}: no such file")
    by_epoch: dict[tuple[int, int], dict[str, Any]] = {}
    for rec in RunDir(metrics.parent).read_jsonl(metrics.name, skip_damaged=True):
        if (isinstance(rec.get("alphas"), dict)
                and isinstance(rec.get("stage"), int) and isinstance(rec.get("epoch"), int)):
            by_epoch[(rec["stage"], rec["epoch"])] = rec
    return [by_epoch[k] for k in sorted(by_epoch)]


def _stage_candidates(stages: Path) -> dict[int, dict[str, list[list[str]]]]:
    stages = Path(stages)
    if not stages.is_file():
        return {}
    data = RunDir(stages.parent).read_json(stages.name, expect=list)
    return {s["stage"]: s["candidates"] for s in data
            if isinstance(s, dict) and isinstance(s.get("stage"), int) and isinstance(s.get("candidates"), dict)}


def plot_alphas(metrics: Path, stages: Path, out: Path, edges_per_cell: int = ALPHA_EDGES_PER_CELL) -> Path:
    """Softmax weight per op against epoch (all stages in a row) for the first edges of each cell
    type. Op names come from ``stages.json``; without it ops are numbered."""
    records = _read_epochs(Path(metrics))
    if not records:
        raise ValueError(f"{Path(metrics).name} has no epoch with alphas")
    from matplotlib.ticker import MaxNLocator

    candidates = _stage_candidates(Path(stages))
    panels = [(ct, e) for ct, edges in records[0]["alphas"].items() for e in range(min(edges_per_cell, len(edges)))]
    if not panels:
        raise ValueError("the epoch records have no edges")

    # series[(ct, e)][op][stage] = ([x], [w]); x counts epochs over all stages from 1.
    series: dict[tuple[str, int], dict[str, dict[int, tuple[list[int], list[float]]]]] = {p: {} for p in panels}
    op_order: dict[str, int] = {}
    boundaries = []
    for x, rec in enumerate(records, start=1):
        stage = rec["stage"]
        if x > 1 and stage != records[x - 2]["stage"]:
            boundaries.append(x - 0.5)
        for ct, e in panels:
            try:
                weights = rec["alphas"][ct][e]
            except (KeyError, IndexError, TypeError):
                continue
            names = candidates.get(stage, {}).get(ct, [])
            if not (e < len(names) and len(names[e]) == len(weights)):
                names = [[f"op {j}" for j in range(len(weights))]] * (e + 1)
            for name, w in zip(names[e], weights):
                op_order.setdefault(name, len(op_order))
                xs, ws = series[(ct, e)].setdefault(name, {}).setdefault(stage, ([], []))
                xs.append(x)
                ws.append(w)

    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(4.2 * ncols + 1.8, 3.0 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (ct, e) in zip(axes.flat, panels):
        for name, by_stage in series[(ct, e)].items():
            for xs, ws in by_stage.values():
                ax.plot(xs, ws, color=_color(op_order[name]), marker="." if len(xs) < 3 else None, lw=1.4)
        for b in boundaries:
            ax.axvline(b, color="0.5", ls="--", lw=0.8)
        ax.set_title(f"{ct} edge {e}", fontsize=10)
        ax.set_xlabel("epoch (all stages)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("softmax weight")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_color(i), lw=2) for i in op_order.values()]
    fig.legend(handles, list(op_order), loc="outside right center", fontsize=8)
    fig.suptitle("architecture weights" + (" (dashed: stage boundary)" if boundaries else ""))
    fig.savefig(out, dpi=110)
    return Path(out)


# -- cell_<type>.png -----------------------------------------------------------------------------

def plot_cell(cell: Any, out: Path, title: str = "") -> Path:
    """A diagram of one cell genotype as an arc diagram: the nodes in order on a line (inputs
    c_{k-2}, c_{k-1}, the intermediate nodes, the output c_{k}); every edge is an arc above the
    line labelled with its op at its top (longer edges arc higher, so labels do not collide); every
    concatenated node has a dashed arc below the line to the output."""
    from matplotlib.patches import FancyArrowPatch

    edges = list(cell.edges)
    if not edges:
        raise ValueError("the cell has no edges")
    first = min(e.node for e in edges)
    inputs = list(range(first))
    inner = sorted({e.node for e in edges} | {c for c in cell.concat if c >= first})
    input_labels = ({2: [r"$c_{k-2}$", r"$c_{k-1}$"], 1: [r"$c_{k-1}$"]}.get(len(inputs))
                    or [f"in {i}" for i in inputs])
    order = [*inputs, *inner, "out"]
    x = {node: float(i) for i, node in enumerate(order)}
    labels = {**dict(zip(inputs, input_labels)), **{n: str(n - first) for n in inner}, "out": r"$c_{k}$"}
    up, down = -0.55, 0.35  # arc3 rad: an arc over a span s rises 0.275 s (dips 0.175 s)
    top = max(-up / 2 * (x[e.node] - x[e.input]) for e in edges)
    bottom = max([down / 2 * (x["out"] - x[c]) for c in cell.concat if c in x] or [0.0])

    width = len(order) + 0.4
    height = top + bottom + 0.8
    fig = new_figure(1.3 * width, 1.3 * height + 0.4)
    ax = fig.subplots()
    colors = {op: _color(i) for i, op in enumerate(dict.fromkeys(e.op for e in edges))}

    def arc(a, b, rad, **kw):
        ax.add_patch(FancyArrowPatch((x[a], 0.0), (x[b], 0.0), connectionstyle=f"arc3,rad={rad}",
                                     arrowstyle="-|>", mutation_scale=11, shrinkA=12, shrinkB=12, **kw))

    for e in edges:
        arc(e.input, e.node, up, color=colors[e.op], lw=1.5)
        # The top of arc3's quadratic Bezier curve: halfway up to its control point.
        ax.text((x[e.input] + x[e.node]) / 2, -up / 2 * (x[e.node] - x[e.input]), e.op, fontsize=7,
                ha="center", va="center", color=colors[e.op],
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.9))
    for c in cell.concat:
        if c in x:
            arc(c, "out", down, color="0.6", lw=1.0, ls="--")
    for node in order:
        face = "#b7e4b0" if node in inputs else "#fff2a8" if node == "out" else "#c9dcf5"
        ax.text(x[node], 0.0, labels[node], ha="center", va="center", fontsize=11, zorder=3,
                bbox=dict(boxstyle="round,pad=0.35", fc=face, ec="0.3"))
    ax.set_xlim(-0.7, len(order) - 0.3)
    ax.set_ylim(-bottom - 0.4, top + 0.4)
    ax.set_aspect("equal")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    fig.savefig(out, dpi=110)
    return Path(out)
