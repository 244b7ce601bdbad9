"""Plugin discovery and loading.

Plugins come from three places, all treated alike once loaded:

* the ``nasreg`` entry-point group (built-ins and third-party packages alike);
* modules or ``.py`` files named by a spec's ``[run] plugins`` list or ``--plugin``;
* objects handed to :func:`load_plugins` directly (tests, notebooks).

A plugin that fails to import, registers a hook nasreg does not know, or raises while
registering is recorded as failed with its error; it never stops the others from loading. That
includes a plugin raising ``KeyboardInterrupt`` or ``SystemExit`` itself: only a real Ctrl-C
(a SIGINT received while the plugin's code runs, see :class:`_RealInterrupts`) interrupts.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pluggy

from .. import hookspecs
from .errors import PluginError, RegistryError
from .registry import KINDS, Entry, Registries

ENTRY_POINT_GROUP = "nasreg"
#: Comma-separated plugin names not to load (like pytest's ``-p no:name``).
DISABLE_ENV = "NASREG_DISABLE_PLUGINS"


@dataclass
class PluginInfo:
    """What ``nasreg list-plugins`` shows about one plugin."""

    name: str
    source: str
    version: str | None = None
    error: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "version": self.version, "error": self.error,
                "hooks": self.hooks, "registered": self.registered}


def _describe(exc: BaseException, limit: int = 500) -> str:
    """``Type: message`` on one line. Every line of the message is kept (joined with "; "): the
    first line alone can be useless, as pluggy's signature errors show ("Plugin 'x' for hook
    'register_operations'", the reason being on the third line)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = "; ".join(lines)
    if len(text) > limit:
        text = text[:limit - 3].rstrip() + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _RealInterrupts:
    """While a plugin's code runs (its import, its registration hooks), tells the user's Ctrl-C
    from a ``KeyboardInterrupt`` the plugin raises itself.

    In the main thread, a SIGINT that arrives meanwhile is recorded (``received``), then handled
    as before (the default handler raises ``KeyboardInterrupt``). Without a Python handler to
    wrap (SIGINT ignored or default, or another thread) no Ctrl-C can raise there at all.
    :meth:`check` re-raises a real Ctrl-C and returns for anything the plugin raised."""

    def __init__(self) -> None:
        self.received = False
        self._old: Any = None

    def __enter__(self) -> "_RealInterrupts":
        if threading.current_thread() is threading.main_thread():
            old = signal.getsignal(signal.SIGINT)
            if callable(old):
                self._old = old
                signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = True
        self._old(signum, frame)

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None

    def check(self, exc: BaseException) -> None:
        """Re-raise ``exc`` when it is (or hides, a plugin turning it into something else) a real
        Ctrl-C; otherwise return: it is the plugin's failure."""
        if not self.received:
            return
        if isinstance(exc, KeyboardInterrupt):
            raise exc
        raise KeyboardInterrupt from exc


def _describe_failure(exc: BaseException) -> str:
    """:func:`_describe`, saying so when a plugin raised what looks like a Ctrl-C or an exit."""
    text = _describe(exc)
    return text if isinstance(exc, Exception) else f"{text} (raised by the plugin itself)"


