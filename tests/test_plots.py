"""The plots plugin: figures from a run directory through on_run_end, and failures that only warn."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

import nasreg_plots
from nasreg import CellGenotype, Genotype, GenotypeEdge
from nasreg._core.plugins import load_plugins

PNG = b"\x89PNG\r\n\x1a\n"
OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
       "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
N_EDGES = 14


def _softmax_row(n: int, step: int, favourite: int) -> list[float]:
    raw = [1.0 + (0.3 * step if i == favourite else 0.0) for i in range(n)]
    return [r / sum(raw) for r in raw]


def fake_run_dir(path, with_stages: bool = True, n_edges: int = N_EDGES):
    """metrics.jsonl and stages.json as the core writes them: stage 0 over all 8 ops (3 epochs),
    stage 1 over 2 or 3 ops per edge (2 epochs), plus lines an observer must tolerate."""
    stage1 = {ct: [["max_pool_3x3", "avg_pool_3x3"] if e % 2 else ["skip_connect", "sep_conv_3x3", "dil_conv_5x5"]
                   for e in range(n_edges)] for ct in ("normal", "reduce")}
    stages = [{"stage": 0, "candidates": {ct: [list(OPS)] * n_edges for ct in ("normal", "reduce")},
               "num_weights": 1000, "num_candidate_ops": 2 * n_edges * len(OPS), "warmup_epochs": 0, "epochs": 3,
               "epoch_seconds": [1.0] * 3, "step_seconds": 0.1},
              {"stage": 1, "candidates": stage1, "num_weights": 500,
               "num_candidate_ops": sum(len(c) for e in stage1.values() for c in e), "warmup_epochs": 0, "epochs": 2,
               "epoch_seconds": [0.5] * 2, "step_seconds": 0.05}]
    lines = []
    for s in stages:
        for epoch in range(len(s["epoch_seconds"])):
            alphas = {ct: [_softmax_row(len(ops), epoch, e % len(ops)) for e, ops in enumerate(edges)]
                      for ct, edges in s["candidates"].items()}
            lines.append(json.dumps({"stage": s["stage"], "epoch": epoch, "joint": True, "val_acc": 0.5,
                                     "alphas": alphas}))
    lines.insert(1, '{"stage": 0, "epoch": 99, "note": "a record without alphas"}')
    lines.append('{"stage": 1, "epoch": 2, "alph')  # a run killed mid-write
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if with_stages:
        (path / "stages.json").write_text(json.dumps(stages))
    return SimpleNamespace(run_dir=path)


def darts_like_genotype() -> Genotype:
    normal = [(2, 0, "sep_conv_3x3"), (2, 1, "sep_conv_3x3"), (3, 0, "sep_conv_3x3"), (3, 1, "sep_conv_3x3"),
              (4, 1, "sep_conv_3x3"), (4, 0, "skip_connect"), (5, 0, "skip_connect"), (5, 2, "dil_conv_3x3")]
    reduce = [(2, 0, "max_pool_3x3"), (2, 1, "max_pool_3x3"), (3, 2, "skip_connect"), (3, 1, "max_pool_3x3"),
              (4, 0, "max_pool_3x3"), (4, 2, "skip_connect"), (5, 2, "skip_connect"), (5, 1, "max_pool_3x3")]
    cells = {name: CellGenotype(edges=[GenotypeEdge(*e) for e in edges], concat=[2, 3, 4, 5])
             for name, edges in (("normal", normal), ("reduce", reduce))}
    return Genotype(space="darts-cell", cells=cells, provenance={"seed": 0})


def test_on_run_end_writes_alphas_and_cell_diagrams(tmp_path, capsys):
    run = fake_run_dir(tmp_path, n_edges=5)  # a darts-cell space of 2 nodes: 5 edges a cell
    run.space = SimpleNamespace(edges=lambda: darts_edges(nodes=2))
    nasreg_plots.on_run_end(run=run, genotype=darts_like_genotype())
    for name in ("alphas.png", "cell_normal.png", "cell_reduce.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG), name
    assert "warning" not in capsys.readouterr().err
    assert nasreg_plots._space_edges(run) == darts_edges(nodes=2)
    assert nasreg_plots._space_edges(SimpleNamespace(run_dir=tmp_path)) is None  # no space: edges numbered


def test_alphas_without_stages_json_numbers_the_ops(tmp_path):
    run = fake_run_dir(tmp_path, with_stages=False)
    (out,) = nasreg_plots.plot_alphas(tmp_path / "metrics.jsonl", tmp_path / "stages.json", tmp_path / "a.png",
                                      edges_per_cell=1)
    assert out == tmp_path / "a.png" and out.read_bytes().startswith(PNG)
    assert run.run_dir == tmp_path
    (fig,) = nasreg_plots.alpha_figures(tmp_path / "metrics.jsonl", tmp_path / "stages.json", edges_per_cell=1)
    legend_labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_labels == [f"op {j}" for j in range(len(OPS))] + ["stage boundary"]
    # Without the space's edges the panels say which edge by index, and the title says why.
    assert [ax.get_title() for ax in _panels(fig)] == ["normal: edge 0", "reduce: edge 0"]
    title = fig._suptitle.get_text()
    assert "only the first 1 edges of each cell type" in title and "the space's nodes are unknown" in title
    assert "normal: edge 1 of 14; reduce: edge 1 of 14" in title


def test_read_epochs_skips_broken_lines_and_keeps_the_last_of_a_repeated_epoch(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"stage": 0, "epoch": 1, "alphas": {"normal": [[0.5, 0.5]]}}\n'
        'not json\n'
        '{"stage": 0, "epoch": 0, "alphas": {"normal": [[0.9, 0.1]]}}\n'
        '{"stage": 0, "epoch": 1, "alphas": {"normal": [[0.2, 0.8]]}}\n')
    recs = nasreg_plots._read_epochs(tmp_path / "metrics.jsonl")
    assert [(r["epoch"], r["alphas"]["normal"][0]) for r in recs] == [(0, [0.9, 0.1]), (1, [0.2, 0.8])]


def test_a_missing_metrics_file_only_warns(tmp_path, capsys):
    (tmp_path / "stages.json").write_text("[]")  # a supernet search's run directory, metrics lost
    nasreg_plots.on_run_end(run=SimpleNamespace(run_dir=tmp_path), genotype=darts_like_genotype())
    err = capsys.readouterr().err
    assert "could not write alphas.png" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "cell_normal.png").exists()  # the other figures are still written


def test_a_sampling_search_gets_no_alphas_figure_and_no_warning(tmp_path, capsys):
    """A sampling strategy trains no supernet: no metrics.jsonl, no stages.json, nothing to warn."""
    nasreg_plots.on_run_end(run=SimpleNamespace(run_dir=tmp_path), genotype=darts_like_genotype())
    assert capsys.readouterr().err == ""
    assert not (tmp_path / "alphas.png").exists() and (tmp_path / "cell_normal.png").exists()


def test_failures_never_raise(tmp_path, capsys):
    broken = Genotype(space="x", cells={"odd/name": SimpleNamespace(edges=[], concat=[2])})
    nasreg_plots.on_run_end(run=SimpleNamespace(run_dir=tmp_path / "missing"), genotype=broken)
    nasreg_plots.on_run_end(run=object(), genotype=None)
    err = capsys.readouterr().err
    assert "could not write cell_odd_name.png: ValueError: the cell has no edges" in err
    assert "no run directory" in err


def test_cell_diagram_handles_other_shapes(tmp_path):
    # One input node, three intermediate nodes, a concatenated node that has no incoming edge.
    cell = CellGenotype(edges=[GenotypeEdge(1, 0, "conv"), GenotypeEdge(2, 1, "pool"), GenotypeEdge(2, 0, "id")],
                        concat=[1, 2, 3])
    assert nasreg_plots.plot_cell(cell, tmp_path / "c.png", title="odd").read_bytes().startswith(PNG)


def test_plots_is_a_lifecycle_plugin_and_imports_no_matplotlib():
    info = load_plugins().infos["plots"]
    assert info.ok and info.hooks == ["on_run_end"]
    code = ("import sys, nasreg_plots, nasreg_dgdarts, nasreg_elkan; "
            "print(sorted(m for m in ('matplotlib', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("message", ["plain", "with [brackets] and [bold]markup[/bold]"])
def test_warn_prints_one_line_verbatim(capsys, message):
    nasreg_plots.warn(message)
    err = capsys.readouterr().err
    assert err.strip() == f"warning: {message}"


# -- every edge, named as the genotype names it, one colour per op, legends outside ---------------

def darts_edges(nodes: int = 4) -> dict[str, list[tuple[int, int]]]:
    """The darts-cell space's edges as ``space.edges()`` gives them: node 2.. from every earlier node."""
    edges = [(i, n) for n in range(2, 2 + nodes) for i in range(n)]
    return {"normal": list(edges), "reduce": list(edges)}


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def _genotype_token(title: str) -> tuple[str, str]:
    """``normal: node 3 <- input 1`` -> ("normal", "n3<-1"), the token Genotype.describe() writes."""
    m = re.fullmatch(r"(\w+): node (\d+) <- (?:input|node) (\d+)", title.splitlines()[0])
    assert m, title
    return m[1], f"n{m[2]}<-{m[3]}"


