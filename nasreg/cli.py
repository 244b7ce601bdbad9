"""The ``nasreg`` command line. Every user error prints one line and exits with status 2."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .errors import NasregError
from .registry import KINDS

console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn NasregError into one line and exit 2; show tracebacks only with --debug/NASREG_DEBUG."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NasregError as exc:
            if os.environ.get("NASREG_DEBUG"):
                raise
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nasreg")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
def main(debug: bool) -> None:
    """nasreg: declarative, plugin-based neural architecture search."""
    if debug:
        os.environ["NASREG_DEBUG"] = "1"


_set_option = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                           help="Override a spec key; VALUE is a TOML literal (a bare word is a string).")
_plugin_option = click.option("--plugin", "extra_plugins", multiple=True, metavar="MODULE|FILE.py",
                              help="Load an extra plugin module or file (repeatable).")


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@_set_option
@_plugin_option
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Run directory (default: [run] out_dir / [run] name, numbered if taken).")
@click.option("--force", is_flag=True, help="Replace an existing --out directory.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@handle_errors
def run(spec_path: Path, overrides: tuple[str, ...], extra_plugins: tuple[str, ...], out: Path | None,
        force: bool, quiet: bool) -> None:
    """Run the search a TOML spec describes."""
    from . import spec as spec_mod
    from .progress import QuietReporter, RichReporter
    from .rundir import create_run_dir
    from .search import prepare, run_search

    spec, plugins = spec_mod.load(spec_path, overrides, extra_plugins)
    prepared = prepare(spec, plugins)
    run_dir = create_run_dir(spec.run.out_dir, spec.run.name, out, force)
    reporter = QuietReporter() if quiet else RichReporter(err_console)
    try:
        summary = run_search(prepared, run_dir, reporter)
    finally:
        reporter.close()
    print_summary(summary)


@main.command()
@click.argument("spec_paths", metavar="SPEC...", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@_set_option
@_plugin_option
@handle_errors
def validate(spec_paths: tuple[Path, ...], overrides: tuple[str, ...], extra_plugins: tuple[str, ...]) -> None:
    """Check specs without running them (exit 2 at the first invalid one)."""
    from . import spec as spec_mod

    for path in spec_paths:
        spec, _ = spec_mod.load(path, overrides, extra_plugins)
        console.print(f"[green]ok[/] {path} (spec hash {spec.digest()})", highlight=False)


@main.command("list-plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_plugin_option
@handle_errors
def list_plugins(as_json: bool, extra_plugins: tuple[str, ...]) -> None:
    """List plugins, what each registered, and any load errors."""
    from .plugins import Plugins

    plugins = Plugins()
    plugins.load_entry_points()
    for ref in extra_plugins:
        plugins.load_module(ref)
    plugins.fill_registries()
    infos = list(plugins.infos.values())
    if as_json:
        click.echo(json.dumps({"plugins": [i.to_dict() for i in infos],
                               "registries": {reg.kind: {e.name: {"plugin": e.plugin, "description": e.description}
                                                         for e in reg} for reg in plugins.registries}},
                              indent=2))
        return
    table = Table(title="nasreg plugins", show_lines=True)
    table.add_column("plugin", style="bold")
    table.add_column("version")
    table.add_column("source")
    table.add_column("registered")
    for info in infos:
        if info.ok:
            lines = [f"[cyan]{kind}[/]: " + ", ".join(names) for kind, _h, _n in KINDS
                     if (names := info.registered.get(kind))]
            other = [h for h in info.hooks if not h.startswith("register_")]
            if other:
                lines.append("[cyan]hooks[/]: " + ", ".join(other))
            what = "\n".join(lines) or "[dim](nothing)[/]"
        else:
            kept = [f"[cyan]{kind}[/]: " + ", ".join(names) for kind, _h, _n in KINDS
                    if (names := info.registered.get(kind))]
            what = "\n".join([f"[bold red]failed:[/] {escape(info.error or '')}", *kept])
        table.add_row(info.name, info.version or "", info.source, what)
    console.print(table)


def print_summary(summary: dict[str, Any]) -> None:
    from .genotype import Genotype

    genotype = Genotype.from_dict(summary["genotype"])
    table = Table(title=f"run {summary['name']}: {summary['run_dir']}")
    table.add_column("stage")
    table.add_column("weights", justify="right")
    table.add_column("candidate ops", justify="right")
    table.add_column("s/epoch", justify="right")
    table.add_column("s/step", justify="right")
    for s in summary["stages"]:
        ep = s["epoch_seconds"]
        table.add_row(str(s["stage"]), f"{s['num_weights']:,}", str(s["num_candidate_ops"]),
                      f"{sum(ep) / max(len(ep), 1):.2f}", f"{s['step_seconds']:.3f}")
    console.print(table)
    console.print("[bold]genotype[/]\n" + genotype.describe(), highlight=False)
    acc = summary.get("final_val_acc")
    if acc is not None:
        console.print(f"[bold]final validation accuracy[/]: {acc:.4f}", highlight=False)
    console.print(f"wall time {summary['wall_seconds']:.1f} s, peak memory {summary['peak_memory_mb']:.0f} MB, "
                  f"run directory {summary['run_dir']}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    main()
