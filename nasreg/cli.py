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

from . import NasregError, PlainReporter, QuietReporter, RichReporter, Spec, __version__

class _StandardOutput:
    """``sys.stdout`` as the console's file (looked up at each write, as click's test runner swaps
    it), where a failed write (``/dev/full``, a closed pipe) is one :class:`NasregError` line."""

    def write(self, text: str) -> int:
        try:
            return sys.stdout.write(text)
        except (OSError, ValueError) as exc:
            raise _output_fault(exc) from None

    def flush(self) -> None:
        try:
            sys.stdout.flush()
        except (OSError, ValueError) as exc:
            raise _output_fault(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.stdout, name)


def _output_fault(exc: Exception) -> NasregError:
    _silence_stdout()
    return NasregError(f"standard output: cannot write: {getattr(exc, 'strerror', None) or exc}")


stdout = _StandardOutput()
console = Console(file=stdout)  # type: ignore[arg-type]
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
    try:
        err_console.print(Text.assemble(label, " ", one_line(message)), highlight=False,
                          soft_wrap=True, crop=False)
    except (OSError, ValueError):  # stderr itself is full or closed: the exit status still tells
        pass
    sys.exit(code)


def _silence_stdout() -> None:
    """Point a standard output that cannot be written at ``/dev/null``, so that what is left in
    its buffer does not fail a second time (a traceback) when the process exits."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _check_stdout() -> None:
    """A closed standard output (``nasreg ... >&-``) is refused before anything runs: whatever a
    command printed would be lost, and the files it opened could take its descriptor."""
    closed = sys.stdout is None
    if not closed:
        try:
            fd = sys.stdout.fileno()
        except (OSError, ValueError, AttributeError):  # an in-memory stdout (a test's): no descriptor
            fd = None
        try:
            if fd is not None:
                os.fstat(fd)
        except OSError:
            closed = True
    if closed:
        _fail("standard output is closed; nasreg prints its results there (redirect it to a file or "
              "/dev/null instead of closing it)")


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn NasregError into one line and exit 2 (130 for a stop); a fault of the machine (an
    OSError: standard output on a full disk, ...) too; tracebacks only with --debug/NASREG_DEBUG."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except NasregError as exc:
            if os.environ.get("NASREG_DEBUG"):
                raise
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except OSError as exc:  # a fault of the machine no nasreg layer turned into a message
            if os.environ.get("NASREG_DEBUG"):
                raise
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            _fail(f"{where}{exc.strerror or exc}")
        try:
            stdout.flush()
        except NasregError as exc:
            _fail(str(exc))
        return result

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nasreg")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
def main(debug: bool) -> None:
    """nasreg: declarative, plugin-based neural architecture search."""
    # OpenMP threads that find no work sleep instead of spinning (before torch is imported):
    # spinning threads fight other work for the cores (set OMP_WAIT_POLICY to choose otherwise).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if debug:
        os.environ["NASREG_DEBUG"] = "1"
    else:
        _warnings_as_lines()
    _check_stdout()


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    """A Python warning as one line, ``warning: <message>`` (no file:line, no source line)."""
    try:
        err_console.print(Text.assemble(("warning:", "bold yellow"), " ", one_line(str(message))),
                          highlight=False, soft_wrap=True, crop=False)
    except (OSError, ValueError):
        pass


def _warnings_as_lines() -> None:
    """Show Python warnings as one clean line while the command runs (``--debug``: Python's own)."""
    import warnings

    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    ctx = click.get_current_context(silent=True)
    if ctx is not None:  # restored when the command ends (click's test runner reuses the process)
        ctx.call_on_close(lambda: setattr(warnings, "showwarning", previous))


_set_option = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                           help="Override a spec key; VALUE is a TOML literal (a bare word is a string).")
_plugin_option = click.option("--plugin", "extra_plugins", multiple=True, metavar="MODULE|FILE.py",
                              help="Load an extra plugin module or file (repeatable).")
_no_preflight_option = click.option(
    "--no-preflight", is_flag=True,
    help="Skip the pre-flight estimate (weights, FLOPs per step, peak memory) and its free-memory check.")