def _line_colors(fig) -> dict[str, set[str]]:
    """op name -> the colours of every line drawn for it (lines carry their op as gid)."""
    from matplotlib.colors import to_hex

    found: dict[str, set[str]] = {}
    for ax in _panels(fig):
        for line in ax.get_lines():
            if line.get_gid():
                found.setdefault(line.get_gid(), set()).add(to_hex(line.get_color()))
    return found


def _legend_clear_of_axes(fig):
    """Draws ``fig``; asserts every legend's box lies outside every visible axes' box."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in _panels(fig):
            assert not box.overlaps(ax.get_window_extent(renderer)), (legend, ax.get_title())


def test_alphas_one_panel_per_edge_titled_as_the_genotype_with_a_shared_y_axis(tmp_path):
    fake_run_dir(tmp_path)
    (fig,) = nasreg_plots.alpha_figures(tmp_path / "metrics.jsonl", tmp_path / "stages.json", edges=darts_edges())
    panels = _panels(fig)
    assert len(panels) == 2 * N_EDGES
    tokens = [_genotype_token(ax.get_title()) for ax in panels]
    expected = [(ct, f"n{n}<-{i}") for ct, edges in darts_edges().items() for i, n in edges]
    assert tokens == expected
    assert panels[0].get_title() == "normal: node 2 <- input 0"
    assert panels[-1].get_title() == "reduce: node 5 <- node 4"
    # The token of each genotype edge is one of the panel titles.
    described = darts_like_genotype().describe()
    for ct, token in {("normal", "n2<-0"), ("reduce", "n5<-2"), ("normal", "n5<-2")}:
        assert f"{token}:" in described and (ct, token) in tokens
    assert all(panels[0].get_shared_y_axes().joined(panels[0], ax) for ax in panels)
    assert "normal: edges 1-14 of 14; reduce: edges 1-14 of 14" in fig._suptitle.get_text()
    # Stage 1's edge 1 kept max_pool_3x3 and avg_pool_3x3: its panel has stage 0's 8 lines + 2 (+ boundary).
    lines = [line for line in panels[1].get_lines() if line.get_gid()]
    assert len(lines) == len(OPS) + 2
    xs = sorted({x for line in lines for x in line.get_xdata()})
    assert xs == [1, 2, 3, 4, 5]  # 3 + 2 epochs: the damaged and the alpha-less lines are not drawn


def test_alphas_of_a_large_space_go_on_pages_that_say_which_edges(tmp_path, monkeypatch):
    from nasreg._core import figures

    fake_run_dir(tmp_path)
    monkeypatch.setattr(figures, "EDGES_PER_PAGE", 2)  # written: 3 edges a cell type, 2 a page
    paths = nasreg_plots.plot_alphas(tmp_path / "metrics.jsonl", tmp_path / "stages.json", tmp_path / "alphas.png",
                                     edges=darts_edges(), edges_per_cell=3)
    assert [p.name for p in paths] == ["alphas.png", "alphas_page2.png", "alphas_page3.png", "alphas_page4.png"]
    assert sorted(p.name for p in tmp_path.glob("alphas*.png")) == sorted(p.name for p in paths)
    assert all(p.read_bytes().startswith(PNG) for p in paths)
    monkeypatch.setattr(figures, "EDGES_PER_PAGE", 10)  # built, not drawn: every edge, 10 a page
    figs = nasreg_plots.alpha_figures(tmp_path / "metrics.jsonl", tmp_path / "stages.json", edges=darts_edges())
    assert [len(_panels(f)) for f in figs] == [10, 4, 10, 4]
    titles = [f._suptitle.get_text() for f in figs]
    assert "page 1 of 4, normal: edges 1-10 of 14 (at most 10 edges a page)" in titles[0]
    assert "page 2 of 4, normal: edges 11-14 of 14" in titles[1]
    assert "page 4 of 4, reduce: edges 11-14 of 14" in titles[3]
    assert _panels(figs[1])[0].get_title() == "normal: node 5 <- input 1"  # edge 11: n5<-1


def test_edge_grids_pack_small_cell_types_on_one_page():
    import nasreg

    grids = nasreg.edge_grids({"normal": [(0, 2), (1, 2), (0, 3)], "reduce": [(0, 2), (1, 2)], "x": [None]},
                              per_page=5)
    assert [sorted(g.axes) for g in grids] == [
        [("normal", 0), ("normal", 1), ("normal", 2), ("reduce", 0), ("reduce", 1)], [("x", 0)]]
    assert grids[1].axes[("x", 0)].get_title() == "x: edge 0"
    assert grids[0].title("w") == "w\npage 1 of 2, normal: edges 1-3 of 3; reduce: edges 1-2 of 2 (at most 5 edges a page)"
    assert nasreg.edge_label("normal", 3, 4) == "normal: node 4 <- node 3"
    assert nasreg.edge_label("normal", 0, 1, inputs=1) == "normal: node 1 <- input 0"


def test_op_colors_are_stable_distinct_and_qualified_names_share_them():
    import nasreg

    colors = [nasreg.op_color(op) for op in OPS]
    assert len(set(colors)) == len(OPS)  # the darts plugin's 8 ops: 8 colours
    from nasreg._core.figures import OP_PALETTE, ZERO_OP_COLOR

    assert nasreg.op_color("none") == ZERO_OP_COLOR  # the darts plugin's zero op: grey
    assert set(colors[1:]) <= set(OP_PALETTE)
    assert nasreg.op_color("darts:sep_conv_3x3") == nasreg.op_color("sep_conv_3x3")
    code = "import nasreg; print(nasreg.op_color('sep_conv_3x3'), nasreg.op_color('not_registered_op'))"
    other_process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other_process.split() == [nasreg.op_color("sep_conv_3x3"), nasreg.op_color("not_registered_op")]


def _decisions(candidates):
    """Hand-made DG-DARTS decisions: per edge, the first two ops kept (group g0), the zero op
    alone in the last group, the rest g1."""
    from nasreg_dgdarts.grouping import EdgeDecision, Group

    out = {}
    for ct, edges in candidates.items():
        out[ct] = []
        for ops in edges:
            nonzero = [op for op in ops if op != "none"]
            groups = [Group(nonzero[:2], [0.2, 0.2], 0.4), Group(nonzero[2:], [0.1] * len(nonzero[2:]), 0.5),
                      Group(["none"], [0.1], 0.1, zero=True)]
            out[ct].append(EdgeDecision(chosen=nonzero[:2], groups=groups, rule="heaviest"))
    return out


def gradient_inputs(nodes: int = 4, epochs: int = 3):
    edges = darts_edges(nodes)
    candidates = {ct: [list(OPS) for _ in es] for ct, es in edges.items()}
    history = {ct: [[[0.01 * (j + 1) * (t + 1) * (-1) ** e for t in range(epochs)] for j in range(len(OPS))]
                    for e in range(len(es))] for ct, es in edges.items()}
    result = SimpleNamespace(stage=0, candidates=candidates, edges=edges)
    return result, history, _decisions(candidates)


def test_gradients_one_panel_per_edge_op_colours_shared_with_alphas_and_cells(tmp_path):
    import nasreg
    from nasreg_dgdarts.plots import gradient_figures

    result, history, decisions = gradient_inputs()
    (grad,) = gradient_figures(result, history, decisions)
    panels = _panels(grad)
    assert len(panels) == 2 * N_EDGES
    assert [_genotype_token(ax.get_title()) for ax in panels] == [
        (ct, f"n{n}<-{i}") for ct, es in darts_edges().items() for i, n in es]
    assert panels[0].get_title().splitlines()[1] == "heaviest: g0 0.40 g1 0.50 g2 0.10"
    assert all(panels[0].get_shared_y_axes().joined(panels[0], ax) for ax in panels)
    line = next(li for li in panels[3].get_lines() if li.get_gid() == "max_pool_3x3")  # kept: g0
    assert (line.get_linestyle(), line.get_marker(), list(line.get_ydata())) == ("-", "o", history["normal"][3][1])

    fake_run_dir(tmp_path)
    (alphas,) = nasreg_plots.alpha_figures(tmp_path / "metrics.jsonl", tmp_path / "stages.json",
                                           edges=darts_edges())
    cell = nasreg_plots.cell_figure(darts_like_genotype().cells["normal"])
    from matplotlib.colors import to_hex

    cell_colors = {t.get_text(): to_hex(t.get_color()) for t in cell.axes[0].texts
                   if (t.get_gid() or "").startswith("op ")}
    grad_colors, alpha_colors = _line_colors(grad), _line_colors(alphas)
    assert set(grad_colors) == set(alpha_colors) == set(OPS)
    for op in OPS:
        assert grad_colors[op] == alpha_colors[op] == {nasreg.op_color(op)}, op
    for op, color in cell_colors.items():
        assert color == nasreg.op_color(op) and {color} == alpha_colors[op], op
    assert set(cell_colors) == {"sep_conv_3x3", "skip_connect", "dil_conv_3x3"}


def test_gradients_of_a_large_space_are_paged(tmp_path, monkeypatch):
    import nasreg_dgdarts.plots as plots
    from nasreg._core import figures

    monkeypatch.setattr(figures, "EDGES_PER_PAGE", 3)
    result, history, decisions = gradient_inputs(nodes=2)  # 5 edges a cell type: 3 + 2 a page
    assert plots.plot_gradients(tmp_path / "gradients_stage0.png", result, history, decisions)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gradients_stage0.png", "gradients_stage0_page2.png", "gradients_stage0_page3.png", "gradients_stage0_page4.png"]
    assert all(p.read_bytes().startswith(PNG) for p in tmp_path.iterdir())
    result, history, decisions = gradient_inputs()
    monkeypatch.setattr(figures, "EDGES_PER_PAGE", 40)
    monkeypatch.setattr(plots, "EDGES_PER_CELL", 2)
    (fig,) = plots.gradient_figures(result, history, decisions)
    assert len(_panels(fig)) == 4
    assert "only the first 2 edges of each cell type" in fig._suptitle.get_text()
    assert "normal: edges 1-2 of 14; reduce: edges 1-2 of 14" in fig._suptitle.get_text()


def test_study_op_heatmap_names_ops_in_their_colours():
    import nasreg
    from matplotlib.colors import to_hex
    from nasreg._core.study_report import ops_figure

    report = {"arms": {"a": {"op_frequency": {"normal": {"sep_conv_3x3": 0.5, "skip_connect": 0.5}}},
                       "b": {"op_frequency": {"normal": {"dil_conv_3x3": 1.0}}}}}
    fig = ops_figure(report)
    ticks = {t.get_text(): to_hex(t.get_color()) for t in fig.axes[0].get_xticklabels()}
    assert ticks == {op: nasreg.op_color(op) for op in ("dil_conv_3x3", "sep_conv_3x3", "skip_connect")}


def test_cell_diagram_numbers_nodes_as_the_genotype_text():
    genotype = darts_like_genotype()
    cell = genotype.cells["reduce"]
    ax = nasreg_plots.cell_figure(cell, title="reduce cell").axes[0]
    nodes = {t.get_gid(): t for t in ax.texts if (t.get_gid() or "").startswith("node ")}
    assert {gid: t.get_text() for gid, t in nodes.items()} == {
        "node 0": "0 = $c_{k-2}$", "node 1": "1 = $c_{k-1}$", "node 2": "2", "node 3": "3", "node 4": "4",
        "node 5": "5", "node out": "$c_{k}$"}
    x = {int(gid.split()[1]): t.get_position()[0] for gid, t in nodes.items() if gid != "node out"}
    ops = {t.get_gid(): t for t in ax.texts if (t.get_gid() or "").startswith("op ")}
    arcs = {p.get_gid() for p in ax.patches if p.get_gid()}
    described = genotype.describe().splitlines()[1]
    for e in cell.edges:
        assert f"n{e.node}<-{e.input}:{e.op}" in described
        label = ops[f"op {e.node}<-{e.input}"]
        assert label.get_text() == e.op and f"edge {e.node}<-{e.input}" in arcs
        assert label.get_position()[0] == pytest.approx((x[e.input] + x[e.node]) / 2)  # over its two nodes
    assert "nodes numbered as in the genotype text" in ax.get_title()


def test_legends_lie_outside_the_axes(tmp_path):
    from nasreg._core.evaluate import curves_figure
    from nasreg_dgdarts.plots import gradient_figures
    from nasreg_rl.plots import rewards_figure

    fake_run_dir(tmp_path)
    (alphas,) = nasreg_plots.alpha_figures(tmp_path / "metrics.jsonl", tmp_path / "stages.json",
                                           edges=darts_edges(), edges_per_cell=2)
    result, history, decisions = gradient_inputs(nodes=1)
    (grad,) = gradient_figures(result, history, decisions)
    curves = curves_figure(CURVES)
    rewards = rewards_figure([{"index": i, "reward": 0.1 * i} for i in range(4)],
                             [{"first_child": 0, "last_child": 3, "mean_reward": 0.15, "moving_average": 0.15,
                               "best_so_far": 0.3}])
    for fig in (alphas, grad, curves, rewards):
        _legend_clear_of_axes(fig)


CURVES = [{"epoch": e, "lr": 0.025 * (1 - e / 3), "drop_path_prob": 0.1 * e / 3, "train_loss": 1.0 / (e + 1),
           "train_acc": 0.5 + 0.1 * e, "test_loss": 1.2 / (e + 1), "test_acc": 0.4 + 0.1 * e} for e in range(3)]


def test_curves_figure_has_the_learning_rate_and_drop_path_axes(tmp_path):
    from nasreg._core.evaluate import curves_figure, plot_curves

    fig = curves_figure(CURVES)
    by_label = {ax.get_ylabel(): ax for ax in fig.axes}
    assert {"accuracy", "cross-entropy", "learning rate", "drop-path probability"} <= set(by_label)
    (lr,) = by_label["learning rate"].get_lines()
    assert list(lr.get_xdata()) == [1, 2, 3] and list(lr.get_ydata()) == [h["lr"] for h in CURVES]
    (dp,) = by_label["drop-path probability"].get_lines()
    assert list(dp.get_ydata()) == [h["drop_path_prob"] for h in CURVES]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "train", "test", "learning rate", "drop-path probability"]
    without = curves_figure([{k: v for k, v in h.items() if k != "drop_path_prob"} for h in CURVES])
    assert "drop-path probability" not in {ax.get_ylabel() for ax in without.axes}
    assert plot_curves(CURVES, tmp_path / "curves.png") and (tmp_path / "curves.png").read_bytes().startswith(PNG)
