"""Built-in plugin ``plots``: evidence figures written into the run directory when a run ends.

It observes a run through the ``on_run_end`` hook only, reading what the run directory already
holds:

* ``alphas.png``: the softmax weight of every candidate op over the epochs of all stages, one
  panel per edge of every cell type (small multiples titled as the genotype names the edge,
  ``normal: node 2 <- input 0``; a shared y-axis; from ``metrics.jsonl``, ``stages.json`` and the
  space's edges). A space with more than 40 edges gets more pages (at most 40 panels each),
  ``alphas_page2.png``, ..., each saying which edges it shows;
* ``monitor.png`` (``[search] monitor = true``): the dominant Hessian eigenvalue of the validation
  loss w.r.t. the architecture per epoch, and per cell type the skip connections of the cell
  derived at each epoch (``hessian_max_eig``, ``skip_connects`` in ``metrics.jsonl``), with the
  stage boundaries and an early stop (``stopped_early`` in ``stages.json``) marked;
* ``cell_<type>.png``: a diagram of every cell of the genotype, its nodes numbered as the
  genotype text numbers them (inputs 0 = c_{k-2}, 1 = c_{k-1}, intermediate nodes 2, 3, ..., the
  output c_{k}; edges labelled with their op).

Every op has one colour in all of them (``nasreg.op_color``), and every legend lies outside the
axes. The functions building a figure (:func:`alpha_figures`, :func:`cell_figure`) are separate
from those writing it (:func:`plot_alphas`, :func:`plot_cell`).

Figures are drawn with matplotlib's Agg canvas (no pyplot, no global backend change; matplotlib
is imported only when drawing). A figure that cannot be drawn never fails the run: it costs one
warning line on stderr. :func:`guarded` and :func:`new_figure` serve other plugins' figures too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import nasreg
from nasreg import RunDir, RunDirError, hookimpl

__all__ = ["on_run_end", "alpha_figures", "plot_alphas", "monitor_figure", "plot_monitor", "cell_figure", "plot_cell", "new_figure",
           "guarded", "warn"]


# -- helpers (the core's; kept here under their old names) -----------------------------------------

new_figure = nasreg.new_figure
warn = nasreg.warn


def guarded(what: str, draw: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Call ``draw``; on any exception print ``plots: could not write <what>: ...`` and return False."""
    return nasreg.draw_guarded(what, draw, *args, prefix="plots", **kwargs)


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
        guarded("alphas.png", plot_alphas, files.metrics, files.stages, files / "alphas.png",
                edges=_space_edges(run))
    if files.metrics.exists() and any("hessian_max_eig" in r for r in _read_epochs(files.metrics)):
        guarded("monitor.png", plot_monitor, files.metrics, files.stages, files / "monitor.png")
    cells = getattr(genotype, "cells", None) or {}
    for cell_type, cell in cells.items():
        name = f"cell_{re.sub(r'[^A-Za-z0-9_.-]', '_', str(cell_type))}.png"
        guarded(name, plot_cell, cell, run_dir / name, title=f"{cell_type} cell")


def _space_edges(run: Any) -> dict[str, list[tuple[int, int]]] | None:
    """The run's edges per cell type as ``(input, node)``, in alpha order; None if unknown."""
    try:
        return {ct: [(int(a), int(b)) for a, b in es] for ct, es in run.space.edges().items()}
    except Exception:  # noqa: BLE001 - no space (a bare context): edges are numbered instead
        return None


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


#: series[(cell type, edge)][op name][stage] = (epochs, weights); epochs count over all stages from 1.
Series = dict[tuple[str, int], dict[str, dict[int, tuple[list[int], list[float]]]]]


