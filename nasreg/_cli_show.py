"""``nasreg show RUN_DIR``: a summary of any run directory, search or training, finished or not;
and ``nasreg list-plugins``: the plugins and their entries, compact (see :func:`print_plugins`).

It reads what the directory holds (``spec.toml``, ``genotype.json``, ``metrics.jsonl``,
``summary.json`` / ``stages.json`` of a search, ``results.json`` of a training run, and a
search's ``eval/`` evaluation) and prints the spec, the genotype, the last epochs' metrics and
the final figures. A missing or unreadable directory, or one that holds no run, is a
:class:`nasreg.RunDirError` (one line).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import Genotype, GenotypeError, NasregError, RunDir, RunDirError, entry_keys

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


# --- nasreg list-plugins ---------------------------------------------------------------------------

#: A factory shared by at least this many entries of one plugin makes them one family (one line).
FAMILY_MIN = 3
BUILT_IN = "built-in"


@dataclass
class Family:
    """Entries of one plugin and kind built by one factory function (the ``nas-layers`` grid's
    ``conv_{n}x{n}_{n}[_s{n}]`` ops: partials of one function): shown as one line."""

    plugin: str
    names: list[str]  # display names, in registration order

    @property
    def pattern(self) -> str:
        """The members' names with their numbers as ``{n}``: ``conv_{n}x{n}_{n}[_s{n}]``."""
        patterns = list(dict.fromkeys(re.sub(r"\d+", "{n}", n) for n in self.names))
        patterns.sort(key=len)
        first, rest = patterns[0], patterns[1:]
        tails = {p[len(first):] for p in rest if p.startswith(first)}
        if rest and len(tails) == 1 and all(p.startswith(first) for p in rest):
            return f"{first}[{tails.pop()}]"
        return " | ".join(patterns)

    def line(self) -> str:
        return f"{self.pattern} x{len(self.names)} ({self.names[0]} ... {self.names[-1]})"


def _factory_key(factory: Any) -> Any:
    """What entries built by one function share: the function's code (partials unwrapped, so
    closures and ``functools.partial`` of one function are the same), or the class."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    return getattr(factory, "__code__", factory)


def families(registry: Any) -> dict[str, Family]:
    """Qualified entry name -> its :class:`Family`, for the entries of ``registry`` that share a
    factory with at least ``FAMILY_MIN - 1`` others of their plugin."""
    groups: dict[tuple[str, Any], list[Any]] = {}
    for entry in registry:
        try:
            key = (entry.plugin, _factory_key(entry.factory))
            hash(key)
        except TypeError:  # an unhashable factory: a family of its own
            key = (entry.plugin, id(entry))
        groups.setdefault(key, []).append(entry)
    out: dict[str, Family] = {}
    for (plugin, _key), entries in groups.items():
        if len(entries) >= FAMILY_MIN:
            family = Family(plugin, [registry.display_name(e) for e in entries])
            out.update({e.qualified: family for e in entries})
    return out


def _kind_text(registry: Any, third_party: set[str]) -> Text:
    """One kind's entries, grouped by plugin (``darts: a, b; nasnet: c, <family>``); a
    third-party plugin's group tagged."""
    fams = families(registry)
    by_plugin: dict[str, list[str]] = {}
    seen: set[int] = set()
    for entry in registry:
        family = fams.get(entry.qualified)
        if family is not None:
            if id(family) in seen:
                continue
            seen.add(id(family))
            by_plugin.setdefault(entry.plugin, []).append(family.line())
        else:
            by_plugin.setdefault(entry.plugin, []).append(registry.display_name(entry))
    text = Text()
    for i, (plugin, names) in enumerate(by_plugin.items()):
        if i:
            text.append("; ")
        if plugin in third_party:
            text.append(f"{plugin} [third-party]", style="bold magenta")
        else:
            text.append(plugin, style="bold")
        text.append(": " + ", ".join(names))
    return text


def print_plugins(plugins: Any, console: Console) -> None:
    """``nasreg list-plugins``: the plugins (built-in ones on one line, third-party and failed
    ones one line each), then per kind its entries by plugin, a family of parametric entries as
    one line; what fits a screen (about 20 lines at 100 columns for nasreg's own plugins)."""
    from .cli import one_line

    infos = list(plugins.infos.values())
    built_in = [i for i in infos if i.source == BUILT_IN and i.ok]
    others = [i for i in infos if i not in built_in]
    third_party = {i.name for i in others}
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("what", style="cyan", no_wrap=True)
    table.add_column("entries", overflow="fold")
    table.add_row("built-in", Text(", ".join(f"{i.name} {i.version or ''}".strip() for i in built_in)))
    for info in others:
        where = f"{info.name} {info.version or ''}".strip() + f" ({info.source})"
        if info.ok:
            table.add_row("third-party", Text(where))
        else:
            table.add_row(Text("failed", style="bold red"),
                          Text.assemble(where, " failed: ", (one_line(info.error or ""), "red")))
    for registry in plugins.registries:
        if len(registry):
            table.add_row(registry.kind.replace("_", " "), _kind_text(registry, third_party))
    hooks = [(i.name, [h for h in i.hooks if not h.startswith("register_")]) for i in infos if i.ok]
    hooks_text = "; ".join(f"{name}: {', '.join(names)}" for name, names in hooks if names)
    if hooks_text:
        table.add_row("observers", Text(hooks_text))
    console.print(Text("nasreg plugins", style="bold") + Text(
        f" ({len(built_in)} built-in, {len(third_party)} other)"), highlight=False)
    console.print(table)
    console.print(Text("nasreg describe NAME: an entry's keys (kind/NAME or plugin:NAME to choose); "
                       "--json: every entry", style="dim"), soft_wrap=False)


def plugins_json(plugins: Any) -> dict[str, Any]:
    """``nasreg list-plugins --json``: every plugin, and every entry one by one with its plugin,
    description, spec keys (:func:`nasreg.entry_keys`) and, for a family member, its pattern."""
    registries: dict[str, Any] = {}
    for registry in plugins.registries:
        fams = families(registry)
        entries: dict[str, Any] = {}
        for e in registry:
            item: dict[str, Any] = {"plugin": e.plugin, "description": e.description,
                                    "keys": entry_keys(e, registry.kind)}
            if e.qualified in fams:
                item["family"] = fams[e.qualified].pattern
            entries[registry.display_name(e)] = item
        registries[registry.kind] = entries
    return {"plugins": [i.to_dict() for i in plugins.infos.values()], "registries": registries}

