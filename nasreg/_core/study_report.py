"""A study's report: the statistics, ``report.json``, ``report.md``, the CLI's table and the plots.

A study runs several arms over several seeds; each trial leaves a record (a plain dict, built by
the study runner from the trial's run directory). This module turns those records into the report
and nothing else: it reads no file and runs nothing. Statistics count finished trials only and
keep their values ordered by seed, so a resumed study's report equals an uninterrupted one's
except under the timing names of :data:`TIMING_FIELDS`. JSON values are never NaN or Infinity.

The t distribution (quantiles for the 95 % intervals, tail areas for p-values) is
``scipy.stats.t``, imported when a statistic is computed; matplotlib only when a plot is drawn;
rich only when the table is made. Importing this module imports neither torch nor those.
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import GenotypeError, RunDirError
from .params import show

__all__ = ["FORMAT", "VERSION", "METRICS", "TIMING_FIELDS", "PLOT_FILES", "summarize", "welch",
           "genotype_stability", "op_frequency", "build_report", "without_timing", "report_markdown",
           "report_table", "plot_report"]

FORMAT = "nasreg.study-report"
VERSION = 1
#: The accuracies compared between arms, in the order they are reported.
METRICS = ("search_val_acc", "test_acc")
#: Every figure that depends on the machine's speed: what may differ after a resume.
TIMING_FIELDS = ("search_seconds", "eval_seconds", "device_hours")
#: The figures :func:`plot_report` writes, in its order.
PLOT_FILES = ("report_accuracy.png", "report_ops.png", "report_time.png")
STATUSES = ("finished", "failed", "interrupted", "pending")
#: What ``report.json``'s ``statistics`` says the numbers are.
STATISTICS = {"ci": "95 % Student t interval of the mean", "test": "Welch's two-sided t-test",
              "std": "sample standard deviation (n - 1 in the denominator)"}


# -- statistics -----------------------------------------------------------------------------------

def _t_quantile(df: float) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def _t_two_sided(t_stat: float, df: float) -> float:
    """P(|T| >= |t_stat|) for Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(min(1.0, 2.0 * t.sf(abs(t_stat), df)))


