"""Plugin discovery and loading.

Plugins come from three places, all treated alike once loaded:

* the ``nasreg`` entry-point group (built-ins and third-party packages alike);
* modules or ``.py`` files named by a spec's ``[run] plugins`` list or ``--plugin``;
* objects handed to :func:`load_plugins` directly (tests, notebooks).

A plugin that fails to import, registers a hook nasreg does not know, or raises while
registering is recorded as failed with its error; it never stops the others from loading.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pluggy

from . import hookspecs
from .errors import PluginError, RegistryError
from .registry import KINDS, Registries

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


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ").rstrip()


class Plugins:
    """A pluggy manager plus what nasreg knows about each plugin and the registries they filled."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.registries = Registries()
        self._filled = False

    # -- loading ---------------------------------------------------------------------------------
    @property
    def hook(self):
        """Call lifecycle hooks: ``plugins.hook.on_epoch_end(run=..., ...)``."""
        return self.pm.hook

    def add(self, obj: Any, name: str, source: str, version: str | None = None) -> PluginInfo:
        """Register a loaded plugin object (a module or an instance with hook implementations)."""
        if name in self.infos:
            if self.infos[name].ok and self.pm.get_plugin(name) is obj:
                return self.infos[name]
            name = f"{name} ({source})"
        info = PluginInfo(name=name, source=source, version=version)
        self.infos[name] = info
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:  # pluggy's PluginValidationError: a hook with a wrong signature
            info.error = _describe(exc)
            return info
        unknown = [hc.name for hc in (self.pm.get_hookcallers(obj) or []) if hc.spec is None]
        if unknown:
            self.pm.unregister(obj)
            info.error = ("implements unknown hook(s) " + ", ".join(sorted(unknown))
                          + " (see nasreg.hookspecs for the hooks nasreg calls)")
            return info
        info.hooks = sorted(hc.name for hc in self.pm.get_hookcallers(obj) or [])
        return info

    def fail(self, name: str, source: str, error: str, version: str | None = None) -> PluginInfo:
        info = PluginInfo(name=name, source=source, version=version, error=error)
        self.infos[name] = info
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
            try:
                obj = ep.load()
            except BaseException as exc:  # noqa: BLE001 - any import failure is reported, never raised
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.fail(ep.name, source, _describe(exc), version)
                continue
            self.add(obj, ep.name, source, version)

    def load_module(self, ref: str, base_dir: Path | None = None) -> PluginInfo:
        """Load a plugin named by a module path (``my_pkg.plugin``) or a ``.py`` file path."""
        name = ref
        try:
            if ref.endswith(".py") or os.sep in ref or "/" in ref:
                path = Path(ref).expanduser()
                if not path.is_absolute() and base_dir is not None:
                    path = base_dir / path
                name = path.stem
                if not path.is_file():
                    return self.fail(name, f"file {ref}", f"file not found: {path}")
                mod_name = f"nasreg_local_plugin_{path.stem}_{abs(hash(str(path.resolve())))}"
                spec = importlib.util.spec_from_file_location(mod_name, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[mod_name] = module
                spec.loader.exec_module(module)
                return self.add(module, name, f"file {ref}")
            module = importlib.import_module(ref)
            return self.add(module, ref, f"module {ref}")
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            return self.fail(name, f"module {ref}", _describe(exc))

    # -- registries ------------------------------------------------------------------------------
    def fill_registries(self) -> Registries:
        """Ask every loaded plugin, one at a time, to register what it provides."""
        regs = self.registries = Registries()
        for info in self.infos.values():
            if not info.ok:
                continue
            plugin = self.pm.get_plugin(info.name)
            staged: list[tuple[str, tuple, dict]] = []
            try:
                for kind, hook_name, _noun in KINDS:
                    caller = getattr(self.pm.hook, hook_name)
                    for impl in caller.get_hookimpls():
                        if impl.plugin is not plugin:
                            continue

                        def register(name, factory, _kind=kind, **metadata):
                            staged.append((_kind, (name, factory), metadata))

                        impl.function(**{arg: register for arg in impl.argnames if arg == "register"})
            except Exception as exc:  # noqa: BLE001
                info.error = f"failed while registering: {_describe(exc)}"
                if os.environ.get("NASREG_DEBUG"):
                    traceback.print_exc()
                continue
            errors = []
            for kind, (name, factory), metadata in staged:
                try:
                    regs[kind].register(name, factory, plugin=info.name, **metadata)
                except RegistryError as exc:
                    regs[kind].conflicts[name] = str(exc)
                    errors.append(str(exc))
                else:
                    info.registered.setdefault(kind, []).append(name)
            if errors:
                info.error = "; ".join(errors)
        failed = {i.name: i.error for i in self.infos.values() if not i.ok}
        for reg in regs:
            reg.failed_plugins = dict(failed)  # type: ignore[arg-type]
        self._filled = True
        return regs

    def require_ok(self, names: Sequence[str]) -> None:
        """Raise for the first of ``names`` (plugins a run asked for) that failed to load."""
        for name in names:
            info = self.infos.get(name) or next((i for i in self.infos.values() if i.source.endswith(name)), None)
            if info is not None and not info.ok:
                raise PluginError(f"plugin {info.name!r} ({info.source}) failed to load: {info.error}")


def load_plugins(extra: Sequence[str] = (), *, base_dir: Path | None = None,
                 entry_points: Iterable[md.EntryPoint] | None = None,
                 objects: Sequence[tuple[str, Any]] = ()) -> Plugins:
    """Load entry-point plugins, then ``extra`` module/file plugins and ``objects``; fill registries.

    Plugins named in ``extra`` were asked for explicitly, so one that fails raises
    :class:`~nasreg.errors.PluginError`; an entry-point plugin that fails is only recorded.
    """
    plugins = Plugins()
    plugins.load_entry_points(entry_points)
    asked = []
    for ref in extra:
        asked.append(plugins.load_module(ref, base_dir=base_dir).name)
    for name, obj in objects:
        plugins.add(obj, name, "object")
    plugins.fill_registries()
    plugins.require_ok(asked)
    return plugins
