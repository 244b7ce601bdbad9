"""``rewards.png``: the reward of every child and the moving average, drawn with matplotlib's Agg
canvas (imported only when drawing). A figure that cannot be drawn costs one warning line, never
the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import nasreg

__all__ = ["plot_rewards"]


def plot_rewards(children: Sequence[dict[str, Any]], updates: Sequence[dict[str, Any]], path: Path,
                 title: str = "", warn: Callable[[str], Any] = print) -> bool:
    """Reward per child (dots), each round's mean, the moving average after each update and the
    best reward so far against the child index; returns whether the file was written."""
    return nasreg.draw_guarded(Path(path).name, _draw_rewards, children, updates, Path(path), title,
                               warn_with=warn)


def _draw_rewards(children: Sequence[dict[str, Any]], updates: Sequence[dict[str, Any]], path: Path,
                  title: str) -> None:
    fig = nasreg.new_figure(8, 4, layout=None)
    ax = fig.subplots()
    xs = [c["index"] + 1 for c in children]
    ax.scatter(xs, [c["reward"] for c in children], s=14, alpha=0.6, label="child reward")
    ends = [u["last_child"] + 1 for u in updates]
    centers = [(u["first_child"] + u["last_child"]) / 2 + 1 for u in updates]
    ax.plot(centers, [u["mean_reward"] for u in updates], marker="o", ms=4, lw=1.0, label="round mean")
    ax.step(ends, [u["moving_average"] for u in updates], where="post", lw=1.8,
            label="moving average (after each update)")
    ax.step(ends, [u["best_so_far"] for u in updates], where="post", lw=1.2, ls="--",
            label="best so far")
    ax.set(xlabel="child", ylabel="reward (validation accuracy)", title=title or "rewards")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
