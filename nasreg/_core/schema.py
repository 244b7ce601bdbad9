"""The spec keys a registry entry takes, read from its factory (``nasreg.entry_keys``).

A factory's signature is its schema (:mod:`nasreg._core.params`): each keyword parameter is a key
of the spec table that names the entry, its annotation the type and range the spec's value is
checked against, its default what the resolved spec records. The key's description comes from the
factory's docstring: a Google-style ``Args:`` section, ``:param name:`` lines, or else the first
sentence that names the key in double backquotes (````n_init```` defaults to 10 ...).
"""

from __future__ import annotations

import functools
import json
import inspect
import re
import types
import typing
from typing import Annotated, Any, Callable

from .params import Range, Ref, _unwrap, describe, show, signature_params, to_spec_value

#: Kinds whose entries are named in a list, not a table: their factories take no spec keys
#: (an operation is called by the search space with ``(C, stride, affine)``).
NO_KEYS = {"operations": "an operation takes no spec keys: the search space calls it with (C, stride, affine)"}


def _target(factory: Callable[..., Any]) -> Any:
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory


def factory_doc(factory: Callable[..., Any]) -> str:
    """The docstring that describes ``factory`` (a class's own, then its ``__init__``'s), cleaned."""
    target = _target(factory)
    docs = [getattr(target, "__doc__", None)]
    if inspect.isclass(target):
        docs.append(getattr(target.__init__, "__doc__", None))
    return "\n\n".join(inspect.cleandoc(d) for d in docs if d and d is not object.__init__.__doc__)


def _args_section(doc: str) -> dict[str, str]:
    """``name: text`` of a Google-style ``Args:`` (or ``Parameters:``) section and ``:param name: text`` lines."""
    found: dict[str, str] = {}
    for m in re.finditer(r"^\s*:param\s+(?:[\w\[\], |.]+\s+)?(\w+):\s*(.+)$", doc, re.M):
        found.setdefault(m.group(1), m.group(2).strip())
    section = re.search(r"^(?:Args|Arguments|Parameters|Keys):\s*\n((?:[ \t]+.*\n?|\s*\n)+)", doc, re.M)
    if section:
        current = None
        for line in section.group(1).splitlines():
            m = re.match(r"^\s{1,8}`{0,2}(\w+)`{0,2}(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if m:
                current = m.group(1)
                found.setdefault(current, m.group(2).strip())
            elif current and line.strip():
                found[current] = (found[current] + " " + line.strip()).strip()
    return found


def _sentence_naming(doc: str, key: str) -> str:
    """The first sentence of ``doc`` (after its summary line) that names ``key`` as ````key````."""
    body = " ".join(doc.split("\n", 1)[1].split()) if "\n" in doc else ""
    for sentence in re.split(r"(?<=[.;])\s+(?=[A-Z`(])", body):
        if f"``{key}``" in sentence:
            return sentence.strip()
    return ""


def _ranges(annotation: Any) -> list[str]:
    """The bounds an annotation sets (its own, or those inside a union such as ``int >= 1 | None``)."""
    base, extras = _unwrap(annotation)
    out = [e.describe() for e in extras if isinstance(e, Range)]
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        for arg in typing.get_args(base):
            out += _ranges(arg)
    return out


def _type_text(annotation: Any) -> str:
    """The type as validation messages write it, its bounds left to the ``range`` field."""
    if annotation is inspect.Parameter.empty:
        return "any"
    base, extras = _unwrap(annotation)
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        parts = [_type_text(a) for a in typing.get_args(base) if a is not type(None)]
        none = type(None) in typing.get_args(base)
        return " or ".join(parts) + (" (or unset)" if none else "")
    refs = [e for e in extras if isinstance(e, Ref)]
    return describe(Annotated[base, *refs] if refs else base)


def _default(value: Any) -> Any:
    """A default as the spec writes it (a JSON-able value), or its short repr."""
    value = to_spec_value(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, dict)):
        try:
            json.dumps(value)
            return value
        except (TypeError, ValueError):
            pass
    return show(value)


def entry_keys(entry: Any, kind: str | None = None) -> list[dict[str, Any]]:
    """The spec keys registry entry ``entry`` takes, in its factory's order; per key a dict:
    ``name``, ``type`` (as validation messages write it), ``required``, ``default`` (None when
    required or unset), ``range`` (``">= 1"``, or None) and ``description`` (from the factory's
    docstring; may be ``""``). ``kind`` "operations" (see :data:`NO_KEYS`) has none. A factory
    taking ``**kwargs`` accepts other keys too (not listed)."""
    if kind in NO_KEYS:
        return []
    sig = signature_params(entry.factory)
    if sig is None:
        return []
    doc = factory_doc(entry.factory)
    documented = _args_section(doc)
    keys = []
    for name, p in sig[0].items():
        required = p.default is inspect.Parameter.empty
        ranges = _ranges(p.annotation)
        keys.append({
            "name": name, "type": _type_text(p.annotation), "required": required,
            "default": None if required else _default(p.default),
            "range": " and ".join(ranges) if ranges else None,
            "description": documented.get(name) or _sentence_naming(doc, name),
        })
    return keys