def _mean_var(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the sample variance (None below two values) of a non-empty sequence."""
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) * (v - mean) for v in values) / (n - 1) if n > 1 else None
    return mean, var


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summarize(values: Sequence[float], seeds: Sequence[int] | None = None) -> dict:
    """The summary of one metric over the seeds of an arm: ``n``, ``mean``, ``std`` (sample,
    None below two values), ``ci95`` (``[lo, hi]``, the Student t interval of the mean with n - 1
    degrees of freedom; ``[None, None]`` below two values), and the per-seed ``values`` and
    ``seeds``, ordered by seed when seeds are given. ``mean`` is None when there is no value.
    Every value must be a finite number (a ``ValueError`` otherwise)."""
    values = list(values)
    seeds = list(seeds) if seeds is not None else []
    if seeds and len(seeds) != len(values):
        raise ValueError(f"summarize: {len(values)} values but {len(seeds)} seeds")
    bad = [v for v in values if not _finite(v)]
    if bad:
        raise ValueError(f"summarize: values must be finite numbers, got {show(bad[0])}")
    if seeds:
        order = sorted(range(len(values)), key=lambda i: seeds[i])
        values, seeds = [values[i] for i in order], [seeds[i] for i in order]
    out: dict[str, Any] = {"n": len(values), "mean": None, "std": None, "ci95": [None, None],
                           "values": values, "seeds": seeds}
    if not values:
        return out
    mean, var = _mean_var(values)
    out["mean"] = mean
    if var is not None and math.isfinite(var):  # (values near the float limit: no spread, not inf)
        std = math.sqrt(var)
        half = _t_quantile(len(values) - 1) * std / math.sqrt(len(values))
        out.update(std=std, ci95=[mean - half, mean + half])
    return out


def welch(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's two-sided t-test of mean(a) = mean(b): ``diff`` (mean(a) - mean(b)), ``ci95`` (its
    95 % interval), ``t``, ``df`` (Welch-Satterthwaite), ``p_value``, ``n_a``, ``n_b`` and ``test``
    (``"welch"``). Where the test is undefined (fewer than two values on a side, or no variance on
    either) the undefined fields are None and ``note`` says why; ``diff`` stays whenever both
    sides have a value. Never NaN."""
    a, b = list(a), list(b)
    out: dict[str, Any] = {"diff": None, "ci95": [None, None], "t": None, "df": None, "p_value": None,
                           "n_a": len(a), "n_b": len(b), "test": "welch"}
    if a and b:
        out["diff"] = _mean_var(a)[0] - _mean_var(b)[0]
    if len(a) < 2 or len(b) < 2:
        out["note"] = f"needs at least 2 values on each side (has {len(a)} and {len(b)})"
        return out
    (_, va), (_, vb) = _mean_var(a), _mean_var(b)
    sa, sb = va / len(a), vb / len(b)
    se2 = sa + sb
    if se2 <= 0.0:
        out["note"] = "no variance on either side: the test is undefined"
        return out
    # Welch-Satterthwaite, written in shares of se2 so that tiny variances cannot underflow to 0 / 0.
    df = 1.0 / ((sa / se2) ** 2 / (len(a) - 1) + (sb / se2) ** 2 / (len(b) - 1))
    se = math.sqrt(se2)
    t_stat = out["diff"] / se
    half = _t_quantile(df) * se
    out.update(ci95=[out["diff"] - half, out["diff"] + half], t=t_stat, df=df,
               p_value=_t_two_sided(t_stat, df))
    return out


# -- genotypes -----------------------------------------------------------------------------------

def _cell_edges(genotypes: Sequence[dict]) -> list[dict[str, list[tuple[int, int, str]]]]:
    """Per genotype, per cell type, its edges as (node, input, op); a one-line GenotypeError
    naming the genotype and key when the shape is not a genotype's."""
    out = []
    for i, g in enumerate(genotypes):
        cells = g.get("cells") if isinstance(g, dict) else None
        if not isinstance(cells, dict):
            raise GenotypeError(f"genotype {i}: cells: expected an object of cell types, got {show(cells)}")
        edges: dict[str, list[tuple[int, int, str]]] = {}
        for cell_type, cell in cells.items():
            raw = cell.get("edges") if isinstance(cell, dict) else None
            if not isinstance(raw, list):
                raise GenotypeError(f"genotype {i}: cells.{cell_type}.edges: expected a list, got {show(raw)}")
            for j, e in enumerate(raw):
                if not (isinstance(e, dict) and isinstance(e.get("op"), str)
                        and all(isinstance(e.get(k), int) and not isinstance(e.get(k), bool)
                                for k in ("node", "input"))):
                    raise GenotypeError(f"genotype {i}: cells.{cell_type}.edges[{j}]: expected "
                                        f"{{\"node\": int, \"input\": int, \"op\": str}}, got {show(e)}")
            edges[str(cell_type)] = [(e["node"], e["input"], e["op"]) for e in raw]
        out.append(edges)
    return out


def _cell_types(cells: list[dict[str, list]]) -> list[str]:
    """Every cell type of the genotypes, in the order first seen."""
    return list(dict.fromkeys(ct for g in cells for ct in g))


def _jaccard(a: list[tuple], b: list[tuple]) -> float:
    """|a & b| / |a | b| of two multisets (1.0 when both are empty)."""
    from collections import Counter

    ca, cb = Counter(a), Counter(b)
    union = sum((ca | cb).values())
    return sum((ca & cb).values()) / union if union else 1.0


def genotype_stability(genotypes: Sequence[dict]) -> dict:
    """How alike the genotypes of an arm's seeds are, per cell type: ``edge_agreement`` and
    ``op_agreement``, the mean over all pairs of genotypes of the Jaccard index of their edges,
    an edge being (node, input) for the first and (node, input, op) for the second, and ``pairs``,
    the number of pairs. A cell type a genotype lacks counts as a cell without edges. Fewer than
    two genotypes: None agreements and 0 pairs."""
    cells = _cell_edges(genotypes)
    out = {}
    for ct in _cell_types(cells):
        pairs = list(combinations([g.get(ct, []) for g in cells], 2))
        if not pairs:
            out[ct] = {"edge_agreement": None, "op_agreement": None, "pairs": 0}
            continue
        edge = [_jaccard([e[:2] for e in x], [e[:2] for e in y]) for x, y in pairs]
        op = [_jaccard(x, y) for x, y in pairs]
        out[ct] = {"edge_agreement": math.fsum(edge) / len(pairs), "op_agreement": math.fsum(op) / len(pairs),
                   "pairs": len(pairs)}
    return out


def op_frequency(genotypes: Sequence[dict]) -> dict:
    """Per cell type, the fraction of its edges (over all the genotypes) that each op takes,
    every op seen (skip connections included: the collapse signal), sorted by op name."""
    cells = _cell_edges(genotypes)
    out = {}
    for ct in _cell_types(cells):
        ops = [e[2] for g in cells for e in g.get(ct, [])]
        out[ct] = {op: ops.count(op) / len(ops) for op in sorted(set(ops))}
    return out


# -- trial records -------------------------------------------------------------------------------

def _where(trial: Any, index: int) -> str:
    """How an error names a trial: its run directory, else its arm and seed, else its position."""
    if isinstance(trial, dict):
        if isinstance(trial.get("run_dir"), str) and trial["run_dir"]:
            return trial["run_dir"]
        if isinstance(trial.get("arm"), str) and "seed" in trial:
            return f"{trial['arm']}/seed-{show(trial['seed'])}"
    return f"trial {index}"


def _number(trial: dict, key: str, where: str, integer: bool = False) -> float | int | None:
    """``trial[key]`` as a finite number, or None when absent, null or not finite (NaN, inf)."""
    value = trial.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int if integer else (int, float))):
        kind = "an integer" if integer else "a number"
        raise RunDirError(f"{where}: {key}: expected {kind} or null, got {show(value)}")
    return value if math.isfinite(value) else None


