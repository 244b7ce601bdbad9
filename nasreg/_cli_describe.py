"""``nasreg describe NAME``: one registry entry's description, plugin, kind and spec keys.

``NAME`` is an entry's bare name (``elkan``), its qualified name (``elkan:elkan``, to choose
between two plugins' entries) or ``kind/name`` (``clusterers/elkan``, to choose between kinds); a
member of a family of parametric entries (``conv_3x3_24``) works too. An unknown name is one
line with the close matches; a name several entries share is one line listing the names that
choose between them.
"""

from __future__ import annotations

import difflib
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import RegistryError, entry_keys

#: What a spec writes to use an entry of each kind.
USED_AS = {
    "operations": "[search_space] operations = [..., \"{name}\"]",
    "search_spaces": "[search_space] name = \"{name}\"",
    "strategies": "[strategy] name = \"{name}\"",
    "selectors": "[selector] name = \"{name}\"",
    "clusterers": "[selector.clusterer] name = \"{name}\"",
    "datasets": "[data] dataset = \"{name}\"",
    "executors": "[executor] name = \"{name}\"",
}


def _kind_of(text: str, registries: Any) -> Any:
    """The registry ``text`` names: its kind (``clusterers``), its noun (``clusterer``), with ``-``
    for ``_``; None if none."""
    want = text.strip().lower().replace("-", "_").replace(" ", "_")
    for registry in registries:
        if want in (registry.kind, registry.noun.replace(" ", "_"), registry.kind.rstrip("s")):
            return registry
    return None


def find_entries(name: str, registries: Any) -> list[tuple[Any, Any]]:
    """The ``(registry, entry)`` pairs ``name`` picks (see the module docstring); raises
    :class:`nasreg.RegistryError` (one line) when it picks none."""
    kind, sep, bare = name.partition("/")
    if sep:
        registry = _kind_of(kind, registries)
        if registry is None:
            kinds = ", ".join(r.kind for r in registries)
            raise RegistryError(f"describe {name!r}: unknown kind {kind!r} (kinds: {kinds})")
        pool = [registry]
    else:
        pool, bare = list(registries), name
    found = [(r, e) for r in pool for e in r if bare in (e.name, e.qualified)]
    if not found:
        choices = [n for r in pool for e in r for n in (e.name, e.qualified, f"{r.kind}/{e.name}")]
        close = list(dict.fromkeys(difflib.get_close_matches(bare, choices, n=4, cutoff=0.6)))
        hint = "; did you mean " + ", ".join(repr(c) for c in close) + "?" if close else ""
        raise RegistryError(f"describe: no entry named {name!r}{hint} (`nasreg list-plugins` shows them all)")
    return found


def pick_entry(name: str, registries: Any) -> tuple[Any, Any]:
    """The one ``(registry, entry)`` ``name`` picks; a name shared by kinds or plugins is one
    :class:`nasreg.RegistryError` line listing the names to use instead."""
    found = find_entries(name, registries)
    if len(found) > 1:
        kinds = {r.kind for r, _e in found}
        choices = [f"{r.kind}/{e.qualified}" if len(kinds) > 1 else e.qualified for r, e in found]
        raise RegistryError(f"describe: {name!r} names {len(found)} entries: use "
                            + " or ".join(repr(c) for c in choices))
    return found[0]


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def show_entry(registry: Any, entry: Any, infos: dict[str, Any], console: Console) -> None:
    """Print the entry: name, kind, plugin (built-in or not), description, how a spec uses it,
    its family, its keys (type, default, range, description)."""
    from ._cli_show import BUILT_IN, families

    info = infos.get(entry.plugin)
    source = getattr(info, "source", None) or "?"
    origin = "built-in" if source == BUILT_IN else f"third-party: {source}"
    console.print(Text.assemble((registry.display_name(entry), "bold"),
                                f"  {registry.noun} of plugin {entry.plugin} ({origin})"), highlight=False)
    if entry.description:
        console.print(Text(entry.description), highlight=False)
    console.print(Text("spec: " + USED_AS.get(registry.kind, "{name}").format(name=registry.display_name(entry)),
                       style="dim"), highlight=False)
    family = families(registry).get(entry.qualified)
    if family is not None:
        console.print(Text(f"family: {family.pattern}, {len(family.names)} entries of plugin {family.plugin} "
                           "built by one factory"), highlight=False)
    meta = {k: v for k, v in entry.metadata.items() if isinstance(v, (bool, int, float, str))}
    if meta:
        console.print(Text("metadata: " + ", ".join(f"{k} = {_text(v)}" for k, v in meta.items())), highlight=False)
    keys = entry_keys(entry, registry.kind)
    if not keys:
        why = ("takes no spec keys: the search space calls it with (C, stride, affine)"
               if registry.kind == "operations" else "takes no spec keys")
        console.print(Text(f"keys: none ({registry.noun} {why})"), highlight=False)
        return
    table = Table(title="keys", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("key", no_wrap=True, style="cyan")
    table.add_column("type", max_width=20, overflow="fold")
    table.add_column("default", max_width=18, overflow="fold")
    table.add_column("range", max_width=24, overflow="fold")
    table.add_column("description", min_width=20, ratio=1, overflow="fold")
    for k in keys:  # Text cells: a "[selector]" in a docstring is not markup
        table.add_row(*(Text(v) for v in (k["name"], k["type"], "(required)" if k["required"] else _text(k["default"]),
                                          k["range"] or "", k["description"].replace("``", "`"))))
    console.print(table)


@click.command()
@click.argument("name", metavar="NAME")
@click.option("--plugin", "extra_plugins", multiple=True, metavar="MODULE|FILE.py",
              help="Load an extra plugin module or file (repeatable).")
def describe(name: str, extra_plugins: tuple[str, ...]) -> None:
    """Show a registry entry: its description, plugin, kind, and its spec keys (type, default,
    range, description).

    NAME: a bare name (elkan), kind/name (clusterers/elkan) or plugin:name (elkan:elkan)."""
    from .cli import console, handle_errors

    handle_errors(_describe)(name, extra_plugins, console)


def _describe(name: str, extra_plugins: tuple[str, ...], console: Console) -> None:
    from . import load_plugins

    plugins = load_plugins(extra_plugins, strict=False)
    registry, entry = pick_entry(name, plugins.registries)
    show_entry(registry, entry, plugins.infos, console)