def _alpha_series(records: list[dict[str, Any]], candidates: dict[int, dict[str, list[list[str]]]],
                  ) -> tuple[Series, list[float], bool]:
    """Every edge's weight per op and stage, the x of each stage boundary, and whether the op
    names were known (without ``stages.json`` ops are named ``op <j>``)."""
    series: Series = {}
    boundaries: list[float] = []
    named = True
    for x, rec in enumerate(records, start=1):
        stage = rec["stage"]
        if x > 1 and stage != records[x - 2]["stage"]:
            boundaries.append(x - 0.5)
        for ct, rows in rec["alphas"].items():
            if not isinstance(rows, list):
                continue
            names = candidates.get(stage, {}).get(ct, [])
            for e, weights in enumerate(rows):
                if not isinstance(weights, list):
                    continue
                ops = names[e] if e < len(names) and len(names[e]) == len(weights) else None
                named = named and ops is not None
                for j, w in enumerate(weights):
                    name = ops[j] if ops is not None else f"op {j}"
                    xs, ws = series.setdefault((ct, e), {}).setdefault(name, {}).setdefault(stage, ([], []))
                    xs.append(x)
                    ws.append(w)
    return series, boundaries, named


def alpha_figures(metrics: Path, stages: Path, edges: dict[str, list[tuple[int, int]]] | None = None,
                  edges_per_cell: int | None = None) -> list[Any]:
    """The figures of ``alphas.png`` (one per page): per edge of every cell type, the softmax
    weight of each op against the epoch (all stages in a row, a dashed line at each stage
    boundary), one panel per edge titled as the genotype names it, the y-axis shared, one legend
    of the ops below. ``edges``: the space's edges per cell type as ``(input, node)`` (without
    them panels are titled with the edge's index and the title says so); ``edges_per_cell``:
    only the first edges of each cell type (the title says so). Op names come from
    ``stages.json``; without it ops are numbered."""
    records = _read_epochs(Path(metrics))
    if not records:
        raise ValueError(f"{Path(metrics).name} has no epoch with alphas")
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    series, boundaries, named = _alpha_series(records, _stage_candidates(Path(stages)))
    counts = {ct: len(rows) for ct, rows in records[0]["alphas"].items() if isinstance(rows, list) and rows}
    if not counts:
        raise ValueError("the epoch records have no edges")
    known = edges is not None and all(len(edges.get(ct, [])) == n for ct, n in counts.items())
    layout = {ct: list(edges[ct]) if known else [None] * n for ct, n in counts.items()}
    if edges_per_cell is not None:
        layout = {ct: es[:max(1, edges_per_cell)] for ct, es in layout.items()}
    ops = list(dict.fromkeys(op for panel in series.values() for op in panel))

    def color(op: str) -> str:
        return nasreg.op_color(op) if named else f"C{ops.index(op) % 10}"

    what = "architecture weights: softmax weight per op and edge"
    if edges_per_cell is not None:
        what += f" (only the first {max(1, edges_per_cell)} edges of each cell type: edges_per_cell)"
    if not known:
        what += " (edges in alpha order: the space's nodes are unknown)"
    figures = []
    for grid in nasreg.edge_grids(layout, totals=counts):
        for (ct, e), ax in grid.axes.items():
            for op, by_stage in series.get((ct, e), {}).items():
                for xs, ws in by_stage.values():
                    ax.plot(xs, ws, color=color(op), marker="." if len(xs) < 3 else None, lw=1.3, gid=op)
            for b in boundaries:
                ax.axvline(b, color="0.5", ls="--", lw=0.8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        for ax in grid.figure.axes:
            if ax.get_visible() and ax.get_subplotspec().is_first_col():
                ax.set_ylabel("softmax weight", fontsize=8)
            if ax.get_visible():
                ax.set_xlabel("epoch (all stages)", fontsize=7)
        handles = [Line2D([], [], color=color(op), lw=2) for op in ops]
        labels = list(ops)
        if boundaries:
            handles.append(Line2D([], [], color="0.5", ls="--", lw=0.8))
            labels.append("stage boundary")
        nasreg.legend_outside(grid.figure, handles, labels)
        grid.figure.suptitle(grid.title(what), fontsize=10)
        figures.append(grid.figure)
    return figures


def plot_alphas(metrics: Path, stages: Path, out: Path, edges: dict[str, list[tuple[int, int]]] | None = None,
                edges_per_cell: int | None = None) -> list[Path]:
    """Write :func:`alpha_figures` to ``out`` (more pages: ``<stem>_page2.png``, ...); returns the files."""
    figures = alpha_figures(metrics, stages, edges, edges_per_cell=edges_per_cell)
    paths = nasreg.page_paths(out, len(figures))
    for fig, path in zip(figures, paths):
        fig.savefig(path, dpi=100)
    return paths


# -- monitor.png ---------------------------------------------------------------------------------

def _stops(stages: Path) -> dict[int, dict[str, Any]]:
    """``stopped_early`` of every stage that ended early, by stage."""
    stages = Path(stages)
    if not stages.is_file():
        return {}
    data = RunDir(stages.parent).read_json(stages.name, expect=list)
    return {s["stage"]: s["stopped_early"] for s in data
            if isinstance(s, dict) and isinstance(s.get("stage"), int) and isinstance(s.get("stopped_early"), dict)}


def monitor_figure(metrics: Path, stages: Path) -> Any:
    """The collapse monitor's figure: the dominant eigenvalue per epoch (all stages in a row, a
    dashed line at each stage boundary, a dotted one at an early stop and a marker at the epoch
    whose alphas it kept), and below it the identity-op edges of each cell type's derived cell."""
    records = [r for r in _read_epochs(Path(metrics)) if isinstance(r.get("hessian_max_eig"), (int, float))]
    if not records:
        raise ValueError(f"{Path(metrics).name} has no epoch with hessian_max_eig")
    from matplotlib.ticker import MaxNLocator

    xs = list(range(1, len(records) + 1))
    where = {(r["stage"], r["epoch"]): x for x, r in zip(xs, records)}
    boundaries = [x - 0.5 for x, r, prev in zip(xs[1:], records[1:], records) if r["stage"] != prev["stage"]]
    cell_types = list(dict.fromkeys(ct for r in records for ct in (r.get("skip_connects") or {})))
    fig = new_figure(7, 5.5 if cell_types else 3.2)
    axes = fig.subplots(2 if cell_types else 1, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    ax.plot(xs, [r["hessian_max_eig"] for r in records], color="C3", marker=".", lw=1.5,
            label="dominant eigenvalue")
    ax.set_ylabel("max eigenvalue of\nHessian (val loss, alpha)", fontsize=8)
    if cell_types:
        for i, ct in enumerate(cell_types):
            axes[1].plot(xs, [(r.get("skip_connects") or {}).get(ct) for r in records], color=f"C{i}",
                         marker=".", lw=1.5, drawstyle="steps-mid", label=f"{ct} cell")
        axes[1].set_ylabel("identity-op edges\nof the derived cell", fontsize=8)
        axes[1].yaxis.set_major_locator(MaxNLocator(integer=True))
    for a in axes:
        for b in boundaries:
            a.axvline(b, color="0.5", ls="--", lw=0.8)
        a.grid(alpha=0.3)
    for stage, stop in _stops(Path(stages)).items():
        x_stop, x_kept = where.get((stage, stop.get("epoch"))), where.get((stage, stop.get("alphas_epoch")))
        for a in axes:
            if x_stop is not None:
                a.axvline(x_stop, color="k", ls=":", lw=1.2)
        if x_kept is not None:
            ax.plot([x_kept], [records[x_kept - 1]["hessian_max_eig"]], "o", mfc="none", mec="k", ms=9)
    axes[-1].set_xlabel("epoch (all stages)", fontsize=8)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="C3", lw=2)] + [Line2D([], [], color=f"C{i}", lw=2) for i in range(len(cell_types))]
    labels = ["dominant eigenvalue"] + [f"{ct} cell: identity-op edges" for ct in cell_types]
    if boundaries:
        handles.append(Line2D([], [], color="0.5", ls="--", lw=0.8))
        labels.append("stage boundary")
    if _stops(Path(stages)):
        handles += [Line2D([], [], color="k", ls=":", lw=1.2), Line2D([], [], ls="", marker="o", mfc="none", mec="k")]
        labels += ["early stop", "alphas kept"]
    nasreg.legend_outside(fig, handles, labels, ncol=3)
    fig.suptitle("collapse monitor: curvature of the validation loss in the architecture", fontsize=10)
    return fig


