"""``rewards.png``: the reward of every child and the moving average, drawn with matplotlib's Agg
canvas (imported only when drawing), its legend below the axes (never over a point). A figure that
cannot be drawn costs one warning line, never the run. :func:`rewards_figure` builds the figure,
:func:`plot_rewards` writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import nasreg

__all__ = ["AVERAGE_LABEL", "plot_rewards", "rewards_figure"]

#: The legend entry of the rounds' ``moving_average`` (a strategy may say what its average is).
AVERAGE_LABEL = "moving average (after each update)"


def plot_rewards(children: Sequence[dict[str, Any]], updates: Sequence[dict[str, Any]], path: Path,
                 title: str = "", warn: Callable[[str], Any] = print, average_label: str = AVERAGE_LABEL) -> bool:
    """Reward per child (dots), each round's mean, the moving average after each update (its
    legend entry: ``average_label``) and the best reward so far against the child index; returns
    whether the file was written."""
    return nasreg.draw_guarded(Path(path).name, _draw_rewards, children, updates, Path(path), title,
                               average_label, warn_with=warn)


def _draw_rewards(children: Sequence[dict[str, Any]], updates: Sequence[dict[str, Any]], path: Path,
                  title: str, average_label: str) -> None:
    rewards_figure(children, updates, title, average_label).savefig(path, dpi=100)


def rewards_figure(children: Sequence[dict[str, Any]], updates: Sequence[dict[str, Any]], title: str = "",
                   average_label: str = AVERAGE_LABEL) -> Any:
    """The figure of ``rewards.png`` (see :func:`plot_rewards`), one legend below the axes."""
    fig = nasreg.new_figure(8, 4.4)
    ax = fig.subplots()
    xs = [c["index"] + 1 for c in children]
    ax.scatter(xs, [c["reward"] for c in children], s=14, alpha=0.5, color="C0", label="child reward")
    ends = [u["last_child"] + 1 for u in updates]
    centers = [(u["first_child"] + u["last_child"]) / 2 + 1 for u in updates]
    ax.plot(centers, [u["mean_reward"] for u in updates], marker="o", ms=4, lw=1.0, color="C4",
            label="round mean")
    ax.step(ends, [u["moving_average"] for u in updates], where="post", lw=1.8, color="C1",
            label=average_label)
    ax.step(ends, [u["best_so_far"] for u in updates], where="post", lw=1.2, ls="--", color="C2",
            label="best so far")
    ax.set(xlabel="child", ylabel="reward (validation accuracy)", title=title or "rewards")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    nasreg.legend_outside(fig, handles, labels, ncol=4)
    return fig
