"""Registries: one per kind of thing a plugin can provide.

A registry maps a name to an :class:`Entry` (the factory plus metadata). Plugins never touch a
registry directly: they receive a ``register`` callable in their hook implementation, bound to
the plugin, so that every entry knows where it came from.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .errors import RegistryError

#: The kinds of registries, in the order ``list-plugins`` shows them: (kind, hook name, noun).
KINDS: tuple[tuple[str, str, str], ...] = (
    ("operations", "register_operations", "operation"),
    ("search_spaces", "register_search_spaces", "search space"),
    ("strategies", "register_strategies", "search strategy"),
    ("selectors", "register_selectors", "selector"),
    ("clusterers", "register_clusterers", "clusterer"),
    ("datasets", "register_datasets", "dataset"),
)


def _first_line(text: str | None) -> str:
    if not text:
        return ""
    for line in inspect.cleandoc(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _doc(factory: Callable[..., Any]) -> str | None:
    """The docstring that describes ``factory``: a partial's is its function's, not ``partial``'s."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    return getattr(factory, "__doc__", None)


@dataclass(frozen=True)
class Entry:
    """One registered name: what builds it, who registered it, and what it declares."""

    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.metadata[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


class Registry:
    """A name -> :class:`Entry` mapping for one kind (operations, datasets, ...)."""

    def __init__(self, kind: str, noun: str | None = None):
        self.kind = kind
        self.noun = noun or kind
        self._entries: dict[str, Entry] = {}
        #: Plugins that failed to load; named in unknown-name errors, since the name may be theirs.
        self.failed_plugins: dict[str, str] = {}
        #: Names registered by two plugins: looking one up raises the duplicate error.
        self.conflicts: dict[str, str] = {}

    def register(self, name: str, factory: Callable[..., Any], *, plugin: str,
                 description: str | None = None, **metadata: Any) -> Entry:
        if not isinstance(name, str) or not name:
            raise RegistryError(f"plugin {plugin!r} registered a {self.noun} with an invalid name {name!r}")
        if not callable(factory):
            raise RegistryError(f"plugin {plugin!r} registered {self.noun} {name!r} with a factory that is not callable")
        if name in self._entries:
            first = self._entries[name].plugin
            raise RegistryError(
                f"{self.noun} {name!r} is registered twice: by plugin {first!r} and by plugin {plugin!r}")
        if description is None:
            description = _first_line(_doc(factory))
        elif not isinstance(description, str):
            raise RegistryError(f"plugin {plugin!r} registered {self.noun} {name!r} with a description that "
                                f"is not a string: {description!r}")
        entry = Entry(name=name, factory=factory, plugin=plugin, description=description, metadata=dict(metadata))
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> Entry:
        if not isinstance(name, str):  # never a TypeError for an unhashable value from a spec
            raise RegistryError(self.unknown_message(name))
        if name in self.conflicts:
            raise RegistryError(self.conflicts[name])
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: Any) -> str:
        msg = f"unknown {self.noun} {name!r}"
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.6)
        if close:
            msg += "; did you mean " + ", ".join(repr(c) for c in close) + "?"
        if self.failed_plugins:
            failed = "; ".join(f"{p}: {e}" for p, e in self.failed_plugins.items())
            msg += f" (plugins that failed to load: {failed})"
        return msg + " (`nasreg list-plugins` shows what is available)"

    def names(self) -> list[str]:
        return list(self._entries)

    def by_plugin(self, plugin: str) -> list[str]:
        return [e.name for e in self._entries.values() if e.plugin == plugin]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


class Registries:
    """All registries of one plugin set, as attributes: ``regs.operations.get("sep_conv_3x3")``."""

    operations: Registry
    search_spaces: Registry
    strategies: Registry
    selectors: Registry
    clusterers: Registry
    datasets: Registry

    def __init__(self) -> None:
        for kind, _hook, noun in KINDS:
            setattr(self, kind, Registry(kind, noun))

    def __getitem__(self, kind: str) -> Registry:
        if kind not in {k for k, _, _ in KINDS}:
            raise KeyError(kind)
        return getattr(self, kind)

    def __iter__(self) -> Iterator[Registry]:
        return (getattr(self, kind) for kind, _, _ in KINDS)