class Plugins:
    """A pluggy manager plus what nasreg knows about each plugin and the registries they filled."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        #: Errors from loading (import, hook validation), by plugin name; registration errors are
        #: recomputed by every :meth:`fill_registries`.
        self._load_errors: dict[str, str] = {}
        self.registries = Registries()
        self._filled = False

    # -- loading ---------------------------------------------------------------------------------
    @property
    def hook(self):
        """Call lifecycle hooks: ``plugins.hook.on_epoch_end(run=..., ...)``."""
        return self.pm.hook

    def add(self, obj: Any, name: str, source: str, version: str | None = None) -> PluginInfo:
        """Register a loaded plugin object (a module or an instance with hook implementations)."""
        if self.pm.is_registered(obj):
            # Already loaded, perhaps under another name (a spec listing ``nasreg_darts``, which is
            # also the entry point ``darts``): the same plugin, not a second one.
            return self.infos[self.pm.get_name(obj)]
        name = self._free_name(name, source)
        info = PluginInfo(name=name, source=source, version=version)
        self.infos[name] = info
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:  # pluggy's PluginValidationError: a hook with a wrong signature
            info.error = self._load_errors[name] = _describe(exc)
            return info
        unknown = [hc.name for hc in (self.pm.get_hookcallers(obj) or []) if hc.spec is None]
        if unknown:
            self.pm.unregister(obj)
            info.error = self._load_errors[name] = (
                "implements unknown hook(s) " + ", ".join(sorted(unknown))
                + " (see nasreg.hookspecs for the hooks nasreg calls)")
            return info
        info.hooks = sorted(hc.name for hc in self.pm.get_hookcallers(obj) or [])
        return info

    def _free_name(self, name: str, source: str) -> str:
        """``name``, or ``name (source)`` when a plugin of that name is already known."""
        if name not in self.infos:
            return name
        name = f"{name} ({source})"
        base, n = name, 2
        while name in self.infos:
            name, n = f"{base} #{n}", n + 1
        return name

    def fail(self, name: str, source: str, error: str, version: str | None = None) -> PluginInfo:
        """Record a plugin that could not be loaded (never overwriting another plugin's record)."""
        name = self._free_name(name, source)
        info = PluginInfo(name=name, source=source, version=version, error=error)
        self.infos[name] = info
        self._load_errors[name] = error
        return info

    def load_entry_points(self, entry_points: Iterable[md.EntryPoint] | None = None) -> None:
        disabled = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
        if entry_points is None:
            entry_points = md.entry_points(group=ENTRY_POINT_GROUP)
        seen: set[str] = set()
        for ep in entry_points:
            if ep.name in seen or ep.name in disabled:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            source = f"entry point of {dist_name}" if dist_name else "entry point"
            if dist_name == "nasreg":
                source = "built-in"
            with _RealInterrupts() as interrupts:
                try:
                    obj = ep.load()
                except BaseException as exc:  # noqa: BLE001 - any import failure is reported, never raised
                    interrupts.check(exc)
                    self.fail(ep.name, source, f"error importing {ep.value!r}: {_describe_failure(exc)}", version)
                    continue
            self.add(obj, ep.name, source, version)

    def load_module(self, ref: str, base_dir: Path | None = None) -> PluginInfo:
        """Load a plugin named by a module path (``my_pkg.plugin``) or a ``.py`` file path.

        A relative file path is taken relative to ``base_dir`` (a spec's folder) when given. A
        file is imported once per process under a private module name, so naming it twice (in a
        spec and with ``--plugin``) loads one plugin, not two that clash. Whatever the import
        raises (``KeyboardInterrupt`` and ``SystemExit`` included, but not a real Ctrl-C) fails
        the plugin.
        """
        is_file = ref.endswith(".py") or os.sep in ref or "/" in ref
        name, source = (Path(ref).stem, f"file {ref}") if is_file else (ref, f"module {ref}")
        with _RealInterrupts() as interrupts:
            try:
                if is_file:
                    return self._load_file(ref, base_dir, name, source)
                return self.add(importlib.import_module(ref), ref, source)
            except BaseException as exc:  # noqa: BLE001
                interrupts.check(exc)
                return self.fail(name, source, f"error importing {ref!r}: {_describe_failure(exc)}")

    def _load_file(self, ref: str, base_dir: Path | None, name: str, source: str) -> PluginInfo:
        """:meth:`load_module` of a ``.py`` file (raising whatever its import raises)."""
        path = Path(ref).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            return self.fail(name, source, f"file not found: {path}")
        resolved = str(path.resolve())
        mod_name = f"nasreg_local_plugin_{path.stem}_{hashlib.sha1(resolved.encode()).hexdigest()[:12]}"
        module = sys.modules.get(mod_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(mod_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[mod_name]  # a failed import leaves no half-made module
                raise
        return self.add(module, name, source)

    # -- registries ------------------------------------------------------------------------------
    def fill_registries(self) -> Registries:
        """Ask every loaded plugin, one at a time, to register what it provides.

        A plugin whose hook raises registers nothing. A name registered by two plugins is kept
        twice, each entry under its qualified name (``plugin:name``); only a lookup of the shared
        bare name fails (see :class:`nasreg.Registry`), and neither plugin is failed. A
        plugin registering one name twice is failed, and that name's lookups raise. Each plugin's
        ``registered`` lists the names to use: bare, or qualified where shared. Calling this again
        rebuilds the registries from scratch (load errors stay, registration errors are recomputed).
        """
        regs = self.registries = Registries()
        for info in self.infos.values():
            info.error = self._load_errors.get(info.name)
            info.registered = {}
        reg_errors: dict[str, list[str]] = {}
        entries: list[tuple[PluginInfo, str, Entry]] = []
        for info in self.infos.values():
            if info.name in self._load_errors:
                continue
            with _RealInterrupts() as interrupts:
                try:
                    staged = self._staged(info.name)
                except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt/SystemExit of a plugin too
                    interrupts.check(exc)
                    reg_errors.setdefault(info.name, []).append(
                        f"failed while registering: {_describe_failure(exc)}")
                    if os.environ.get("NASREG_DEBUG"):
                        traceback.print_exc()
                    continue
            for kind, (name, factory), metadata in staged:
                try:
                    entries.append((info, kind, regs[kind].register(name, factory, plugin=info.name, **metadata)))
                except RegistryError as exc:
                    reg_errors.setdefault(info.name, []).append(str(exc))
        # Only now that every plugin registered is it known which names are shared.
        for info, kind, entry in entries:
            info.registered.setdefault(kind, []).append(regs[kind].display_name(entry))
        for name, errors in reg_errors.items():
            self.infos[name].error = "; ".join(dict.fromkeys(errors))
        failed = {i.name: i.error for i in self.infos.values() if not i.ok}
        for reg in regs:
            reg.failed_plugins = dict(failed)  # type: ignore[arg-type]
        self._filled = True
        return regs

    def _staged(self, name: str) -> list[tuple[str, tuple, dict]]:
        """What plugin ``name``'s registration hooks register: ``(kind, (name, factory), metadata)``
        each, in order (raising whatever a hook raises)."""
        plugin = self.pm.get_plugin(name)
        staged: list[tuple[str, tuple, dict]] = []
        for kind, hook_name, _noun in KINDS:
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is plugin:
                    register = _stager(kind, staged)
                    impl.function(**{arg: register for arg in impl.argnames if arg == "register"})
        return staged

    def require_ok(self, names: Sequence[str]) -> None:
        """Raise for the first of ``names`` (plugins a run asked for) that failed to load."""
        for name in names:
            info = self.infos.get(name) or next((i for i in self.infos.values() if i.source.endswith(name)), None)
            if info is not None and not info.ok:
                raise PluginError(f"plugin {info.name!r} ({info.source}) failed to load: {info.error}")


def _stager(kind: str, staged: list[tuple[str, tuple, dict]]):
    """The ``register`` callable a registration hook receives: ``register(name, factory, **metadata)``.

    Entries are staged and reach the registry only once the plugin's hooks all returned, so a hook
    that raises halfway registers nothing. A misuse (a third positional argument, the reserved
    keyword ``plugin``) raises inside the hook, and so fails that plugin alone.
    """

    def register(name: str, factory: Any, **metadata: Any) -> None:
        if "plugin" in metadata:
            raise TypeError("register(): 'plugin' is reserved (nasreg records which plugin registered "
                            "an entry itself); use another metadata key")
        staged.append((kind, (name, factory), metadata))

    return register


def load_plugins(extra: Sequence[str] = (), *, base_dir: Path | None = None,
                 entry_points: Iterable[md.EntryPoint] | None = None,
                 objects: Sequence[tuple[str, Any]] = (), strict: bool = True) -> Plugins:
    """Load entry-point plugins, then ``extra`` module/file plugins and ``objects``; fill registries.

    Plugins named in ``extra`` were asked for explicitly, so one that fails raises
    :class:`nasreg.PluginError` (unless not ``strict``: then, like an entry-point plugin
    that fails, it is only recorded in ``infos``).
    """
    plugins = Plugins()
    plugins.load_entry_points(entry_points)
    asked = []
    for ref in extra:
        asked.append(plugins.load_module(ref, base_dir=base_dir).name)
    for name, obj in objects:
        plugins.add(obj, name, "object")
    plugins.fill_registries()
    if strict:
        plugins.require_ok(asked)
    return plugins
