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
from rich.text import Text

from . import __version__
from .errors import NasregError
from .registry import KINDS

console = Console()
err_console = Console(stderr=True)


def one_line(message: str) -> str:
    """``message`` on one printable line: newlines, tabs, escape sequences and other control or
    invisible characters (from a key name, a file name, a plugin's exception) shown escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in message)


def _fail(message: str, code: int = 2) -> None:
    # A Text, not markup: no tag, emoji code or highlighting in the message is interpreted; and
    # soft_wrap: one line whatever the terminal's width.
    label = ("stopped:", "bold yellow") if code == 130 else ("error:", "bold red")
    err_console.print(Text.assemble(label, " ", one_line(message)), highlight=False,
                      soft_wrap=True, crop=False)
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
_no_preflight_option = click.option(
    "--no-preflight", is_flag=True,
    help="Skip the pre-flight estimate (weights, FLOPs per step, peak memory) and its free-memory check.")


@main.command()
# (A directory or an unreadable file is reported by nasreg.spec.read_toml, on one line.)
@click.argument("spec_path", metavar="SPEC", type=click.Path(path_type=Path, readable=False))
@_set_option
@_plugin_option
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Run directory (default: [run] out_dir / [run] name, numbered if taken).")
@click.option("--force", is_flag=True, help="Replace an existing --out directory.")
@_no_preflight_option
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@handle_errors
def run(spec_path: Path, overrides: tuple[str, ...], extra_plugins: tuple[str, ...], out: Path | None,
        force: bool, no_preflight: bool, quiet: bool) -> None:
    """Run the search a TOML spec describes (and its [evaluate] section, if any, after it).

    Before anything is written it prints the supernet's weights, FLOPs per step and peak-memory
    estimate, and stops if that memory is not free on the device (--no-preflight skips this)."""
    from . import distributed as ddp
    from . import spec as spec_mod
    from .progress import QuietReporter, RichReporter, SilentReporter
    from .rundir import create_run_dir
    from .search import prepare, run_search

    spec, plugins = spec_mod.load(spec_path, overrides, extra_plugins)
    prepared = prepare(spec, plugins)  # under torchrun: joins the process group
    main_rank = ddp.current().is_main
    eval_prepared = _prepare_evaluation(spec, plugins, prepared.space)  # None without [evaluate]
    if not no_preflight:
        _preflight(prepared, quiet or not main_rank)
    run_dir = ddp.open_run_dir(lambda: create_run_dir(spec.run.out_dir, spec.run.name, out, force))
    reporter = SilentReporter() if not main_rank else QuietReporter() if quiet else RichReporter(err_console)
    try:
        summary = run_search(prepared, run_dir, reporter)
    finally:
        reporter.close()
        ddp.close_run_dir(run_dir)
        ddp.shutdown()  # [evaluate] below runs on rank 0 alone
    if not main_rank:
        return
    print_summary(summary)
    if eval_prepared is not None:
        _evaluate_after_search(eval_prepared, summary, run_dir, quiet)


@main.command()
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(path_type=Path))
@_plugin_option
@_no_preflight_option
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@handle_errors
def resume(run_dir: Path, extra_plugins: tuple[str, ...], no_preflight: bool, quiet: bool) -> None:
    """Continue a stopped search from its last checkpoint (same results as an uninterrupted run),
    then run the spec's [evaluate] section, if any.

    A run whose search finished but whose evaluation did not (no eval/results.json) runs the
    evaluation again from its start."""
    from . import distributed as ddp
    from . import rundir as rd
    from . import spec as spec_mod
    from .errors import RunDirError
    from .evaluate import EVAL_DIR, RESULTS_FILE
    from .progress import QuietReporter, RichReporter, SilentReporter
    from .search import prepare, run_search

    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    if not (run_dir / rd.SPEC_FILE).is_file():
        raise RunDirError(f"{run_dir}: not a nasreg run directory (no {rd.SPEC_FILE})")
    finished = (run_dir / rd.SUMMARY_FILE).is_file()
    if finished and (run_dir / EVAL_DIR / RESULTS_FILE).is_file():
        raise RunDirError(f"{run_dir}: this run has finished; nothing to resume")
    spec, plugins = spec_mod.load(run_dir / rd.SPEC_FILE, (), extra_plugins)
    if finished:
        if spec.evaluate is None:
            raise RunDirError(f"{run_dir}: this run has finished; nothing to resume")
        if ddp.env_world_size() > 1:  # [evaluate] runs in one process
            raise RunDirError(f"{run_dir}: the search has finished and its evaluation runs in one process; "
                              f"run `nasreg resume {run_dir}` without torchrun")
        summary = _read_summary(run_dir / rd.SUMMARY_FILE)
        eval_prepared = _prepare_evaluation(spec, plugins, spec.search_space.build())
        console.print(f"{run_dir}: the search has finished; its evaluation has not: running the evaluation "
                      "from its start", highlight=False, soft_wrap=True, markup=False)
        _evaluate_after_search(eval_prepared, summary, run_dir, quiet)
        return
    prepared = prepare(spec, plugins)  # under torchrun: joins the process group
    main_rank = ddp.current().is_main
    eval_prepared = _prepare_evaluation(spec, plugins, prepared.space)  # None without [evaluate]
    if not no_preflight:
        _preflight(prepared, quiet or not main_rank)
    given_dir = run_dir
    run_dir = ddp.open_run_dir(lambda: given_dir)  # other ranks: a scratch directory
    reporter = SilentReporter() if not main_rank else QuietReporter() if quiet else RichReporter(err_console)
    try:
        summary = run_search(prepared, run_dir, reporter, resume=True)
    finally:
        reporter.close()
        ddp.close_run_dir(run_dir)
        ddp.shutdown()
    if not main_rank:
        return
    print_summary(summary)
    if eval_prepared is not None:
        _evaluate_after_search(eval_prepared, summary, run_dir, quiet)


def _read_summary(path: Path) -> dict[str, Any]:
    from .errors import RunDirError

    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: cannot read the search's summary: {exc}") from exc
    if not isinstance(summary, dict) or not isinstance(summary.get("genotype"), dict):
        raise RunDirError(f"{path}: not a search summary (no genotype)")
    return summary


def _preflight(prepared: Any, quiet: bool) -> None:
    """Print the pre-flight estimate (unless quiet) and stop, before the run directory is touched,
    when its peak memory exceeds the device's free memory (see :mod:`nasreg.preflight`)."""
    from .preflight import preflight

    def echo(line: str) -> None:
        console.print(line, highlight=False, soft_wrap=True, markup=False)

    preflight(prepared, echo=None if quiet else echo, check=True)


