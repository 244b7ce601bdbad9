"""``nasreg show RUN_DIR``: a summary of any run directory, search or training, finished or not.

It reads what the directory holds (``spec.toml``, ``genotype.json``, ``metrics.jsonl``,
``summary.json`` / ``stages.json`` of a search, ``results.json`` of a training run, and a
search's ``eval/`` evaluation) and prints the spec, the genotype, the last epochs' metrics and
the final figures. A missing or unreadable directory, or one that holds no run, is a
:class:`nasreg.RunDirError` (one line).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import Genotype, GenotypeError, NasregError, RunDir, RunDirError

#: Files any of which makes a folder a run directory.
RUN_FILES = (RunDir.SPEC_FILE, RunDir.GENOTYPE_FILE, RunDir.METRICS_FILE, RunDir.SUMMARY_FILE, RunDir.RESULTS_FILE)


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of ``metrics.jsonl`` (bounded and schema-checked, see :mod:`nasreg._core.readback`)
    and whether its last line was cut (a crash mid-append: skipped, with a note). A line damaged
    otherwise is a :class:`nasreg.RunDirError` naming the file, the line and the key."""
    run = RunDir(path.parent)
    records = run.read_jsonl(path.name)  # any damaged line but a cut last one: one error line
    return records, len(run.scan_jsonl(path.name)[1])


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
            raw = RunDir(path).read_toml(RunDir.SPEC_FILE)
        except NasregError:
            return "run"
        return "search" if "search_space" in raw else "train"
    return "run"


@dataclass
class _Contents:
    """What a run directory holds, every file read and checked before anything is printed (a
    damaged file is one error line, not half a summary)."""

    spec: dict[str, Any] | None = None
    genotype: Genotype | None = None
    stages: list[dict[str, Any]] | None = None
    gradients: dict[str, Any] | None = None
    metrics: tuple[list[dict[str, Any]], int] | None = None  # records, lines skipped
    summary: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    eval: "_Contents | None" = None


def _read(run: RunDir, kind: str) -> _Contents:
    """Read (bounded, schema-checked: :mod:`nasreg._core.readback`) every file ``show`` shows."""
    out = _Contents()
    if run.spec.is_file():
        out.spec = run.read_toml(RunDir.SPEC_FILE)  # bounded: size, nesting, integers (as a spec is read)
    if run.genotype.is_file():
        try:  # read_json checks it as a genotype; from_dict then cannot fail
            out.genotype = Genotype.from_dict(run.read_json(RunDir.GENOTYPE_FILE, expect=None),
                                              source=str(run.genotype))
        except GenotypeError as exc:
            raise RunDirError(str(exc)) from None
    if kind == "search" and run.stages.is_file():
        out.stages = run.read_json(RunDir.STAGES_FILE, expect=list)
    if kind == "search" and run.gradients.is_file():
        out.gradients = run.read_json(RunDir.GRADIENTS_FILE)
    if run.metrics.is_file():
        out.metrics = _read_metrics(run.metrics)
    if run.summary.is_file():
        out.summary = run.read_json(RunDir.SUMMARY_FILE)
    if run.results.is_file():
        out.results = run.read_json(RunDir.RESULTS_FILE)
    if kind == "search" and run.eval.path.is_dir():
        out.eval = _read(run.eval, "eval")
    return out


def show_run(path: Path, console: Console, last: int = 5) -> None:
    """Print what the run directory ``path`` holds (after reading all of it: see :func:`_read`)."""
    run = RunDir(path)
    kind = check_run_dir(run.path)
    got = _read(run, kind)
    done = {"search": got.summary, "train": got.results}.get(kind)
    status = "finished" if done is not None else "unfinished (or in progress)"
    if done is not None and done.get("status") == "failed":
        status = f"failed: {done.get('error', 'no reason recorded')}"
    console.print(f"[bold]{kind} run[/] {escape(str(run.path))}: {escape(status)}", highlight=False)
    _show_spec(got.spec, console)
    if got.genotype is not None:
        console.print(f"[bold]genotype[/] ({escape(got.genotype.space)})\n" + escape(got.genotype.describe()),
                      highlight=False)
    if got.stages is not None:
        _show_stages(got.stages, got.gradients, console)
    _show_metrics(got.metrics, run.metrics, console, last)
    for data, title in ((got.summary, "summary"), (got.results, "results")):
        if data is not None:
            _show_figures(data, title, console)
    if got.eval is not None:
        console.rule(f"evaluation ({RunDir.EVAL_DIR}/)")
        _show_metrics(got.eval.metrics, run.eval.metrics, console, last)
        if got.eval.results is not None:
            _show_figures(got.eval.results, "results", console)
        else:
            console.print("[dim]no results.json yet: the evaluation did not finish[/]")


def _show_spec(raw: dict[str, Any] | None, console: Console) -> None:
    if raw is None:
        console.print("[dim]no spec.toml[/]")
        return
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


def _show_stages(stages: list[dict[str, Any]], gradients: dict[str, Any] | None, console: Console) -> None:
    table = Table(title="stages", title_justify="left")
    for col in ("stage", "epochs", "weights", "candidate ops", "s/epoch"):
        table.add_column(col, justify="right")
    for s in stages:
        ep = s["epoch_seconds"]
        table.add_row(_fmt(s.get("stage")), _fmt(s.get("epochs")), _fmt(s.get("num_weights")),
                      _fmt(s.get("num_candidate_ops")), f"{sum(ep) / max(len(ep), 1):.2f}")
    console.print(table)
    if gradients is not None:
        console.print(f"architecture gradients ({RunDir.GRADIENTS_FILE}): {escape(gradients['stat'])} per joint "
                      f"epoch, {len(gradients['stages'])} stage(s) recorded", highlight=False)


def _show_metrics(read: tuple[list[dict[str, Any]], int] | None, path: Path, console: Console, last: int) -> None:
    if read is None:
        console.print("[dim]no metrics yet[/]")
        return
    records, bad = read
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
        table.add_row(escape(key), escape(_fmt(value)))
    console.print(table)
