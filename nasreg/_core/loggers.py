"""Loggers: lifecycle-hook observers a spec switches on, one run at a time.

A spec lists them in ``[run] loggers = ["tensorboard", "mlflow"]`` (registered with the
``register_loggers`` hook) and gives each its keys in an optional table ``[loggers.<name>]``.
``factory(**keys)`` returns an object whose methods are lifecycle hook implementations
(``@nasreg.hookimpl``). The engines build the listed loggers when a search, an ``[evaluate]``
or a ``nasreg train`` run starts, register them with the plugin manager for that run
(:func:`attached`), so they receive every lifecycle hook like any plugin, and unregister them
when it ends, whatever the outcome. A logger may define ``close(status)``: it is called then,
with ``"finished"``, ``"failed"`` or ``"interrupted"``.

This module imports no torch: :func:`validate_loggers` is part of ``nasreg validate``.
"""

from __future__ import annotations

import contextlib
import difflib
from pathlib import Path
from typing import Any, Iterator, Sequence

from . import params as P
from .errors import Interrupted, PluginError, RegistryError, SpecError
from .params import Component

#: The spec's table of per-logger tables (``[loggers.mlflow]``).
TABLE = "loggers"

#: What ``close(status)`` receives.
FINISHED, FAILED, INTERRUPTED = "finished", "failed", "interrupted"


def validate_loggers(raw: dict[str, Any], path: Path, registries: Any, names: Sequence[str]) -> list[Component]:
    """``[run] loggers`` (``names``, already checked as a list of strings) and the ``[loggers.*]``
    tables: one :class:`Component` per listed logger, its keys checked against its factory.

    An unknown name (``[run] loggers[1]``), a name listed twice, a ``[loggers]`` that is not a
    table of tables, a table for a logger not listed, or a bad key (``[loggers.mlflow]
    tracking_uri``) is a one-line :class:`SpecError` naming it."""
    where = f"{path}: [run] loggers"
    tables = raw.get(TABLE, {})
    if not isinstance(tables, dict):
        raise SpecError(f"{path}: [{TABLE}]: expected a table of logger tables ([{TABLE}.<name>]), "
                        f"got {P.show(tables)}")
    components: list[Component] = []
    used: set[str] = set()
    seen: dict[str, str] = {}  # qualified name -> as listed
    for i, name in enumerate(names):
        try:
            entry = registries.loggers.get(name)
        except RegistryError as exc:
            raise SpecError(f"{where}[{i}]: {exc}") from None
        if entry.qualified in seen:
            raise SpecError(f"{where}[{i}]: logger {name!r} is listed twice")
        seen[entry.qualified] = name
        key = name if name in tables else entry.name if entry.name in tables else None
        table = tables.get(key, {}) if key is not None else {}
        twhere = f"{path}: [{TABLE}.{key or name}]"
        if not isinstance(table, dict):
            raise SpecError(f"{twhere}: expected a table of the logger's keys, got {P.show(table)}")
        if "name" in table:
            raise SpecError(f"{twhere} name: unknown key (the logger is the table's name)")
        if key is not None:
            used.add(key)
        components.append(P.component("loggers", {"name": name, **table}, twhere, registries))
    for key in tables:
        if key not in used:
            listed = ", ".join(repr(n) for n in names) or "nothing"
            close = difflib.get_close_matches(str(key), list(names), n=1, cutoff=0.6)
            hint = f"; did you mean [{TABLE}.{close[0]}]?" if close else ""
            raise SpecError(f"{path}: [{TABLE}.{key}]: logger {key!r} is not listed in [run] loggers "
                            f"(listed: {listed}){hint}; add it there or remove the table")
    return components


def resolved_loggers(components: Sequence[Component]) -> dict[str, Any]:
    """The ``[loggers]`` table of a resolved spec: every listed logger's keys, defaults filled in."""
    return {c.name: {k: P.to_spec_value(v) for k, v in c.params.items()} for c in components}


def build_all(components: Sequence[Component]) -> list[tuple[str, Any]]:
    """Build every listed logger: ``(name, object)`` each. ``nasreg validate`` calls this too, so a
    logger's factory must not open files or connections (a missing optional extra is caught here)."""
    built = []
    for c in components:
        obj = c.build()
        if obj is None:
            raise PluginError(f"{c.where}: logger {c.name!r} built nothing (its factory returned None)")
        built.append((c.name, obj))
    return built


@contextlib.contextmanager
def attached(plugins: Any, components: Sequence[Component], reporter: Any = None) -> Iterator[list[Any]]:
    """Build the loggers ``components`` describe and register them with ``plugins``' manager for
    the ``with`` block (on the main rank only: under torchrun, rank 0 alone logs); unregister them
    at its end and call their ``close(status)``, also on an error or an interrupt (re-raised). A
    logger whose ``close`` raises is a warning, as an observer's hook is."""
    from . import distributed as ddp

    if not components or not ddp.current().is_main:
        yield []
        return
    pm = plugins.pm
    registered: list[tuple[str, Any]] = []
    try:
        for name, obj in build_all(components):
            registered.append((_register(pm, name, obj), obj))
    except BaseException:
        _detach(pm, registered, FAILED, reporter)
        raise
    status = FAILED
    try:
        yield [obj for _, obj in registered]
        status = FINISHED
    except (Interrupted, KeyboardInterrupt):
        status = INTERRUPTED
        raise
    finally:
        _detach(pm, registered, status, reporter)


def _register(pm: Any, name: str, obj: Any) -> str:
    """Register ``obj`` under a free plugin name (``logger:<name>``); one line for an object that
    implements a hook wrongly or one nasreg does not know."""
    base = plugin_name = f"logger:{name}"
    n = 2
    while pm.get_plugin(plugin_name) is not None:
        plugin_name, n = f"{base}#{n}", n + 1
    try:
        pm.register(obj, name=plugin_name)
    except Exception as exc:  # pluggy's PluginValidationError: a hook with a wrong signature
        raise PluginError(f"logger {name!r}: {' '.join(str(exc).split())}") from None
    unknown = sorted(hc.name for hc in (pm.get_hookcallers(obj) or []) if hc.spec is None)
    if unknown:
        pm.unregister(obj)
        raise PluginError(f"logger {name!r} implements unknown hook(s) {', '.join(unknown)} "
                          "(see nasreg.hookspecs for the hooks nasreg calls)")
    return plugin_name


def _detach(pm: Any, registered: list[tuple[str, Any]], status: str, reporter: Any) -> None:
    for plugin_name, obj in registered:
        if pm.get_plugin(plugin_name) is obj:
            pm.unregister(obj)
        close = getattr(obj, "close", None)
        if not callable(close):
            continue
        try:
            close(status)
        except Exception as exc:  # noqa: BLE001 - a logger must not turn a result into a failure
            msg = f"warning: {plugin_name} failed in close: {type(exc).__name__}: {exc}"
            (reporter.message if reporter is not None else print)(msg)
