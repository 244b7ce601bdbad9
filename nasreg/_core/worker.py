"""Rebuilding a run's spec and plugins in another process (a pool worker, a Ray actor).

A validated :class:`nasreg.Spec` holds built components and loaded plugins, which do not
travel between processes. :class:`SpecSnapshot` is what does: the spec's table, its file and the
module and file plugins it was loaded with (entry-point plugins load by themselves), all plain
data, so it pickles; :meth:`SpecSnapshot.rebuild` loads the plugins and validates the spec again
in the worker::

    snapshot = nasreg.SpecSnapshot.of(run.spec, run.plugins)    # in the parent
    spec, plugins = snapshot.rebuild()                           # in the worker

A plugin handed to the loader as an object (not a module or a file) cannot be rebuilt this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SpecSnapshot"]


@dataclass(frozen=True)
class SpecSnapshot:
    """A picklable snapshot of a spec: its raw table, its file and its module/file plugins."""

    raw: dict[str, Any]
    path: str
    plugin_refs: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec: Any, plugins: Any) -> "SpecSnapshot":
        """The snapshot of a validated ``spec`` loaded with ``plugins``."""
        return cls(raw=spec.raw, path=str(Path(spec.path).resolve()), plugin_refs=tuple(plugin_refs(plugins)))

    def rebuild(self) -> tuple[Any, Any]:
        """``(spec, plugins)``: the plugins loaded again and the spec validated against them."""
        from .plugins import load_plugins
        from .spec import validate

        path = Path(self.path)
        plugins = load_plugins(list(self.plugin_refs), base_dir=path.parent)
        return validate(self.raw, path, plugins.registries), plugins


def plugin_refs(plugins: Any) -> list[str]:
    """The module and file plugins of a loaded plugin set that loaded (entry points load by themselves)."""
    refs = []
    for info in plugins.infos.values():
        kind, _, ref = info.source.partition(" ")
        if kind in ("module", "file") and ref and info.ok:
            refs.append(ref)
    return refs