def _clean_trial(trial: Any, index: int, arms: set[str], seeds: set[int]) -> dict:
    """The trial record checked and normalized: every key present, numbers finite or None.
    A record the runner could not have built is one RunDirError line naming the trial and key."""
    where = _where(trial, index)
    if not isinstance(trial, dict):
        raise RunDirError(f"{where}: expected a trial record (an object), got {show(trial)}")
    arm, seed, status = trial.get("arm"), trial.get("seed"), trial.get("status")
    if arm not in arms:
        raise RunDirError(f"{where}: arm: {show(arm)} is not an arm of the study ({', '.join(sorted(arms))})")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed not in seeds:
        raise RunDirError(f"{where}: seed: {show(seed)} is not a seed of the study")
    if status not in STATUSES:
        raise RunDirError(f"{where}: status: expected one of {', '.join(STATUSES)}, got {show(status)}")
    error, stages, genotype = trial.get("error"), trial.get("stages") or [], trial.get("genotype")
    if error is not None and not isinstance(error, str):
        raise RunDirError(f"{where}: error: expected a string or null, got {show(error)}")
    if not isinstance(stages, list) or not all(
            isinstance(s, dict) and _finite(s.get("num_candidate_ops")) for s in stages):
        raise RunDirError(f"{where}: stages: expected a list of {{\"num_candidate_ops\": int, ...}}, "
                          f"got {show(stages)}")
    if genotype is not None:
        try:
            _cell_edges([genotype])
        except GenotypeError as exc:
            raise RunDirError(f"{where}: {str(exc).removeprefix('genotype 0: ')}") from None
    gpus = _number(trial, "gpus", where, integer=True) or 0
    return {"arm": arm, "seed": seed, "status": status, "error": error, "run_dir": trial.get("run_dir"),
            **{k: _number(trial, k, where) for k in (*METRICS, "search_seconds", "eval_seconds")},
            "params": _number(trial, "params", where, integer=True),
            "flops": _number(trial, "flops", where, integer=True),
            "device": trial.get("device"), "gpus": gpus, "stages": stages, "genotype": genotype}


