"""The plots plugin: figures from a run directory through on_run_end, and failures that only warn."""

from __future__ import annotations

import json
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


def fake_run_dir(path, with_stages: bool = True):
    """metrics.jsonl and stages.json as the core writes them: stage 0 over all 8 ops (3 epochs),
    stage 1 over 2 or 3 ops per edge (2 epochs), plus lines an observer must tolerate."""
    stage1 = {ct: [["max_pool_3x3", "avg_pool_3x3"] if e % 2 else ["skip_connect", "sep_conv_3x3", "dil_conv_5x5"]
                   for e in range(N_EDGES)] for ct in ("normal", "reduce")}
    stages = [{"stage": 0, "candidates": {ct: [list(OPS)] * N_EDGES for ct in ("normal", "reduce")},
               "num_weights": 1000, "num_candidate_ops": 2 * N_EDGES * len(OPS), "warmup_epochs": 0, "epochs": 3,
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
    run = fake_run_dir(tmp_path)
    nasreg_plots.on_run_end(run=run, genotype=darts_like_genotype())
    for name in ("alphas.png", "cell_normal.png", "cell_reduce.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG), name
    assert "warning" not in capsys.readouterr().err


def test_alphas_without_stages_json_numbers_the_ops(tmp_path):
    run = fake_run_dir(tmp_path, with_stages=False)
    out = nasreg_plots.plot_alphas(tmp_path / "metrics.jsonl", tmp_path / "stages.json", tmp_path / "a.png",
                                   edges_per_cell=1)
    assert out.read_bytes().startswith(PNG)
    assert run.run_dir == tmp_path


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
