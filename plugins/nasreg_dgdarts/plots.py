"""``gradients_stage{N}.png``: the trajectories DG-DARTS clustered (the paper's Figure 4: gradient
against epoch per mixed op), one panel per edge of every cell type.

Each panel is titled with the edge as the genotype names it (``normal: node 2 <- input 0``), the
rule that decided it and its groups' weights; the y-axis is shared. An op has its colour of every
figure (``nasreg.op_color``); its group is the marker (o = g0, the heaviest group, s = g1, ...);
a kept op is a thick solid line, a dropped one dashed, a zero op's dotted. One legend, below the
panels. More than 40 edges make more pages (at most 40 panels each)
(``gradients_stage{N}_page2.png``, ...), each saying which edges it shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nasreg

#: Only the first edges of every cell type (None: every edge); the figure's title says so.
EDGES_PER_CELL: int | None = None
#: The marker of each group rank (g0 = the heaviest group).
GROUP_MARKERS = "osD^vPX*"


def plot_gradients(path: Path, result: Any, history: dict[str, list[list[list[float]]]],
                   decisions: dict[str, list[Any]], feature: str = "gradient") -> bool:
    """Draw the figure(s); never raises (a failure is one warning line). True when written."""
    return nasreg.draw_guarded(Path(path).name, _draw, Path(path), result, history, decisions, feature,
                               prefix="dg-darts")


def _draw(path: Path, result: Any, history, decisions, feature: str) -> list[Path]:
    figures = gradient_figures(result, history, decisions, feature)
    paths = nasreg.page_paths(path, len(figures))
    for fig, page in zip(figures, paths):
        fig.savefig(page, dpi=100)
    return paths


def _style(op: str, group_rank: int, group: Any, chosen: set[str]) -> dict[str, Any]:
    """How one op's trajectory is drawn: its colour, its group's marker, kept/dropped/zero."""
    kept = op in chosen
    return dict(color=nasreg.op_color(op), marker=GROUP_MARKERS[group_rank % len(GROUP_MARKERS)], ms=4,
                lw=2.0 if kept else 1.0, ls=":" if group.zero else "-" if kept else "--")


def gradient_figures(result: Any, history: dict[str, list[list[list[float]]]], decisions: dict[str, list[Any]],
                     feature: str = "gradient") -> list[Any]:
    """The figures (pages) of ``gradients_stage{N}.png``: per edge of ``decisions``, every
    candidate op's trajectory in ``history`` against the joint epoch."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    counts = {ct: len(ds) for ct, ds in decisions.items() if ds}
    limit = None if EDGES_PER_CELL is None else max(1, EDGES_PER_CELL)
    layout = {ct: [tuple(result.edges[ct][e]) for e in range(n)][:limit] for ct, n in counts.items()}
    ylabel = "architecture gradient" if feature == "gradient" else "softmax weight"
    what = (f"stage {result.stage}: {ylabel} per op and edge; colour = op, marker = group (g0 heaviest), "
            "thick = kept, dashed = dropped, dotted = zero op")
    if limit is not None:
        what += f" (only the first {limit} edges of each cell type: EDGES_PER_CELL)"
    figures = []
    for grid in nasreg.edge_grids(layout, totals=counts, panel=(2.7, 2.3), extra_height=2.0):
        ops: list[str] = []
        ranks = 0
        for (ct, e), ax in grid.axes.items():
            d = decisions[ct][e]
            rank = {op: (r, g) for r, g in enumerate(d.groups) for op in g.ops}
            chosen = set(d.chosen)
            for op, traj in zip(result.candidates[ct][e], history[ct][e]):
                r, g = rank[op]
                ax.plot(range(1, len(traj) + 1), traj, gid=op, **_style(op, r, g, chosen))
                ops.append(op)
            ranks = max(ranks, len(d.groups))
            groups = " ".join(f"g{r} {g.weight:.2f}" for r, g in enumerate(d.groups))
            ax.set_title(f"{ax.get_title()}\n{d.rule}: {groups}", fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        for ax in grid.figure.axes:
            if ax.get_visible():
                ax.set_xlabel("joint epoch", fontsize=7)
                if ax.get_subplotspec().is_first_col():
                    ax.set_ylabel(ylabel, fontsize=8)
        ops = list(dict.fromkeys(ops))
        handles = [Line2D([], [], color=nasreg.op_color(op), lw=2) for op in ops]
        labels = list(ops)
        handles += [Line2D([], [], color="0.2", lw=2.0), Line2D([], [], color="0.2", lw=1.0, ls="--"),
                    Line2D([], [], color="0.2", lw=1.0, ls=":")]
        labels += ["kept", "dropped", "zero op"]
        handles += [Line2D([], [], color="0.2", ls="none", marker=GROUP_MARKERS[r % len(GROUP_MARKERS)])
                    for r in range(ranks)]
        labels += [f"group g{r}" + (" (heaviest)" if r == 0 else "") for r in range(ranks)]
        nasreg.legend_outside(grid.figure, handles, labels, ncol=min(len(labels), 8))
        grid.figure.suptitle(grid.title(what), fontsize=9)
        figures.append(grid.figure)
    return figures