def _by_arm(study: dict, trials: Sequence[dict]) -> dict[str, list[dict]]:
    """The checked trial records of every arm, in the study's arm order and by seed; a seed of the
    study with no record is a pending trial. Two records of one arm and seed are an error."""
    labels = [arm["label"] for arm in study["arms"]]
    seeds = list(study["seeds"])
    out: dict[str, dict[int, dict]] = {label: {} for label in labels}
    for i, trial in enumerate(trials):
        rec = _clean_trial(trial, i, set(labels), set(seeds))
        if rec["seed"] in out[rec["arm"]]:
            raise RunDirError(f"{_where(trial, i)}: arm {rec['arm']!r} seed {rec['seed']}: two trial records")
        out[rec["arm"]][rec["seed"]] = rec
    for label in labels:
        for seed in seeds:
            out[label].setdefault(seed, {"arm": label, "seed": seed, "status": "pending", "error": None})
    return {label: [recs[s] for s in sorted(recs)] for label, recs in out.items()}


# -- the report ----------------------------------------------------------------------------------

def _summary(finished: list[dict], key: str) -> dict:
    have = [t for t in finished if t.get(key) is not None]
    return summarize([t[key] for t in have], [t["seed"] for t in have])


def _candidate_ops(finished: list[dict]) -> list[float]:
    """Per stage, the mean number of candidate ops over the finished trials that have the stage."""
    depth = max((len(t["stages"]) for t in finished), default=0)
    out = []
    for i in range(depth):
        counts = [t["stages"][i]["num_candidate_ops"] for t in finished if len(t["stages"]) > i]
        out.append(math.fsum(counts) / len(counts))
    return out


def _arm_report(arm: dict, records: list[dict]) -> dict:
    """One arm's entry of ``report.json``."""
    finished = [t for t in records if t["status"] == "finished"]
    genotypes = [t["genotype"] for t in finished if t.get("genotype") is not None]
    gpu = [t for t in finished if t["gpus"] > 0 and t["search_seconds"] is not None]
    out: dict[str, Any] = {
        "spec": arm.get("spec"), "set": list(arm.get("set") or []),
        "trials": len(records), "done": len(finished),
        "failed": [{"seed": t["seed"], "status": t["status"], "error": t["error"]}
                   for t in records if t["status"] != "finished"],
        "search_val_acc": _summary(finished, "search_val_acc"),
    }
    if any(t["test_acc"] is not None for t in finished):
        out["test_acc"] = _summary(finished, "test_acc")
    out.update({key: _summary(finished, key) for key in ("params", "flops", "search_seconds", "eval_seconds")})
    out["device_hours"] = math.fsum(t["search_seconds"] * t["gpus"] for t in gpu) / 3600 if gpu else None
    out["devices"] = sorted({str(t["device"]) for t in finished if t.get("device") is not None})
    out["candidate_ops_per_stage"] = _candidate_ops(finished)
    out["stability"] = genotype_stability(genotypes)
    out["op_frequency"] = op_frequency(genotypes)
    return out


def _comparisons(arms: dict[str, dict]) -> list[dict]:
    """Welch's test between every two arms (in the study's order) for every metric both report."""
    out = []
    for (a, ra), (b, rb) in combinations(arms.items(), 2):
        for metric in METRICS:
            if metric in ra and metric in rb:
                out.append({"a": a, "b": b, "metric": metric,
                            **welch(ra[metric]["values"], rb[metric]["values"])})
    return out


