"""A study's report: the statistics against values computed another way, genotype stability and op
frequencies on hand-made cells, report.json from synthetic trial records, report.md, the table
and the plots."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest
from rich.console import Console

from nasreg import RunDirError
from nasreg._core import study_report as sr

PNG = b"\x89PNG\r\n\x1a\n"


# -- an independent t distribution: the density integrated numerically, its quantile by bisection --

def t_cdf(x: float, df: float) -> float:
    """P(T <= x) by Simpson's rule on the density (x >= 0 only; enough for these tests)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    pdf = lambda u: c * (1 + u * u / df) ** (-(df + 1) / 2)  # noqa: E731
    n = 4000
    h = x / n
    s = pdf(0) + pdf(x) + sum((4 if i % 2 else 2) * pdf(i * h) for i in range(1, n))
    return 0.5 + s * h / 3


def t_quantile_975(df: float) -> float:
    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < 0.975 else (lo, mid)
    return (lo + hi) / 2


def test_the_independent_t_matches_the_printed_tables():
    assert t_quantile_975(4) == pytest.approx(2.776, abs=5e-4)     # Student t tables, 95 % two-sided
    assert t_quantile_975(10) == pytest.approx(2.228, abs=5e-4)


# -- summarize --------------------------------------------------------------------------------------

def test_summarize_one_to_five():
    s = sr.summarize([1, 2, 3, 4, 5])
    assert s["n"] == 5 and s["mean"] == 3.0
    assert s["std"] == pytest.approx(math.sqrt(2.5), rel=1e-12)           # sum of squares 10 / (n - 1)
    half = t_quantile_975(4) * math.sqrt(2.5) / math.sqrt(5)
    assert half == pytest.approx(1.9632, abs=1e-4)
    assert s["ci95"] == pytest.approx([3 - half, 3 + half], rel=1e-9)
    assert s["values"] == [1, 2, 3, 4, 5] and s["seeds"] == []


def test_summarize_orders_by_seed():
    s = sr.summarize([0.3, 0.1, 0.2], seeds=[2, 0, 1])
    assert s["values"] == [0.1, 0.2, 0.3] and s["seeds"] == [0, 1, 2]
    assert s["mean"] == pytest.approx(0.2)


@pytest.mark.parametrize("values, mean", [([], None), ([0.5], 0.5)])
def test_summarize_below_two_values(values, mean):
    s = sr.summarize(values, seeds=list(range(len(values))))
    assert s == {"n": len(values), "mean": mean, "std": None, "ci95": [None, None], "values": values,
                 "seeds": list(range(len(values)))}


def test_summarize_constant_values_has_a_zero_width_interval():
    assert sr.summarize([0.9, 0.9, 0.9])["ci95"] == [0.9, 0.9]


@pytest.mark.parametrize("values, seeds", [([1.0, math.nan], None), ([1.0, math.inf], None), ([1.0], [0, 1])])
def test_summarize_refuses_what_is_no_sample(values, seeds):
    with pytest.raises(ValueError, match="summarize"):
        sr.summarize(values, seeds)


# -- welch ------------------------------------------------------------------------------------------

def test_welch_equal_variances_by_hand():
    # a = 1, 2, 3 and b = 4, 5, 6: variances 1, standard error sqrt(2/3), df = (4/9) / (2 * (1/9) / 2) = 4
    w = sr.welch([1, 2, 3], [4, 5, 6])
    t = -3 / math.sqrt(2 / 3)
    assert w["diff"] == -3.0 and w["test"] == "welch" and "note" not in w
    assert w["df"] == pytest.approx(4.0, rel=1e-12)
    assert w["t"] == pytest.approx(t, rel=1e-12)
    assert w["p_value"] == pytest.approx(2 * (1 - t_cdf(-t, 4)), rel=1e-6)
    assert w["p_value"] == pytest.approx(0.0213, abs=1e-4)
    half = t_quantile_975(4) * math.sqrt(2 / 3)
    assert w["ci95"] == pytest.approx([-3 - half, -3 + half], rel=1e-9)
    assert (w["n_a"], w["n_b"]) == (3, 3)