class _CliOutput:
    """What the commands print between and after the progress display (stdout)."""

    quiet = False

    def preflight(self, line: str) -> None:
        if not self.quiet:
            console.print(line, highlight=False, soft_wrap=True, markup=False)

    def search_end(self, summary: dict[str, Any]) -> None:
        print_summary(summary)

    def evaluation_start(self, run_dir: Any) -> None:
        console.print(f"[bold]evaluation[/]: training the genotype found into {escape(str(run_dir))}",
                      highlight=False)

    def train_end(self, results: dict[str, Any]) -> None:
        print_results(results)
        super().train_end(results)  # type: ignore[misc]  # the reporter's: a chance-level warning


class _CliReporter(_CliOutput, RichReporter):
    """Progress bars on stderr, figures on stdout."""


class _CliQuietReporter(_CliOutput, QuietReporter):
    """No progress display (``-q``), no pre-flight line; the figures still on stdout."""

    quiet = True


class _CliPlainReporter(_CliOutput, PlainReporter):
    """Plain progress lines on stderr (not a terminal, NO_COLOR, TERM=dumb), figures on stdout."""


def _reporter(quiet: bool) -> Any:
    """The command line's reporter: progress on stderr (bars on a terminal, plain lines elsewhere;
    none with -q), figures on stdout."""
    if quiet:
        return _CliQuietReporter()
    return _CliPlainReporter() if PlainReporter.wanted() else _CliReporter(err_console)


@main.command()
# (A directory or an unreadable file is reported by the spec reader, on one line.)
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
    from .api import search

    search(spec_path, overrides=overrides, plugins=extra_plugins, out=out, force=force,
           progress=_reporter(quiet), preflight=not no_preflight)


@main.command()
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(path_type=Path))
@_plugin_option
@_no_preflight_option
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@handle_errors
def resume(run_dir: Path, extra_plugins: tuple[str, ...], no_preflight: bool, quiet: bool) -> None:
    """Continue a stopped search from its last checkpoint (same results as an uninterrupted run),
    then run the spec's [evaluate] section, if any.

    A run whose search finished but whose evaluation did not (no eval/results.json) continues the
    evaluation from its checkpoint; a stopped `nasreg train` run directory continues its training.
    A checkpoint that does not belong to spec.toml (edited after the run) is refused, naming what
    differs, before anything is changed."""
    from .api import resume as resume_run

    resume_run(run_dir, plugins=extra_plugins, progress=_reporter(quiet), preflight=not no_preflight)


@main.command()
@click.argument("spec_paths", metavar="SPEC...", nargs=-1, required=True,
                type=click.Path(path_type=Path, readable=False))
@_set_option
@_plugin_option
@handle_errors
def validate(spec_paths: tuple[Path, ...], overrides: tuple[str, ...], extra_plugins: tuple[str, ...]) -> None:
    """Check specs without running them (exit 2 at the first invalid one).

    A search spec, or an evaluation spec for `nasreg train` ([run] and [evaluate] only)."""
    from .api import validate as validate_spec

    for path in spec_paths:
        checked = validate_spec(path, overrides=overrides, plugins=extra_plugins)
        kind = "spec" if isinstance(checked, Spec) else "evaluation spec,"
        console.print(f"[green]ok[/] {escape(str(path))} ({kind} hash {checked.digest()})", highlight=False)


@main.command("list-plugins")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON instead: every entry with its plugin, description and keys.")
@_plugin_option
@handle_errors
def list_plugins(as_json: bool, extra_plugins: tuple[str, ...]) -> None:
    """List plugins, what each registered (a family of parametric entries as one line), and any
    load errors; `nasreg describe NAME` shows an entry's keys."""
    from .api import load_plugins

    from ._cli_show import plugins_json, print_plugins

    plugins = load_plugins(extra_plugins, strict=False)
    if as_json:
        click.echo(file=stdout, message=json.dumps(plugins_json(plugins), indent=2))
        return
    print_plugins(plugins, console)


# --- nasreg train, nasreg show -----------------------------------------------------------------