@main.command()
@click.argument("spec_paths", metavar="SPEC...", nargs=-1, required=True,
                type=click.Path(path_type=Path, readable=False))
@_set_option
@_plugin_option
@handle_errors
def validate(spec_paths: tuple[Path, ...], overrides: tuple[str, ...], extra_plugins: tuple[str, ...]) -> None:
    """Check specs without running them (exit 2 at the first invalid one).

    A search spec, or an evaluation spec for `nasreg train` ([run] and [evaluate] only)."""
    from . import spec as spec_mod
    from .evaluate import is_eval_spec, load_eval_spec

    for path in spec_paths:
        if is_eval_spec(spec_mod.apply_overrides(spec_mod.read_toml(path), overrides)):
            espec, _ = load_eval_spec(path, overrides, extra_plugins)
            console.print(f"[green]ok[/] {path} (evaluation spec, hash {espec.digest()})", highlight=False)
            continue
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
                               "registries": {reg.kind: {reg.display_name(e): {"plugin": e.plugin,
                                                                               "description": e.description}
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


# --- final evaluation: nasreg train, [evaluate] after a search, nasreg show ----------------------


def _prepare_evaluation(spec: Any, plugins: Any, space: Any) -> Any:
    """The prepared ``[evaluate]`` of a search spec (checked before the search starts), or None."""
    if spec.evaluate is None:
        return None
    from .evaluate import from_search_spec, prepare_evaluation

    return prepare_evaluation(from_search_spec(spec, plugins.registries), plugins, space)


def _evaluate_after_search(prepared: Any, summary: dict[str, Any], run_dir: Path, quiet: bool) -> None:
    from .evaluate import EVAL_DIR, run_evaluation, search_cost
    from .genotype import Genotype
    from .progress import QuietReporter, RichTrainReporter
    from .rundir import CHECKPOINT_FILE, GENOTYPE_FILE, METRICS_FILE

    genotype = Genotype.from_dict(summary["genotype"], source=str(run_dir / GENOTYPE_FILE))
    eval_dir = run_dir / EVAL_DIR
    # An evaluation that was stopped starts again from its beginning: drop what it had appended
    # (metrics.jsonl grows by a line per epoch) and its last epoch's checkpoint.
    for name in (METRICS_FILE, CHECKPOINT_FILE):
        (eval_dir / name).unlink(missing_ok=True)
    console.print(f"[bold]evaluation[/]: training the genotype found into {escape(str(eval_dir))}",
                  highlight=False)
    reporter = QuietReporter() if quiet else RichTrainReporter(err_console)
    try:
        results = run_evaluation(prepared, genotype, eval_dir, reporter,
                                 source=str(run_dir / GENOTYPE_FILE), search_cost=search_cost(summary))
    finally:
        reporter.close()
    print_results(results)


@main.command()
@click.argument("genotype_path", metavar="GENOTYPE.json", type=click.Path(path_type=Path, readable=False))
@click.option("--spec", "spec_path", type=click.Path(path_type=Path, readable=False), default=None,
              help="Evaluation spec ([run], [evaluate]) or a search spec (default: DARTS's CIFAR-10 recipe).")
@_set_option
@_plugin_option
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Run directory (default: [run] out_dir / [run] name or train-GENOTYPE, numbered if taken).")
@click.option("--force", is_flag=True, help="Replace an existing --out directory.")
@click.option("--dry-run", is_flag=True,
              help="Build the network, print its parameters (with and without the auxiliary head) and FLOPs; no training.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@handle_errors
def train(genotype_path: Path, spec_path: Path | None, overrides: tuple[str, ...], extra_plugins: tuple[str, ...],
          out: Path | None, force: bool, dry_run: bool, quiet: bool) -> None:
    """Train the network a saved genotype describes from scratch and test it.

    Without --spec, DARTS's CIFAR-10 evaluation recipe (specs/eval-darts.toml); --set overrides
    its keys (e.g. --set evaluate.epochs=10 --set evaluate.data.dataset=digits)."""
    from .evaluate import describe_network, load_eval_spec, prepare_evaluation, run_evaluation, space_for
    from .genotype import Genotype
    from .progress import QuietReporter, RichTrainReporter
    from .rundir import create_run_dir

    espec, plugins = load_eval_spec(spec_path, overrides, extra_plugins)
    genotype = Genotype.load(genotype_path, plugins.registries)
    source = str(genotype_path)
    if dry_run:
        print_network(describe_network(espec, plugins, genotype, source))
        return
    space = space_for(genotype, plugins.registries, espec.search_space, source)
    prepared = prepare_evaluation(espec, plugins, space)
    name = espec.run.name or f"train-{genotype_path.stem}"
    run_dir = create_run_dir(espec.run.out_dir, name, out, force)
    espec.run.name = name
    reporter = QuietReporter() if quiet else RichTrainReporter(err_console)
    try:
        results = run_evaluation(prepared, genotype, run_dir, reporter, source=source)
    finally:
        reporter.close()
    print_results(results)


@main.command()
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(path_type=Path, readable=False))
@click.option("--last", default=5, show_default=True, type=click.IntRange(min=0),
              help="How many of the last epochs to show (0: all).")
@handle_errors
def show(run_dir: Path, last: int) -> None:
    """Summarize a run directory (search or training): spec, genotype, metrics, results."""
    from .show import show_run

    show_run(run_dir, console, last)


def print_network(info: dict[str, Any]) -> None:
    c, h, w = info["input_shape"]
    console.print(f"[bold]network[/] {info['space']} from {info['genotype']}: {info['cells']} cells, "
                  f"{info['channels']} channels, input {c}x{h}x{w}, {info['num_classes']} classes "
                  f"({info['dataset']})", highlight=False, soft_wrap=True)
    console.print(f"parameters without auxiliary head: {info['params']:,} ({info['params'] / 1e6:.2f}M)",
                  highlight=False, soft_wrap=True)
    console.print(f"parameters with auxiliary head: {info['params_with_auxiliary']:,} "
                  f"({info['params_with_auxiliary'] / 1e6:.2f}M)", highlight=False, soft_wrap=True)
    console.print(f"FLOPs per image (one forward pass): {info['flops']:,} ({info['flops'] / 1e9:.3f} GFLOPs, "
                  f"{info['macs'] / 1e6:.1f}M MACs)", highlight=False, soft_wrap=True)


def print_results(results: dict[str, Any]) -> None:
    acc, err = results.get("test_acc"), results.get("test_error_percent")
    line = f"[bold]test accuracy[/]: {acc:.4f} (error {err:.2f} %)" if acc is not None else "no epoch ran"
    console.print(line, highlight=False, soft_wrap=True)
    aux = results.get("params_with_auxiliary")
    console.print(f"parameters {results['params']:,}" + (f" ({aux:,} with the auxiliary head)" if aux else "")
                  + f", {results['flops'] / 1e6:.1f} MFLOPs per image, wall time {results['wall_seconds']:.1f} s, "
                  f"peak memory {results['peak_memory_mb']:.0f} MB, run directory {results['run_dir']}",
                  highlight=False, soft_wrap=True)


def print_summary(summary: dict[str, Any]) -> None:
    from .genotype import Genotype

    genotype = Genotype.from_dict(summary["genotype"])
    if summary.get("stages"):  # supernet searches; a sampling strategy has children, not stages
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
    elif summary.get("children") is not None:
        console.print(f"[bold]{summary.get('strategy', 'search')}[/]: {summary['children']} children trained, "
                      f"best reward {summary.get('best_reward', float('nan')):.4f} (child {summary.get('best_child')})",
                      highlight=False)
    console.print("[bold]genotype[/]\n" + genotype.describe(), highlight=False)
    acc = summary.get("final_val_acc")
    if acc is not None:
        console.print(f"[bold]final validation accuracy[/]: {acc:.4f}", highlight=False)
    console.print(f"wall time {summary['wall_seconds']:.1f} s, peak memory {summary['peak_memory_mb']:.0f} MB, "
                  f"run directory {summary['run_dir']}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    main()