def test_welch_unequal_variances_by_hand_and_against_scipy():
    # a: var 5/3 over 4 -> 5/12; b: var 2 over 2 -> 1; df = (17/12)^2 / ((5/12)^2 / 3 + 1) = 867/457
    a, b = [1, 2, 3, 4], [10, 12]
    w = sr.welch(a, b)
    assert w["diff"] == -8.5
    assert w["df"] == pytest.approx(867 / 457, rel=1e-12)
    from scipy.stats import ttest_ind

    ref = ttest_ind(a, b, equal_var=False)
    assert w["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert w["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert w["ci95"] == pytest.approx([ci.low, ci.high], rel=1e-9)


@pytest.mark.parametrize("a, b, diff, note", [
    ([0.9], [0.8, 0.7], pytest.approx(0.15), "at least 2 values"),
    ([], [0.8, 0.7], None, "at least 2 values"),
    ([0.9, 0.9], [0.8, 0.8], pytest.approx(0.1), "no variance"),
])
def test_welch_degenerate_cases_are_none_with_a_note(a, b, diff, note):
    w = sr.welch(a, b)
    assert w["diff"] == diff
    assert w["ci95"] == [None, None] and w["p_value"] is None and w["df"] is None and w["t"] is None
    assert note in w["note"]
    json.dumps(w, allow_nan=False)


def test_welch_one_constant_side_keeps_the_other_sides_dof():
    w = sr.welch([0.5, 0.5, 0.5], [0.1, 0.3])
    assert w["df"] == pytest.approx(1.0) and 0 < w["p_value"] < 1


# -- genotypes --------------------------------------------------------------------------------------

def cell(*edges):
    return {"edges": [{"node": n, "input": i, "op": op} for n, i, op in edges], "concat": [2, 3]}


G1 = {"space": "s", "cells": {"normal": cell((2, 0, "sep_conv_3x3"), (2, 1, "skip_connect"), (3, 0, "sep_conv_3x3"),
                                             (3, 2, "max_pool_3x3")),
                              "reduce": cell((2, 0, "max_pool_3x3"), (2, 1, "max_pool_3x3"))}}
G2 = {"space": "s", "cells": {"normal": cell((2, 0, "sep_conv_3x3"), (2, 1, "sep_conv_3x3"), (3, 1, "sep_conv_3x3"),
                                             (3, 2, "max_pool_3x3")),
                              "reduce": cell((2, 0, "max_pool_3x3"), (2, 1, "skip_connect"))}}
G_SMALL = {"space": "s", "cells": {"normal": cell((2, 0, "sep_conv_3x3"), (2, 1, "skip_connect"))}}


def test_stability_of_two_genotypes():
    # normal: edges share (2,0), (2,1), (3,2) of 5 distinct; with ops only (2,0,sep) and (3,2,pool) of 6
    s = sr.genotype_stability([G1, G2])
    assert s["normal"] == {"edge_agreement": pytest.approx(3 / 5), "op_agreement": pytest.approx(2 / 6), "pairs": 1}
    assert s["reduce"] == {"edge_agreement": 1.0, "op_agreement": pytest.approx(1 / 3), "pairs": 1}


def test_stability_averages_over_all_pairs():
    s = sr.genotype_stability([G1, G2, G1])["normal"]     # pairs: (1,2), (1,1'), (2,1')
    assert s["pairs"] == 3
    assert s["edge_agreement"] == pytest.approx((0.6 + 1 + 0.6) / 3)
    assert s["op_agreement"] == pytest.approx((1 / 3 + 1 + 1 / 3) / 3)


def test_stability_of_cells_of_different_sizes_is_jaccard():
    s = sr.genotype_stability([G1, G_SMALL])
    assert s["normal"]["edge_agreement"] == pytest.approx(2 / 4)      # the small cell's 2 edges of G1's 4
    assert s["normal"]["op_agreement"] == pytest.approx(2 / 4)
    assert s["reduce"]["edge_agreement"] == 0.0                       # G_SMALL has no reduce cell


def test_stability_needs_two_genotypes():
    assert sr.genotype_stability([G1])["normal"] == {"edge_agreement": None, "op_agreement": None, "pairs": 0}
    assert sr.genotype_stability([]) == {}


def test_op_frequency_counts_every_op_sorted():
    f = sr.op_frequency([G1, G2])
    # normal: sep 5, skip 1, pool 2 of 8 edges; reduce: pool 3, skip 1 of 4
    assert f["normal"] == {"max_pool_3x3": 0.25, "sep_conv_3x3": 0.625, "skip_connect": 0.125}
    assert list(f["normal"]) == sorted(f["normal"])
    assert f["reduce"] == {"max_pool_3x3": 0.75, "skip_connect": 0.25}
    assert sr.op_frequency([]) == {}


def test_a_malformed_genotype_is_one_line_naming_the_key():
    bad = {"cells": {"normal": {"edges": [{"node": 2, "input": "0", "op": "x"}]}}}
    with pytest.raises(sr.GenotypeError, match=r"genotype 1: cells\.normal\.edges\[0\]"):
        sr.op_frequency([G1, bad])


# -- build_report -----------------------------------------------------------------------------------

STUDY = {"name": "demo", "seeds": [0, 1, 2], "executor": {"name": "local"},
         "arms": [{"label": "dg", "spec": "specs/dg.toml", "set": ["search.epochs=2"]},
                  {"label": "base", "spec": "specs/darts.toml", "set": []}]}
DG_ACC = {0: 0.95, 1: 0.97, 2: 0.96}
BASE_ACC = {0: 0.90, 1: 0.92}


def trial(arm, seed, status="finished", acc=None, test=None, seconds=60.0, gpus=0, genotype=None, stages=None):
    done = status == "finished"
    return {"arm": arm, "seed": seed, "run_dir": f"{arm}/seed-{seed}", "status": status,
            "error": None if done else "loss became NaN", "search_val_acc": acc, "test_acc": test,
            "params": 1000 + seed if done else None, "flops": 5000 if done else None,
            "search_seconds": seconds if done else None, "eval_seconds": 5.0 if done else None,
            "device": "cuda:0" if gpus else "cpu", "gpus": gpus,
            "stages": stages if stages is not None else [{"stage": 0, "num_candidate_ops": 224, "epochs": 2},
                                                         {"stage": 1, "num_candidate_ops": 40 + 10 * seed,
                                                          "epochs": 2}],
            "genotype": genotype}


def trials(seconds=(60.0, 61.0, 62.0)):
    out = [trial("dg", s, acc=DG_ACC[s], test=DG_ACC[s] - 0.01, seconds=seconds[s], gpus=2,
                 genotype=G1 if s else G2) for s in range(3)]
    out += [trial("base", s, acc=BASE_ACC[s], test=BASE_ACC[s] - 0.02, seconds=seconds[s], genotype=G1)
            for s in range(2)]
    return out + [trial("base", 2, status="failed")]


@pytest.fixture(scope="module")
def report():
    return sr.build_report(STUDY, trials())


def test_report_layout(report):
    assert report["format"] == "nasreg.study-report" and report["version"] == 1
    assert report["study"] == "demo" and report["seeds"] == [0, 1, 2]
    assert report["statistics"]["ci"] == "95 % Student t interval of the mean"
    assert "Welch" in report["statistics"]["test"]
    assert list(report["arms"]) == ["dg", "base"]
    dg, base = report["arms"]["dg"], report["arms"]["base"]
    assert (dg["spec"], dg["set"], dg["trials"], dg["done"], dg["failed"]) == (
        "specs/dg.toml", ["search.epochs=2"], 3, 3, [])
    assert (base["trials"], base["done"]) == (3, 2)
    assert base["failed"] == [{"seed": 2, "status": "failed", "error": "loss became NaN"}]


def test_report_statistics_count_finished_trials_by_seed(report):
    dg, base = report["arms"]["dg"], report["arms"]["base"]
    assert dg["search_val_acc"] == sr.summarize([0.95, 0.97, 0.96], [0, 1, 2])
    assert dg["search_val_acc"]["mean"] == pytest.approx(0.96)
    assert base["search_val_acc"]["values"] == [0.90, 0.92] and base["search_val_acc"]["seeds"] == [0, 1]
    assert base["test_acc"]["values"] == pytest.approx([0.88, 0.90])
    assert base["params"]["values"] == [1000, 1001] and base["flops"]["mean"] == 5000
    assert dg["search_seconds"]["values"] == [60.0, 61.0, 62.0]
    assert dg["device_hours"] == pytest.approx((60 + 61 + 62) * 2 / 3600) and dg["devices"] == ["cuda:0"]
    assert base["device_hours"] is None and base["devices"] == ["cpu"]              # CPU trials only
    assert dg["candidate_ops_per_stage"] == [224.0, 50.0]                            # stage 1: 40, 50, 60
    assert base["candidate_ops_per_stage"] == [224.0, 45.0]                          # the failed one left out


def test_report_genotypes(report):
    dg, base = report["arms"]["dg"], report["arms"]["base"]
    assert dg["stability"] == sr.genotype_stability([G2, G1, G1])
    assert dg["op_frequency"]["normal"]["skip_connect"] == pytest.approx(2 / 12)
    assert base["stability"]["normal"] == {"edge_agreement": 1.0, "op_agreement": 1.0, "pairs": 1}


def test_report_comparisons(report):
    assert [(c["a"], c["b"], c["metric"]) for c in report["comparisons"]] == [
        ("dg", "base", "search_val_acc"), ("dg", "base", "test_acc")]
    c = report["comparisons"][0]
    assert {k: v for k, v in c.items() if k not in ("a", "b", "metric")} == sr.welch([0.95, 0.97, 0.96], [0.90, 0.92])
    assert c["diff"] == pytest.approx(0.05) and c["test"] == "welch"


def test_report_is_independent_of_the_order_of_trials(report):
    shuffled = trials()
    random.Random(3).shuffle(shuffled)
    again = sr.build_report(STUDY, shuffled)
    assert again == report
    assert json.dumps(again, allow_nan=False) == json.dumps(report, allow_nan=False)


def test_a_resumed_study_differs_only_in_timing(report):
    resumed = sr.build_report(STUDY, trials(seconds=(90.0, 30.5, 62.0)))
    assert resumed != report
    assert sr.without_timing(resumed) == sr.without_timing(report)
    assert "search_seconds" not in json.dumps(sr.without_timing(report))


def test_report_json_has_no_nan_even_from_non_finite_records():
    records = trials()
    records[0]["search_val_acc"] = math.nan
    records[1]["search_seconds"] = math.inf
    r = sr.build_report(STUDY, records)
    assert json.loads(json.dumps(r, allow_nan=False)) == r             # allow_nan=False: raises on NaN or inf
    assert r["arms"]["dg"]["search_val_acc"]["seeds"] == [1, 2]         # the NaN is a missing value
    assert r["arms"]["dg"]["search_seconds"]["seeds"] == [0, 2]


def test_report_without_evaluation_or_genotypes():
    records = [trial("dg", s, acc=0.5 + s / 10, stages=[]) for s in range(3)]
    r = sr.build_report(STUDY, records)
    dg, base = r["arms"]["dg"], r["arms"]["base"]
    assert "test_acc" not in dg and dg["candidate_ops_per_stage"] == []
    assert dg["stability"] == {} and dg["op_frequency"] == {}
    assert base["done"] == 0 and [f["status"] for f in base["failed"]] == ["pending"] * 3   # no records at all
    assert base["search_val_acc"]["n"] == 0 and base["search_val_acc"]["mean"] is None
    assert [c["metric"] for c in r["comparisons"]] == ["search_val_acc"]
    assert r["comparisons"][0]["diff"] is None and "at least 2" in r["comparisons"][0]["note"]
    json.dumps(r, allow_nan=False)


@pytest.mark.parametrize("change, match", [
    ({"arm": "other"}, r"^dg/seed-0: arm: 'other' is not an arm of the study"),
    ({"seed": 7}, r"^dg/seed-0: seed: 7 is not a seed"),
    ({"status": "done"}, r"^dg/seed-0: status: expected one of finished, failed"),
    ({"search_val_acc": "0.9"}, r"^dg/seed-0: search_val_acc: expected a number or null, got '0.9'"),
    ({"params": 1.5}, r"^dg/seed-0: params: expected an integer"),
    ({"stages": [{"stage": 0}]}, r"^dg/seed-0: stages: expected a list"),
    ({"genotype": {"cells": []}}, r"^dg/seed-0: cells: expected an object"),
])
def test_a_bad_trial_record_is_one_line_naming_it_and_the_key(change, match):
    records = trials()
    records[0].update(change)
    with pytest.raises(RunDirError, match=match) as info:
        sr.build_report(STUDY, records)
    assert "\n" not in str(info.value)


def test_two_records_of_one_trial_are_refused():
    with pytest.raises(RunDirError, match="base/seed-1: arm 'base' seed 1: two trial records"):
        sr.build_report(STUDY, trials() + [trial("base", 1, acc=0.5)])


# -- report.md, the table, the plots --------------------------------------------------------------

def test_report_markdown_holds_the_figures(report):
    md = sr.report_markdown(report)
    assert md.startswith("# Study report: demo\n")
    assert "| dg | 3/3 | 96.00 ± 1.00 [" in md                   # mean ± std [ci] in percent
    assert "| base | 2/3 | 91.00 ± 1.41 [" in md
    assert "| base | 2 | failed | - | - | loss became NaN |" in md
    c = report["comparisons"][0]
    assert f"| dg | base | search_val_acc | +5.00 | [{100 * c['ci95'][0]:+.2f}, {100 * c['ci95'][1]:+.2f}] | " \
           f"{c['p_value']:.4f} | {c['df']:.1f} |" in md
    assert "| dg | normal | 73.3 | 55.6 | 3 |" in md        # pairs of G2, G1, G1: (0.6 + 0.6 + 1) / 3, ...
    assert "skip_connect" in md and "Welch" in md
    assert all(f"]({name})" in md for name in sr.PLOT_FILES)
    assert "## Figures" not in sr.report_markdown(report, plots=[])


def test_report_markdown_escapes_table_cells():
    study = {**STUDY, "arms": [{"label": "a|b", "spec": "x.toml", "set": []}, STUDY["arms"][1]]}
    records = [{**t, "arm": "a|b"} if t["arm"] == "dg" else t for t in trials()]
    md = sr.report_markdown(sr.build_report(study, records))
    assert "| a\\|b | 3/3 |" in md


def test_report_table_renders_one_row_per_arm(report):
    console = Console(record=True, width=220)
    console.print(sr.report_table(report))
    text = console.export_text()
    assert "study demo" in text and "test acc %" in text and "device-h" in text
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert len(rows) == 2 and "dg" in rows[0] and "3/3" in rows[0] and "96.00 ± 1.00" in rows[0]
    assert "base" in rows[1] and "2/3" in rows[1] and "224 → 45" in rows[1]


def test_plot_report_writes_three_pngs(report, tmp_path):
    warnings = []
    written = sr.plot_report(report, trials(), tmp_path, warn=warnings.append)
    assert written == list(sr.PLOT_FILES) and warnings == []
    for name in written:
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_a_plot_that_cannot_be_drawn_is_one_warning(tmp_path):
    records = [trial("dg", s, acc=0.5 + s / 10) for s in range(3)]             # no genotypes: no heatmap
    warnings = []
    written = sr.plot_report(sr.build_report(STUDY, records), records, tmp_path, warn=warnings.append)
    assert written == ["report_accuracy.png", "report_time.png"]
    assert len(warnings) == 1 and warnings[0].startswith("warning: study report: could not write report_ops.png")
    assert not (tmp_path / "report_ops.png").exists()


def test_the_module_imports_no_torch_scipy_or_matplotlib():
    code = ("import sys, nasreg._core.study_report; "
            "print(sorted(m for m in ('torch', 'scipy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "torch" not in out and "scipy" not in out and "matplotlib" not in out
