"""Registries: one per kind of thing a plugin can provide.

A registry maps a name to an :class:`Entry` (the factory plus metadata). Plugins never touch a
registry directly: they receive a ``register`` callable in their hook implementation, bound to
the plugin, so that every entry knows where it came from.

Every entry is reachable by its bare name (``conv_7x1_1x7``) and by its qualified name
(``darts:conv_7x1_1x7``: the plugin's name, ``:``, the bare name). A bare name that two plugins
register is not an error until it is looked up; the qualified names always work.
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
    ("executors", "register_executors", "executor"),
    ("loggers", "register_loggers", "logger"),
)

#: Separates the plugin from the name in a qualified name (``darts:sep_conv_3x3``).
SEP = ":"


def qualify(plugin: str, name: str) -> str:
    """The qualified name of ``plugin``'s entry ``name``: ``plugin:name``."""
    return f"{plugin}{SEP}{name}"


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

    @property
    def qualified(self) -> str:
        """``plugin:name``: the name that picks this entry even where another plugin shares ``name``."""
        return qualify(self.plugin, self.name)

    def __getitem__(self, key: str) -> Any:
        return self.metadata[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


class Registry:
    """A name -> :class:`Entry` mapping for one kind (operations, datasets, ...).

    Every entry has two names: its bare name (``sep_conv_3x3``) and its qualified name
    (``darts:sep_conv_3x3``, the registering plugin's name, ``:``, the bare name). Two plugins may
    register the same bare name: both entries are kept, each reachable by its qualified name, and
    only a lookup of the shared bare name fails, listing the qualified names to choose from.
    """

    def __init__(self, kind: str, noun: str | None = None):
        self.kind = kind
        self.noun = noun or kind
        #: Qualified name -> entry, in registration order.
        self._entries: dict[str, Entry] = {}
        #: Bare name -> the entries registered under it (more than one: an ambiguous name).
        self._by_name: dict[str, list[Entry]] = {}
        #: Plugins that failed to load; named in unknown-name errors, since the name may be theirs.
        self.failed_plugins: dict[str, str] = {}
        #: Qualified names a plugin registered twice: looking one up raises this error.
        self.conflicts: dict[str, str] = {}

    def register(self, name: str, factory: Callable[..., Any], *, plugin: str,
                 description: str | None = None, **metadata: Any) -> Entry:
        """Add ``plugin``'s entry ``name``; a name another plugin registered too is kept beside it.

        The same plugin registering one name twice raises (and the name's lookups raise too, so
        neither registration silently wins).
        """
        if not isinstance(name, str) or not name:
            raise RegistryError(f"plugin {plugin!r} registered a {self.noun} with an invalid name {name!r}")
        if SEP in name:
            raise RegistryError(f"plugin {plugin!r} registered a {self.noun} with an invalid name {name!r} "
                                f"({SEP!r} separates the plugin from the name in a qualified name)")
        if not callable(factory):
            raise RegistryError(f"plugin {plugin!r} registered {self.noun} {name!r} with a factory that is not callable")
        qualified = qualify(plugin, name)
        if qualified in self._entries:
            message = f"plugin {plugin!r} registered {self.noun} {name!r} twice"
            self.conflicts[qualified] = message
            raise RegistryError(message)
        if description is None:
            description = _first_line(_doc(factory))
        elif not isinstance(description, str):
            raise RegistryError(f"plugin {plugin!r} registered {self.noun} {name!r} with a description that "
                                f"is not a string: {description!r}")
        entry = Entry(name=name, factory=factory, plugin=plugin, description=description, metadata=dict(metadata))
        self._entries[qualified] = entry
        self._by_name.setdefault(name, []).append(entry)
        return entry

    def get(self, name: str) -> Entry:
        """The entry ``name`` picks: a bare name one plugin registered, or a qualified name.

        Raises :class:`RegistryError` for an unknown name (with close matches), a bare name two
        plugins registered (with their qualified names), or a name a plugin registered twice.
        """
        entry = self._find(name)
        if entry.qualified in self.conflicts:
            raise RegistryError(self.conflicts[entry.qualified])
        return entry

    def _find(self, name: Any) -> Entry:
        if not isinstance(name, str):  # never a TypeError for an unhashable value from a spec
            raise RegistryError(self.unknown_message(name))
        entries = self._by_name.get(name)
        if entries is None:
            if name not in self._entries:  # only qualified names are keys there
                raise RegistryError(self.unknown_message(name))
            return self._entries[name]
        if len(entries) > 1:
            raise RegistryError(self.ambiguous_message(name))
        return entries[0]

    def ambiguous_message(self, name: str) -> str:
        """``'x' is registered by 2 plugins: use 'a:x' or 'b:x'``."""
        choices = sorted(e.qualified for e in self._by_name[name])
        listed = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        return f"{name!r} is registered by {len(choices)} plugins: use {listed}"

    def unknown_message(self, name: Any) -> str:
        msg = f"unknown {self.noun} {name!r}"
        close = self._close_matches(str(name))
        if close:
            msg += "; did you mean " + ", ".join(repr(c) for c in close) + "?"
        if self.failed_plugins:
            failed = "; ".join(f"{p}: {e}" for p, e in self.failed_plugins.items())
            msg += f" (plugins that failed to load: {failed})"
        return msg + " (`nasreg list-plugins` shows what is available)"

    def _close_matches(self, text: str) -> list[str]:
        """Names close to ``text``; for a qualified name, first the qualified names of its bare part."""
        if SEP not in text:
            return difflib.get_close_matches(text, list(self._by_name), n=3, cutoff=0.6)
        bare = text.rpartition(SEP)[2]
        same = [e.qualified for e in self._by_name.get(bare, [])]
        close = difflib.get_close_matches(text, list(self._entries), n=3, cutoff=0.6)
        return (same + [c for c in close if c not in same])[:3]

    def display_name(self, entry: Entry) -> str:
        """The name to write for ``entry``: its bare name, or its qualified name where that is shared."""
        return entry.name if len(self._by_name.get(entry.name, ())) == 1 else entry.qualified

    def names(self) -> list[str]:
        """The bare names, each once, in the order they were first registered."""
        return list(self._by_name)

    def qualified_names(self) -> list[str]:
        """Every entry's qualified name (``plugin:name``), in registration order."""
        return list(self._entries)

    def by_plugin(self, plugin: str) -> list[str]:
        """The bare names ``plugin`` registered."""
        return [e.name for e in self._entries.values() if e.plugin == plugin]

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is a registered bare (shared or not) or qualified name."""
        return isinstance(name, str) and (name in self._by_name or name in self._entries)

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
    executors: Registry
    loggers: Registry

    def __init__(self) -> None:
        for kind, _hook, noun in KINDS:
            setattr(self, kind, Registry(kind, noun))

    def __getitem__(self, kind: str) -> Registry:
        if kind not in {k for k, _, _ in KINDS}:
            raise KeyError(kind)
        return getattr(self, kind)

    def __iter__(self) -> Iterator[Registry]:
        return (getattr(self, kind) for kind, _, _ in KINDS)