def _json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _check_study(study: Any) -> None:
    if not isinstance(study, dict):
        raise RunDirError(f"study: expected an object, got {show(study)}")
    seeds, arms = study.get("seeds"), study.get("arms")
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise RunDirError(f"study: seeds: expected a list of integers, got {show(seeds)}")
    if not isinstance(arms, list) or not all(isinstance(a, dict) and isinstance(a.get("label"), str) for a in arms):
        raise RunDirError(f"study: arms: expected a list of {{\"label\": str, ...}}, got {show(arms)}")
    labels = [a["label"] for a in arms]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise RunDirError(f"study: arms: label {twice[0]!r} is used twice")


def build_report(study: dict, trials: Sequence[dict]) -> dict:
    """What ``report.json`` holds: per arm the summaries of its finished trials (accuracies,
    sizes, search cost, candidate ops per stage, genotype stability and op frequencies) and the
    trials that did not finish; between every two arms, Welch's test per metric. Independent of
    the order of ``trials``; free of NaN. A record that is not a trial's is a RunDirError line."""
    _check_study(study)
    records = _by_arm(study, trials)
    arms = {arm["label"]: _arm_report(arm, records[arm["label"]]) for arm in study["arms"]}
    return _json_safe({"format": FORMAT, "version": VERSION, "study": study.get("name"),
                       "seeds": sorted(study["seeds"]), "statistics": dict(STATISTICS),
                       "arms": arms, "comparisons": _comparisons(arms)})


def without_timing(report: Any) -> Any:
    """``report`` without the keys of :data:`TIMING_FIELDS` at any depth: what a resumed study's
    report shares with an uninterrupted one's."""
    if isinstance(report, dict):
        return {k: without_timing(v) for k, v in report.items() if k not in TIMING_FIELDS}
    if isinstance(report, list):
        return [without_timing(v) for v in report]
    return report


# -- text: report.md and the CLI's table ---------------------------------------------------------

def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def _acc(s: dict | None) -> str:
    """An accuracy summary as ``mean ± std [lo, hi]`` in percent."""
    if not s or s["n"] == 0:
        return "-"
    if s["std"] is None:
        return f"{_pct(s['mean'])} (n=1)"
    lo, hi = s["ci95"]
    return f"{_pct(s['mean'])} ± {_pct(s['std'])} [{_pct(lo)}, {_pct(hi)}]"


def _si(x: float | None) -> str:
    """A count with an SI suffix: 1.23M, 45.6k."""
    if x is None:
        return "-"
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.3g}"


def _seconds(s: dict | None) -> str:
    if not s or s["n"] == 0:
        return "-"
    return f"{s['mean']:.1f}" + (f" ± {s['std']:.1f}" if s["std"] is not None else "")


def _stages(ops: list[float]) -> str:
    return " → ".join(f"{x:g}" if float(x).is_integer() else f"{x:.1f}" for x in ops) or "-"


def _p(p: float | None) -> str:
    return "-" if p is None else ("< 1e-4" if p < 1e-4 else f"{p:.4f}")


def _has(report: dict, key: str) -> bool:
    return any(arm.get(key) is not None for arm in report["arms"].values())


def _arm_row(arm: dict, test: bool, gpu: bool) -> list[str]:
    """One arm's cells of the summary table (markdown and CLI alike)."""
    row = [f"{arm['done']}/{arm['trials']}", _acc(arm["search_val_acc"])]
    row += [_acc(arm.get("test_acc"))] if test else []
    row += [_si(arm["params"]["mean"]), _si(arm["flops"]["mean"]), _seconds(arm["search_seconds"])]
    row += [f"{arm['device_hours']:.3g}" if arm["device_hours"] is not None else "-"] if gpu else []
    return row + [_stages(arm["candidate_ops_per_stage"])]