@main.command()
@click.argument("genotype_path", metavar="GENOTYPE.json", type=click.Path(path_type=Path, readable=False))
@click.option("--spec", "spec_path", type=click.Path(path_type=Path, readable=False), default=None,
              help="Evaluation spec ([run], [evaluate]) or a search spec (default: the genotype's space's recipe "
                   "on the dataset the genotype was searched on).")
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

    Without --spec, the recipe the genotype's space supplies (darts-cell: DARTS's recipe,
    specs/eval-darts.toml) on the dataset the genotype was searched on (its provenance; it says
    which); --set overrides its keys (e.g. --set evaluate.epochs=10 --set evaluate.data.dataset=cifar10)."""
    from .api import describe_network, train as train_genotype

    if dry_run:
        print_network(describe_network(genotype_path, spec=spec_path, overrides=overrides, plugins=extra_plugins))
        return
    train_genotype(genotype_path, spec=spec_path, overrides=overrides, plugins=extra_plugins, out=out,
                   force=force, progress=_reporter(quiet))


@main.command()
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(path_type=Path, readable=False))
@click.option("--last", default=5, show_default=True, type=click.IntRange(min=0),
              help="How many of the last epochs to show (0: all).")
@handle_errors
def show(run_dir: Path, last: int) -> None:
    """Summarize a run directory (search or training): spec, genotype, metrics, results."""
    from ._cli_show import show_run

    show_run(run_dir, console, last)


# --- studies: nasreg study run/resume/report/validate, nasreg compare ------------------------------


@main.group()
def study() -> None:
    """Many seeds and many arms (specs plus overrides), compared fairly: run, resume, report."""


def _acc_text(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


class _StudyOutput:
    """A study's progress on stdout: one line per trial as it ends."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def start(self, study_dir: Path, executor: str, to_run: int, done: int) -> None:
        kept = f", {done} already finished" if done else ""
        console.print(f"[bold]study[/] {escape(str(study_dir))}: {to_run} trials to run{kept}; {escape(executor)}",
                      highlight=False, soft_wrap=True)

    def arm_invalid(self, label: str, error: str) -> None:
        err_console.print(Text.assemble(("warning:", "bold yellow"), " ", one_line(error),
                                        " (its trials are recorded as failed)"), soft_wrap=True, highlight=False)

    def trial_end(self, record: dict[str, Any], seconds: float) -> None:
        if self.quiet:
            return
        what = record["status"]
        if what == "finished":
            what += f": search val acc {_acc_text(record.get('search_val_acc'))}"
            if record.get("test_acc") is not None:
                what += f", test acc {_acc_text(record['test_acc'])}"
        elif record.get("error"):
            what += f": {record['error']}"
        console.print(Text(one_line(f"{record['arm']} seed {record['seed']}: {what} ({seconds:.0f} s)")),
                      soft_wrap=True, highlight=False)


def _print_report(result: Any) -> None:
    console.print(result.table())
    for c in result.report.get("comparisons") or ():
        if c.get("diff") is None:
            continue
        lo, hi = c.get("ci95") or (None, None)
        ci = f" [{lo * 100:+.2f}, {hi * 100:+.2f}]" if lo is not None and hi is not None else ""
        p = f", p = {c['p_value']:.3g} ({c.get('test', 'welch')})" if c.get("p_value") is not None else ""
        console.print(Text(one_line(f"{c['a']} - {c['b']} ({c['metric']}): {c['diff'] * 100:+.2f} points{ci}{p}")),
                      soft_wrap=True, highlight=False)
    where = result.study_dir
    console.print(Text(one_line(f"report: {where / 'report.md'}, {where / 'report.json'}")), soft_wrap=True,
                  highlight=False)


def _finish_study(result: Any) -> None:
    _print_report(result)
    failed = result.failed
    if failed:
        _fail(f"{len(failed)} of {len(result.trials)} trials failed (see {result.study_dir / 'report.md'}); "
              f"retry them with: nasreg study resume {result.study_dir}", 1)


@study.command("run")
@click.argument("study_path", metavar="STUDY.toml", type=click.Path(path_type=Path, readable=False))
@_set_option
@_plugin_option
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Study directory (default: [study] out_dir / [study] name, numbered if taken).")
@click.option("--force", is_flag=True, help="Replace an existing --out study directory.")
@click.option("--quiet", "-q", is_flag=True, help="No line per trial.")
@handle_errors
def study_run(study_path: Path, overrides: tuple[str, ...], extra_plugins: tuple[str, ...], out: Path | None,
              force: bool, quiet: bool) -> None:
    """Run every (arm, seed) trial of a study file, then write and print its report.

    --set overrides the study file's keys (study.seeds=[0,1], executor.workers=2,
    'study.set=["search.epochs=1"]'). Exit status 1 when some trial failed (the others finish)."""
    from .api import run_study

    _finish_study(run_study(study_path, overrides=overrides, plugins=extra_plugins, out=out, force=force,
                            reporter=_StudyOutput(quiet)))