def plot_monitor(metrics: Path, stages: Path, out: Path) -> Path:
    """Write :func:`monitor_figure` to ``out``."""
    monitor_figure(metrics, stages).savefig(out, dpi=100)
    return Path(out)


# -- cell_<type>.png -----------------------------------------------------------------------------

def _node_labels(inputs: list[int], inner: list[int]) -> dict[Any, str]:
    """Box labels, numbered as the genotype text numbers nodes: ``0 = c_{k-2}``, ``1 = c_{k-1}``,
    then the intermediate nodes' own numbers, and the output ``c_{k}``."""
    names = {2: [r"$c_{k-2}$", r"$c_{k-1}$"], 1: [r"$c_{k-1}$"]}.get(len(inputs))
    labels: dict[Any, str] = {n: f"{n} = {names[i]}" if names else f"in {n}" for i, n in enumerate(inputs)}
    labels.update({n: str(n) for n in inner})
    labels["out"] = r"$c_{k}$"
    return labels


def cell_figure(cell: Any, title: str = "") -> Any:
    """A diagram of one cell genotype as an arc diagram: the nodes in order on a line, numbered as
    the genotype text numbers them (inputs ``0 = c_{k-2}``, ``1 = c_{k-1}``, the intermediate
    nodes ``2``, ``3``, ..., the output c_{k}); every edge is an arc above the line in its op's
    colour (``nasreg.op_color``), labelled with the op at its top (longer edges arc higher, so
    labels do not collide); every concatenated node has a dashed arc below the line to the output."""
    from matplotlib.patches import FancyArrowPatch

    edges = list(cell.edges)
    if not edges:
        raise ValueError("the cell has no edges")
    first = min(e.node for e in edges)
    inputs = list(range(first))
    inner = sorted({e.node for e in edges} | {c for c in cell.concat if c >= first})
    order = [*inputs, *inner, "out"]
    x = {node: float(i) for i, node in enumerate(order)}
    labels = _node_labels(inputs, inner)
    up, down = -0.55, 0.35  # arc3 rad: an arc over a span s rises 0.275 s (dips 0.175 s)
    top = max(-up / 2 * (x[e.node] - x[e.input]) for e in edges)
    bottom = max([down / 2 * (x["out"] - x[c]) for c in cell.concat if c in x] or [0.0])

    width = len(order) + 0.4
    height = top + bottom + 0.8
    fig = new_figure(1.3 * width, 1.3 * height + 0.6)
    ax = fig.subplots()

    def arc(a, b, rad, **kw):
        ax.add_patch(FancyArrowPatch((x[a], 0.0), (x[b], 0.0), connectionstyle=f"arc3,rad={rad}",
                                     arrowstyle="-|>", mutation_scale=11, shrinkA=14, shrinkB=14, **kw))

    for e in edges:
        color = nasreg.op_color(e.op)
        arc(e.input, e.node, up, color=color, lw=1.5, gid=f"edge {e.node}<-{e.input}")
        # The top of arc3's quadratic Bezier curve: halfway up to its control point.
        ax.text((x[e.input] + x[e.node]) / 2, -up / 2 * (x[e.node] - x[e.input]), e.op, fontsize=7,
                ha="center", va="center", color=color, gid=f"op {e.node}<-{e.input}",
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.9))
    for c in cell.concat:
        if c in x:
            arc(c, "out", down, color="0.6", lw=1.0, ls="--")
    for node in order:
        face = "#b7e4b0" if node in inputs else "#fff2a8" if node == "out" else "#c9dcf5"
        ax.text(x[node], 0.0, labels[node], ha="center", va="center", fontsize=10, zorder=3,
                gid=f"node {node}", bbox=dict(boxstyle="round,pad=0.35", fc=face, ec="0.3"))
    ax.set_xlim(-0.7, len(order) - 0.3)
    ax.set_ylim(-bottom - 0.4, top + 0.4)
    ax.set_aspect("equal")
    ax.set_axis_off()
    numbering = "nodes numbered as in the genotype text (n2<-0: node 2 from input 0)"
    ax.set_title(f"{title}\n{numbering}" if title else numbering, fontsize=9)
    return fig


def plot_cell(cell: Any, out: Path, title: str = "") -> Path:
    """Write :func:`cell_figure` to ``out``."""
    cell_figure(cell, title=title).savefig(out, dpi=110)
    return Path(out)
