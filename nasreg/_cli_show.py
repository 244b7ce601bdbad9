"""``nasreg show RUN_DIR``: a summary of any run directory, search or training, finished or not.

It reads what the directory holds (``spec.toml``, ``genotype.json``, ``metrics.jsonl``,
``summary.json`` / ``stages.json`` of a search, ``results.json`` of a training run, and a
search's ``eval/`` evaluation) and prints the spec, the genotype, the last epochs' metrics and
the final figures. A missing or unreadable directory, or one that holds no run, is a
:class:`nasreg.RunDirError` (one line).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import Genotype, GenotypeError, RunDir, RunDirError

#: Files any of which makes a folder a run directory.
RUN_FILES = (RunDir.SPEC_FILE, RunDir.GENOTYPE_FILE, RunDir.METRICS_FILE, RunDir.SUMMARY_FILE, RunDir.RESULTS_FILE)


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of ``metrics.jsonl`` and how many lines were unreadable (a crash mid-line)."""
    records, damaged, _lines = RunDir(path.parent).scan_jsonl(path.name)
    return records, len(damaged)


#: Metrics ``show`` leaves out of its table (still in metrics.jsonl), and short column headers.
HIDDEN_METRICS = ("wall_seconds", "peak_memory_mb", "test_error", "joint")
METRIC_HEADERS = {"drop_path_prob": "drop path", "epoch_seconds": "s/epoch", "test_error": "test err"}


def _spec_value(value: Any) -> str:
    """A spec value as the spec writes it (``3e-4`` as ``0.0003``, strings unquoted)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_spec_value(v) for v in value) + "]"
    return _fmt(value)


def _short(value: Any) -> str:
    """A metric in a table cell: floats with 3 significant digits."""
    if isinstance(value, float) and not isinstance(value, bool):
        return f"{value:.3g}"
    return _fmt(value)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "-"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.4g}"
        return f"{value:.4f}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def check_run_dir(path: Path) -> str:
    """``"search"``, ``"train"`` or ``"run"`` (kind unknown yet); RunDirError if not a run directory."""
    if not path.exists():
        raise RunDirError(f"{path}: no such directory")
    if not path.is_dir():
        raise RunDirError(f"{path}: not a directory (nasreg show takes a run directory)")
    try:
        names = {p.name for p in path.iterdir()}
    except OSError as exc:
        raise RunDirError(f"{path}: cannot read directory: {exc.strerror or exc}") from None
    if not names & set(RUN_FILES):
        raise RunDirError(f"{path}: not a nasreg run directory (none of {', '.join(RUN_FILES)})")
    if RunDir.RESULTS_FILE in names:
        return "train"
    if names & {RunDir.SUMMARY_FILE, RunDir.STAGES_FILE, RunDir.GRADIENTS_FILE}:
        return "search"
    spec = path / RunDir.SPEC_FILE
    if spec.is_file():
        try:
            raw = tomllib.loads(spec.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return "run"
        return "search" if "search_space" in raw else "train"
    return "run"


def show_run(path: Path, console: Console, last: int = 5) -> None:
    run = RunDir(path)
    kind = check_run_dir(run.path)
    done_file = {"search": run.summary, "train": run.results}.get(kind)
    status = "finished" if done_file is not None and done_file.is_file() else "unfinished (or in progress)"
    console.print(f"[bold]{kind} run[/] {escape(str(run.path))}: {status}", highlight=False)
    _show_spec(run.spec, console)
    _show_genotype(run, console)
    if kind == "search" and run.stages.is_file():
        _show_stages(run, console)
    _show_metrics(run.metrics, console, last)
    if run.summary.is_file():
        _show_figures(run.read_json(RunDir.SUMMARY_FILE), "summary", console)
    if run.results.is_file():
        _show_figures(run.read_json(RunDir.RESULTS_FILE), "results", console)
    evaluation = run.eval
    if kind == "search" and evaluation.path.is_dir():
        console.rule(f"evaluation ({RunDir.EVAL_DIR}/)")
        _show_metrics(evaluation.metrics, console, last)
        if evaluation.results.is_file():
            _show_figures(evaluation.read_json(RunDir.RESULTS_FILE), "results", console)
        else:
            console.print("[dim]no results.json yet: the evaluation did not finish[/]")


def _show_spec(path: Path, console: Console) -> None:
    if not path.is_file():
        console.print("[dim]no spec.toml[/]")
        return
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RunDirError(f"{path}: not a readable spec: {exc}") from None
    table = Table(title="spec", show_header=False, title_justify="left")
    table.add_column("table", style="cyan")
    table.add_column("keys")

    def rows(prefix: str, node: dict[str, Any]) -> None:
        flat = [f"{k} = {_spec_value(v)}" for k, v in node.items() if not isinstance(v, dict)]
        if flat:
            table.add_row(escape(f"[{prefix}]"), escape(", ".join(flat)))
        for k, v in node.items():
            if isinstance(v, dict):
                rows(f"{prefix}.{k}", v)

    for section, node in raw.items():
        if isinstance(node, dict):
            rows(section, node)
    console.print(table)


def _show_genotype(run: RunDir, console: Console) -> None:
    if not run.genotype.is_file():
        return
    try:
        genotype = Genotype.from_dict(run.read_json(RunDir.GENOTYPE_FILE, expect=None), source=str(run.genotype))
    except GenotypeError as exc:
        raise RunDirError(str(exc)) from None
    console.print(f"[bold]genotype[/] ({escape(genotype.space)})\n" + escape(genotype.describe()), highlight=False)


def _show_stages(run: RunDir, console: Console) -> None:
    stages = run.read_json(RunDir.STAGES_FILE, expect=None)
    if not isinstance(stages, list):
        return
    table = Table(title="stages", title_justify="left")
    for col in ("stage", "epochs", "weights", "candidate ops", "s/epoch"):
        table.add_column(col, justify="right")
    for s in stages:
        if not isinstance(s, dict):
            continue
        ep = s.get("epoch_seconds") or []
        table.add_row(_fmt(s.get("stage")), _fmt(s.get("epochs")), _fmt(s.get("num_weights")),
                      _fmt(s.get("num_candidate_ops")), f"{sum(ep) / max(len(ep), 1):.2f}")
    console.print(table)


def _show_metrics(path: Path, console: Console, last: int) -> None:
    if not path.is_file():
        console.print("[dim]no metrics yet[/]")
        return
    records, bad = _read_metrics(path)
    if not records:
        console.print("[dim]no epoch recorded yet[/]")
        return
    shown = records[-last:] if last > 0 else records
    columns: list[str] = []
    for r in shown:
        for k, v in r.items():
            if k not in columns and not isinstance(v, (dict, list)) and k not in HIDDEN_METRICS:
                columns.append(k)
    table = Table(title=f"metrics (last {len(shown)} of {len(records)} epochs)", title_justify="left")
    for col in columns:  # a narrow terminal folds a number onto two lines rather than cut it
        table.add_column(escape(METRIC_HEADERS.get(col, col.replace("_", " "))), justify="right",
                         overflow="fold")
    for r in shown:
        table.add_row(*[_short(r.get(c)) for c in columns])
    console.print(table)
    if bad:
        console.print(f"[yellow]{bad} unreadable line(s) in {escape(str(path))} skipped[/]")


def _show_figures(data: Any, title: str, console: Console) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="cyan")
    table.add_column("value")
    for key, value in data.items():
        if key in ("genotype", "stages"):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
        table.add_row(key, escape(_fmt(value)))
    console.print(table)
