"""Figures for plugins and the core: a matplotlib figure without pyplot, and drawing that never
fails a run (a figure that cannot be drawn costs one warning line on stderr).

matplotlib is imported only when a figure is made::

    def draw(path):
        fig = nasreg.new_figure(6, 4)
        fig.subplots().plot([1, 2, 3])
        fig.savefig(path)

    nasreg.draw_guarded("mine.png", draw, run_dir / "mine.png", prefix="my-plugin")

What makes the run's figures agree with each other, for plugins too:

* :func:`op_color`: one colour per op name, the same in every figure (alphas, gradient
  trajectories, cell diagrams, a study's op heatmap);
* :func:`edge_label`: an edge named as the genotype text numbers its nodes
  (``normal: node 2 <- input 0`` is ``n2<-0`` in ``Genotype.describe()``);
* :func:`edge_grids`: small multiples, one panel per edge, grouped by cell type, with a shared
  y-axis and at most :data:`EDGES_PER_PAGE` panels a figure (more edges: more pages, each saying
  which edges it shows), and :func:`page_paths` to name the pages' files;
* :func:`legend_outside`: one legend per figure, outside every axes (below them).
"""

from __future__ import annotations

import functools
import math
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = ["draw_guarded", "new_figure", "warn", "op_color", "edge_label", "edge_grids", "EdgeGrid",
           "legend_outside", "page_paths", "EDGES_PER_PAGE", "OP_PALETTE", "ZERO_OP_COLOR"]

