"""``gradients_stage{N}.png``: the trajectories DG-DARTS clustered, coloured by cluster (the
paper's Figure 4: gradient against epoch for the first mixed op of the normal cell)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import nasreg

#: How many edges of every cell type the figure shows (the first ones).
EDGES_PER_CELL = 3


def plot_gradients(path: Path, result: Any, history: dict[str, list[list[list[float]]]],
                   decisions: dict[str, list[Any]], feature: str = "gradient") -> bool:
    """Draw the figure; never raises (a failure is one warning line). True when written."""
    return nasreg.draw_guarded(Path(path).name, _draw, Path(path), result, history, decisions, feature,
                               prefix="dg-darts")


def _draw(path: Path, result: Any, history, decisions, feature: str) -> None:
    from matplotlib.ticker import MaxNLocator

    panels = [(ct, e) for ct, ds in decisions.items() for e in range(min(EDGES_PER_CELL, len(ds)))]
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    height = 3.6 * nrows + 0.4
    fig = nasreg.new_figure(5.0 * ncols, height, layout=None)
    fig.subplots_adjust(left=0.3 / ncols, right=0.98, bottom=0.55 / height, top=1 - 0.75 / height,
                        wspace=0.3, hspace=1.0 / nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (ct, e) in zip(axes.flat, panels):
        d = decisions[ct][e]
        ops = result.candidates[ct][e]
        rank = {op: (r, g) for r, g in enumerate(d.groups) for op in g.ops}
        chosen = set(d.chosen)
        for op, traj in zip(ops, history[ct][e]):
            r, g = rank[op]
            x = range(1, len(traj) + 1)
            ax.plot(x, traj, color="0.55" if g.zero else f"C{r % 10}", lw=2.0 if op in chosen else 1.0,
                    ls=":" if g.zero else "-" if op in chosen else "--", marker="o" if len(traj) < 3 else None,
                    label=f"{op} [g{r} {g.weight:.2f}]" + (" *" if op in chosen else ""))
        src, dst = result.edges[ct][e]
        ax.set_title(f"{ct} edge {e} ({src}->{dst}): {d.rule}", fontsize=9)
        ax.set_xlabel("joint epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("architecture gradient" if feature == "gradient" else "softmax weight")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"stage {result.stage}: ops coloured by group (g0 = heaviest; group weight), "
                 "* = kept, dotted = zero op", fontsize=10)
    fig.savefig(path, dpi=110)