def _arm_header(test: bool, gpu: bool) -> list[str]:
    return (["arm", "done", "search val acc %"] + (["test acc %"] if test else [])
            + ["params", "FLOPs", "search s"] + (["device-h"] if gpu else []) + ["candidate ops / stage"])


def _md(text: Any) -> str:
    """A markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(map(_md, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(_md, row)) + " |" for row in rows]


def _md_arms(report: dict) -> list[str]:
    test, gpu = _has(report, "test_acc"), _has(report, "device_hours")
    rows = [[label, *_arm_row(arm, test, gpu)] for label, arm in report["arms"].items()]
    lines = ["## Arms", "", "Accuracies: mean ± standard deviation [95 % confidence interval], in percent, "
             "over the finished seeds.", "", *_md_table(_arm_header(test, gpu), rows), ""]
    specs = [[label, arm["spec"], " ".join(arm["set"]) or "-"] for label, arm in report["arms"].items()]
    return lines + _md_table(["arm", "spec", "--set"], specs) + [""]


def _md_seeds(report: dict) -> list[str]:
    """Per arm and seed: the accuracies of the finished trials, and why the others did not finish."""
    rows = []
    for label, arm in report["arms"].items():
        by_seed = {f["seed"]: [f["status"], "-", "-", f["error"] or ""] for f in arm["failed"]}
        for seed in report["seeds"]:
            by_seed.setdefault(seed, ["finished", "-", "-", ""])
        for col, metric in ((1, "search_val_acc"), (2, "test_acc")):
            s = arm.get(metric) or {"values": [], "seeds": []}
            for seed, value in zip(s["seeds"], s["values"]):
                by_seed[seed][col] = _pct(value)
        rows += [[label, seed, *by_seed[seed]] for seed in sorted(by_seed)]
    return ["## Trials", "", *_md_table(["arm", "seed", "status", "search val acc %", "test acc %", "error"], rows), ""]


def _md_genotypes(report: dict) -> list[str]:
    rows = [[label, ct, _pct(s["edge_agreement"], 1), _pct(s["op_agreement"], 1), s["pairs"]]
            for label, arm in report["arms"].items() for ct, s in arm["stability"].items()]
    lines = ["## Genotypes", "", "Stability across seeds: mean pairwise agreement (Jaccard, in percent) of the "
             "edges (node, input) and of the edges with their ops.", "",
             *_md_table(["arm", "cell", "edge agreement %", "op agreement %", "pairs"], rows), ""]
    for ct in dict.fromkeys(ct for arm in report["arms"].values() for ct in arm["op_frequency"]):
        ops = sorted({op for arm in report["arms"].values() for op in arm["op_frequency"].get(ct, {})})
        rows = [[label, *(_pct(arm["op_frequency"].get(ct, {}).get(op, 0.0), 1) for op in ops)]
                for label, arm in report["arms"].items() if ct in arm["op_frequency"]]
        lines += [f"Op frequency, {ct} cells (percent of the edges):", "", *_md_table(["arm", *ops], rows), ""]
    return lines


def _md_comparisons(report: dict) -> list[str]:
    rows = []
    for c in report["comparisons"]:
        lo, hi = c["ci95"]
        ci = "-" if lo is None else f"[{100 * lo:+.2f}, {100 * hi:+.2f}]"
        diff = "-" if c["diff"] is None else f"{100 * c['diff']:+.2f}"
        df = "-" if c["df"] is None else f"{c['df']:.1f}"
        rows.append([c["a"], c["b"], c["metric"], diff, ci, _p(c["p_value"]), df, c.get("note", "")])
    return ["## Comparisons", "", f"Difference of means (a - b) in percentage points, its 95 % confidence "
            f"interval and the p-value of {report['statistics']['test']}.", "",
            *_md_table(["a", "b", "metric", "diff (pp)", "95 % CI", "p", "df", "note"], rows), ""]


def report_markdown(report: dict, plots: Sequence[str] | None = None) -> str:
    """``report.md``: the arms' table, every trial, the genotypes' stability and op frequencies,
    the comparisons, and links to ``plots`` (the files :func:`plot_report` wrote; default: all
    of :data:`PLOT_FILES`)."""
    seeds = ", ".join(map(str, report["seeds"])) or "-"
    lines = [f"# Study report: {report['study']}", "", f"Seeds: {seeds}. Intervals: {report['statistics']['ci']}; "
             f"tests: {report['statistics']['test']}.", ""]
    lines += _md_arms(report) + _md_seeds(report) + _md_genotypes(report) + _md_comparisons(report)
    files = PLOT_FILES if plots is None else plots
    if files:
        lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in files] + [""]
    return "\n".join(lines)


def report_table(report: dict) -> Any:
    """The table the CLI prints: one row per arm (a ``rich.table.Table``)."""
    from rich.table import Table
    from rich.text import Text

    test, gpu = _has(report, "test_acc"), _has(report, "device_hours")
    table = Table(title=Text(f"study {report['study']}"), title_justify="left")
    for i, name in enumerate(_arm_header(test, gpu)):
        table.add_column(name, justify="left" if i == 0 else "right")
    for label, arm in report["arms"].items():
        table.add_row(*(Text(cell) for cell in [label, *_arm_row(arm, test, gpu)]))
    return table


# -- plots ---------------------------------------------------------------------------------------

def _short(label: str, width: int = 24) -> str:
    return label if len(label) <= width else label[:width - 1] + "…"


def _jitter(i: int, n: int) -> float:
    """A fixed horizontal offset for the i-th of n points (the same picture every time)."""
    return 0.0 if n < 2 else -0.15 + 0.3 * i / (n - 1)


def _draw_accuracy(path: Path, report: dict) -> None:
    metrics = [m for m in METRICS if any((arm.get(m) or {}).get("n") for arm in report["arms"].values())]
    if not metrics:
        raise ValueError("no finished trial has an accuracy")
    labels = list(report["arms"])
    fig = _figure(max(4.0, 1.2 * len(labels) + 2) * len(metrics), 4.0)
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics):
        for x, label in enumerate(labels):
            s = report["arms"][label].get(metric)
            if not s or s["n"] == 0:
                continue
            mean, (lo, hi) = s["mean"], s["ci95"]
            err = [[100 * (mean - lo)], [100 * (hi - mean)]] if lo is not None else None
            ax.errorbar([x], [100 * mean], yerr=err, fmt="o", color=f"C{x % 10}", capsize=6, ms=8, zorder=3)
            ax.scatter([x + 0.25 + _jitter(i, s["n"]) / 2 for i in range(s["n"])],
                       [100 * v for v in s["values"]], color=f"C{x % 10}", alpha=0.5, s=18, zorder=2)
        ax.set_xticks(range(len(labels)), [_short(label) for label in labels], rotation=20, ha="right")
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{metric}: mean and 95 % CI, dots = seeds", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=100)


def _draw_ops(path: Path, report: dict) -> None:
    ops_figure(report).savefig(path, dpi=100)


def ops_figure(report: dict) -> Any:
    """The figure of the op-frequency heatmap: per cell type, arms x ops, % of edges per op."""
    arms = report["arms"]
    cell_types = list(dict.fromkeys(ct for arm in arms.values() for ct in arm["op_frequency"]))
    if not cell_types:
        raise ValueError("no finished trial has a genotype")
    panels = []
    for ct in cell_types:
        labels = [label for label, arm in arms.items() if ct in arm["op_frequency"]]
        ops = sorted({op for label in labels for op in arms[label]["op_frequency"][ct]})
        panels.append((ct, labels, ops, [[arms[label]["op_frequency"][ct].get(op, 0.0) for op in ops]
                                         for label in labels]))
    width = max(4.0, max(0.7 * len(p[2]) for p in panels) + 2.5)
    fig = _figure(width * len(panels), 1.0 + 0.5 * max(len(p[1]) for p in panels) + 1.5)
    for ax, (ct, labels, ops, grid) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        image = ax.imshow([[100 * v for v in row] for row in grid], vmin=0.0, vmax=100.0, cmap="viridis",
                          aspect="auto")
        for r, row in enumerate(grid):
            for c, value in enumerate(row):
                ax.text(c, r, f"{100 * value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.6 else "black")
        ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right", fontsize=7)
        for tick, op in zip(ax.get_xticklabels(), ops):  # each op in its colour of every figure
            tick.set_color(_op_color(op))
        ax.set_yticks(range(len(labels)), [_short(label) for label in labels], fontsize=8)
        ax.set_title(f"{ct} cells: % of edges per op", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def _draw_time(path: Path, report: dict, trials: Sequence[dict]) -> None:
    time_figure(report, trials).savefig(path, dpi=100)


def time_figure(report: dict, trials: Sequence[dict]) -> Any:
    """The figure of accuracy against search time: one dot per finished seed, one colour per arm."""
    labels = list(report["arms"])
    fig = _figure(6.0, 4.2)
    ax = fig.subplots()
    drawn = 0
    for x, label in enumerate(labels):
        points = sorted((t["seed"], t["search_seconds"], t["search_val_acc"]) for t in trials
                        if isinstance(t, dict) and t.get("arm") == label and t.get("status") == "finished"
                        and _finite(t.get("search_seconds")) and _finite(t.get("search_val_acc")))
        if points:
            ax.scatter([p[1] for p in points], [100 * p[2] for p in points], color=f"C{x % 10}",
                       label=_short(label), s=30)
            drawn += len(points)
    if not drawn:
        raise ValueError("no finished trial has both a search time and a search validation accuracy")
    ax.set_xlabel("search wall time (s)")
    ax.set_ylabel("search_val_acc (%)")
    ax.set_title("accuracy against search time, one dot per seed", fontsize=9)
    ax.grid(alpha=0.3)
    from .figures import legend_outside

    legend_outside(fig, *ax.get_legend_handles_labels(), ncol=min(len(labels), 3), fontsize=7)
    return fig


def _figure(width: float, height: float) -> Any:
    """The core's figure helper (:func:`nasreg._core.figures.new_figure`), imported when a figure is drawn."""
    from .figures import new_figure as make

    return make(width, height)


def _op_color(op: str) -> str:
    """An op's colour in every figure (:func:`nasreg._core.figures.op_color`)."""
    from .figures import op_color

    return op_color(op)


def plot_report(report: dict, trials: Sequence[dict], out_dir: Path,
                warn: Callable[[str], None] | None = None) -> list[str]:
    """Write :data:`PLOT_FILES` into ``out_dir``: the accuracy per arm and metric (mean with 95 %
    CI error bars, the seeds as dots), the op frequencies as a heatmap (arms x ops, one panel per
    cell type, each op's name in its colour of every figure) and the search validation accuracy
    against search seconds (one colour per arm, the legend below the axes).
    A figure that cannot be drawn costs one line ``warning: study report: could not write ...``
    given to ``warn`` (default: stderr) and never raises. Returns the names of the files written."""
    from .figures import draw_guarded

    out_dir = Path(out_dir)
    jobs = [(PLOT_FILES[0], _draw_accuracy, (report,)), (PLOT_FILES[1], _draw_ops, (report,)),
            (PLOT_FILES[2], _draw_time, (report, trials))]
    written = []
    for name, draw, args in jobs:
        if draw_guarded(name, draw, out_dir / name, *args, prefix="study report", warn_with=warn):
            written.append(name)
    return written