@study.command("resume")
@click.argument("study_dir", metavar="STUDY_DIR", type=click.Path(path_type=Path, readable=False))
@click.option("--quiet", "-q", is_flag=True, help="No line per trial.")
@handle_errors
def study_resume(study_dir: Path, quiet: bool) -> None:
    """Continue a study: finished trials are kept, interrupted ones continue from their checkpoints,
    failed ones are retried, missing ones start; then the report."""
    from .api import resume_study

    _finish_study(resume_study(study_dir, reporter=_StudyOutput(quiet)))


@study.command("report")
@click.argument("study_dir", metavar="STUDY_DIR", type=click.Path(path_type=Path, readable=False))
@handle_errors
def study_report_cmd(study_dir: Path) -> None:
    """Write and print a study's report from its trials' run directories as they stand."""
    from .api import study_report

    _print_report(study_report(study_dir))


@study.command("validate")
@click.argument("study_path", metavar="STUDY.toml", type=click.Path(path_type=Path, readable=False))
@_set_option
@_plugin_option
@handle_errors
def study_validate(study_path: Path, overrides: tuple[str, ...], extra_plugins: tuple[str, ...]) -> None:
    """Check a study file and every arm's spec with its overrides, without running anything."""
    from .api import validate_study

    study_spec = validate_study(study_path, overrides=overrides, plugins=extra_plugins)
    console.print(Text(one_line(f"ok {study_path} ({len(study_spec.arms)} arms x {len(study_spec.seeds)} seeds)")),
                  highlight=False, soft_wrap=True)


@main.command()
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True,
                type=click.Path(path_type=Path, readable=False))
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Write report.json, report.md and the plots into this folder.")
@_plugin_option
@handle_errors
def compare(run_dirs: tuple[Path, ...], out: Path | None, extra_plugins: tuple[str, ...]) -> None:
    """Compare runs made by hand as a study's report: runs whose specs differ only in the seed form one arm."""
    from .api import compare_runs

    result = compare_runs(run_dirs, out=out, plugins=extra_plugins)
    console.print(result.table())
    if out is not None:
        console.print(Text(one_line(f"report: {out / 'report.md'}, {out / 'report.json'}")), soft_wrap=True,
                      highlight=False)


def _network_keys(keys: dict[str, Any]) -> str:
    """The evaluation network's keys as a spec writes them: ``cells = 20, auxiliary = true``."""
    def value(v: Any) -> str:
        return json.dumps(v) if isinstance(v, (bool, str)) else str(v)
    return ", ".join(f"{k} = {value(v)}" for k, v in keys.items())


def print_network(info: dict[str, Any]) -> None:
    c, h, w = info["input_shape"]
    keys = f" ({_network_keys(info['network'])})" if info.get("network") else ""
    console.print(f"[bold]network[/] {escape(str(info['space']))} from {escape(str(info['genotype']))}{escape(keys)}: "
                  f"input {c}x{h}x{w}, {info['num_classes']} classes ({escape(str(info['dataset']))})",
                  highlight=False, soft_wrap=True)
    aux = info.get("params_with_auxiliary")
    console.print(f"parameters{' without auxiliary head' if aux is not None else ''}: {info['params']:,} "
                  f"({info['params'] / 1e6:.2f}M)", highlight=False, soft_wrap=True)
    if aux is not None:
        console.print(f"parameters with auxiliary head: {aux:,} ({aux / 1e6:.2f}M)", highlight=False, soft_wrap=True)
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
    from . import Genotype

    genotype = Genotype.from_dict(summary["genotype"])
    if summary.get("stages"):  # supernet searches: the stages' weights and times
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
    for line in summary.get("report") or ():  # what the strategy says of its search (see Strategy)
        console.print(str(line), highlight=False, markup=False, soft_wrap=True)
    console.print("[bold]genotype[/]\n" + genotype.describe(), highlight=False)
    acc = summary.get("final_val_acc")
    if acc is not None:
        console.print(f"[bold]final validation accuracy[/]: {acc:.4f}", highlight=False)
    console.print(f"wall time {summary['wall_seconds']:.1f} s, peak memory {summary['peak_memory_mb']:.0f} MB, "
                  f"run directory {summary['run_dir']}", highlight=False)


from ._cli_export import add_export_command  # noqa: E402  (nasreg export: its own module)

add_export_command(main)

from ._cli_describe import describe  # noqa: E402  (nasreg describe NAME)

main.add_command(describe)


if __name__ == "__main__":  # pragma: no cover
    main()