#: The colours ops get, in order: the i-th registered op that is not a zero op takes colour i
#: (modulo the palette's length). matplotlib's tab10 without its grey, then darker companions.
OP_PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
)
#: The colour of an op registered as ``is_zero`` (it is never kept: grey, out of the way).
ZERO_OP_COLOR = "#9e9e9e"
#: The most edges (panels) one small-multiples figure shows; more make more pages.
EDGES_PER_PAGE = 40


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Any:
    """A matplotlib Figure on an Agg canvas (needs no display and leaves pyplot alone).
    ``layout=None`` saves the layout engine's extra drawing pass (about 1 s a figure on 2 cores)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def warn(message: str) -> None:
    """One warning line on stderr (``warning: <message>``, shown verbatim)."""
    try:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[yellow]warning:[/] {escape(message)}")
    except Exception:  # noqa: BLE001 - a warning must not fail either
        print(f"warning: {message}", file=sys.stderr)


def draw_guarded(what: str, draw: Callable[..., Any], *args: Any, prefix: str = "",
                 warn_with: Callable[[str], Any] | None = None, **kwargs: Any) -> bool:
    """Call ``draw(*args, **kwargs)``; on any exception warn ``[prefix: ]could not write <what>:
    <error>`` (one line) and return False; True when it drew. The warning goes to stderr, or to
    ``warn_with`` (say a reporter's ``message``) as the whole line ``warning: ...``."""
    try:
        draw(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a figure never fails a run
        text = str(exc).strip().splitlines()
        lead = f"{prefix}: " if prefix else ""
        line = f"{lead}could not write {what}: {type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
        warn(line) if warn_with is None else warn_with(f"warning: {line}")
        return False
    return True


# -- one colour per op -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _registered_ops() -> tuple[dict[str, int], frozenset[str]]:
    """The installed plugins' ops: bare name -> position among the non-zero ops (registration
    order), and the bare names of the zero ops. Loaded once a process; empty if loading fails."""
    try:
        from .plugins import load_plugins

        operations = load_plugins(strict=False).registries.operations
        zero = frozenset(e.name for e in operations if e.get("is_zero", False))
        order: dict[str, int] = {}
        for name in operations.names():
            if name not in zero:
                order.setdefault(name, len(order))
        return order, zero
    except Exception:  # noqa: BLE001 - colours must never fail a figure
        return {}, frozenset()


def op_color(name: str) -> str:
    """The colour (``#rrggbb``) of the op ``name`` in every figure of every run.

    A qualified name (``plugin:op``) has its bare name's colour. A registered op takes
    :data:`OP_PALETTE`'s colour at its position in the registration order of the installed
    plugins' ops (zero ops left out), so the ops of one plugin get distinct colours; a zero op is
    :data:`ZERO_OP_COLOR`; a name no installed plugin registers gets a palette colour from a
    hash (CRC-32) of its name. The same installation gives the same colours in every run."""
    bare = str(name).rpartition(":")[2]
    order, zero = _registered_ops()
    if bare in zero:
        return ZERO_OP_COLOR
    if bare in order:
        return OP_PALETTE[order[bare] % len(OP_PALETTE)]
    return OP_PALETTE[zlib.crc32(bare.encode("utf-8")) % len(OP_PALETTE)]


# -- edges named as the genotype names them --------------------------------------------------------

def edge_label(cell_type: str, input: int, node: int, inputs: int = 2) -> str:
    """An edge as the genotype text numbers its nodes: ``normal: node 2 <- input 0`` for the edge
    ``n2<-0`` of ``Genotype.describe()`` (``inputs``: how many cell inputs there are, nodes
    ``0 .. inputs-1``; a later node is ``node N``: ``normal: node 4 <- node 3``)."""
    source = f"input {input}" if input < inputs else f"node {input}"
    return f"{cell_type}: node {node} <- {source}"


def _input_count(edges: Sequence[Any]) -> int:
    """How many cell inputs a cell type's ``(input, node)`` edges imply: the nodes before the
    first node that has an incoming edge."""
    nodes = [e[1] for e in edges if e is not None]
    return min(nodes) if nodes else 0


# -- small multiples: one panel per edge -----------------------------------------------------------

@dataclass
class EdgeGrid:
    """One page of small multiples: ``figure``; ``axes`` maps ``(cell type, edge index)`` to that
    edge's panel (titled with :func:`edge_label`); ``page`` of ``pages`` (from 1); ``shown`` says
    which edges the page holds (``normal: edges 1-14 of 14; reduce: edges 1-14 of 14``)."""

    figure: Any
    axes: dict[tuple[str, int], Any]
    page: int
    pages: int
    shown: str
    per_page: int = EDGES_PER_PAGE

    def title(self, what: str) -> str:
        """``what``, then which edges this page shows (and ``page i of n`` when there are more)."""
        paged = f"page {self.page} of {self.pages}, " if self.pages > 1 else ""
        return f"{what}\n{paged}{self.shown}" + (f" (at most {self.per_page} edges a page)" if self.pages > 1 else "")


def _paginate(edges: Mapping[str, Sequence[Any]], per_page: int) -> list[list[tuple[str, list[int]]]]:
    """Pages of ``(cell type, edge indices)`` chunks: a cell type's edges in order, at most
    ``per_page`` panels a page, a page holding several cell types while they fit."""
    chunks = [(ct, list(range(start, min(start + per_page, len(es)))))
              for ct, es in edges.items() for start in range(0, len(es), per_page)]
    pages: list[list[tuple[str, list[int]]]] = []
    count = 0
    for chunk in chunks:
        if not pages or count + len(chunk[1]) > per_page:
            pages.append([])
            count = 0
        pages[-1].append(chunk)
        count += len(chunk[1])
    return pages


def edge_grids(edges: Mapping[str, Sequence[Any]], *, per_page: int | None = None, max_cols: int = 7,
               panel: tuple[float, float] = (2.6, 2.0), extra_height: float = 1.5,
               sharey: bool = True, totals: Mapping[str, int] | None = None) -> list[EdgeGrid]:
    """Empty small multiples for ``edges`` (per cell type, its edges as ``(input, node)`` in alpha
    order; ``None`` for an edge whose nodes are unknown: titled ``<type>: edge <i>``): one panel
    per edge, every cell type starting a new row, at most ``per_page`` panels a figure (default
    :data:`EDGES_PER_PAGE`, read when called), the
    y-axis shared by all panels of a figure (``sharey``). ``extra_height`` inches are left for
    the title and a :func:`legend_outside`. ``totals``: how many edges each cell type has when
    ``edges`` holds only its first ones (said in :attr:`EdgeGrid.shown`). Draw into
    ``grid.axes[(cell_type, e)]``."""
    edges = {ct: list(es) for ct, es in edges.items() if len(es)}
    if not edges:
        raise ValueError("no edges to draw")
    per_page = max(1, EDGES_PER_PAGE if per_page is None else per_page)
    pages = _paginate(edges, per_page)
    ncols = min(max_cols, max(len(ix) for page in pages for _, ix in page))
    grids = []
    for number, page in enumerate(pages, start=1):
        rows = sum(math.ceil(len(ix) / ncols) for _, ix in page)
        fig = new_figure(panel[0] * ncols + 0.8, panel[1] * rows + extra_height)
        grid = fig.subplots(rows, ncols, sharey=sharey, squeeze=False)
        axes: dict[tuple[str, int], Any] = {}
        row = 0
        for ct, ix in page:
            inputs = _input_count(edges[ct])
            for k, e in enumerate(ix):
                ax = grid[row + k // ncols][k % ncols]
                edge = edges[ct][e]
                ax.set_title(edge_label(ct, edge[0], edge[1], inputs) if edge is not None else f"{ct}: edge {e}",
                             fontsize=8)
                ax.tick_params(labelsize=7)
                axes[(ct, e)] = ax
            used = math.ceil(len(ix) / ncols)
            for k in range(len(ix), used * ncols):
                grid[row + k // ncols][k % ncols].set_visible(False)
            row += used
        total = {ct: max(len(es), (totals or {}).get(ct, 0)) for ct, es in edges.items()}
        shown = "; ".join(f"{ct}: edges {ix[0] + 1}-{ix[-1] + 1} of {total[ct]}" if len(ix) > 1
                          else f"{ct}: edge {ix[0] + 1} of {total[ct]}" for ct, ix in page)
        grids.append(EdgeGrid(fig, axes, number, len(pages), shown, per_page))
    return grids


def page_paths(path: str | Path, pages: int) -> list[Path]:
    """The files of ``pages`` pages of one figure: ``path`` itself, then ``<stem>_page2<suffix>``, ..."""
    path = Path(path)
    return [path] + [path.with_name(f"{path.stem}_page{i}{path.suffix}") for i in range(2, pages + 1)]


def legend_outside(fig: Any, handles: Sequence[Any], labels: Sequence[str], *, ncol: int | None = None,
                   fontsize: float = 8, title: str | None = None) -> Any:
    """One legend for the whole figure, below all its axes (never over a curve). The figure must
    use the constrained layout (:func:`new_figure`'s default), which makes room for it."""
    return fig.legend(list(handles), list(labels), loc="outside lower center",
                      ncol=ncol or max(1, min(len(labels), 6)), fontsize=fontsize, frameon=False, title=title,
                      title_fontsize=fontsize)
