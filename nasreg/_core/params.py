"""Typed parameters: how spec values are checked against annotations.

The same checker validates the core's own spec sections and every plugin factory's keyword
arguments. A factory's signature *is* its schema: annotate a parameter and nasreg checks the spec
value before anything runs; give it a default and the resolved spec records it::

    def my_clusterer(n_clusters: Annotated[int, Range(ge=1)] = 3, seed: int | None = None): ...

Parameters without annotations accept any TOML value (so scikit-learn estimators register as is).
``Ref("operations")`` marks a string that must name a registry entry, or, on a ``dict``/table
parameter, a table whose ``name`` picks the entry and whose other keys are that entry's params;
such a table reaches the factory as a :class:`Component`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, Union

from .errors import RegistryError, SpecError
from .registry import KINDS

#: Registry kind -> the noun messages use ("strategies" -> "search strategy").
KIND_NOUNS: dict[str, str] = {kind: noun for kind, _hook, noun in KINDS}


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``Range(ge=1)``, ``Range(gt=0, lt=1)``, ``Range(ge=0, le=10_000)``."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def describe(self) -> str:
        parts = []
        for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)):
            if bound is not None:
                parts.append(f"{op} {_number(bound)}")
        return " and ".join(parts)

    def ok(self, v: float) -> bool:
        return not ((self.ge is not None and v < self.ge) or (self.gt is not None and v <= self.gt)
                    or (self.le is not None and v > self.le) or (self.lt is not None and v >= self.lt))


def _number(v: float) -> str:
    """A bound as a reader writes it: ``4294967295``, not ``4.29497e+09``; ``0.0001`` stays."""
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e16):
        return str(int(v))
    return f"{v:g}"


@dataclass(frozen=True)
class Ref:
    """A value naming an entry of the registry ``kind`` (``"operations"``, ``"clusterers"``, ...)."""

    kind: str

    def __post_init__(self) -> None:
        # Checked here, so a typo (``Ref("clusterer")``) fails when the plugin is imported, with
        # the list of kinds, instead of as a KeyError while a user's spec is being validated.
        if self.kind not in KIND_NOUNS:
            raise ValueError(f"Ref({self.kind!r}): unknown registry kind; expected one of "
                             + ", ".join(repr(k) for k in KIND_NOUNS))


@dataclass
class Component:
    """A registry entry chosen by a spec table, with its validated keyword arguments."""

    kind: str
    name: str
    entry: Any
    params: dict[str, Any] = field(default_factory=dict)
    where: str = ""

    def build(self, **extra: Any) -> Any:
        """Call the factory with the spec's params; ``extra`` fills params the spec left unset and
        the factory accepts (e.g. a seed: ``build(random_state=run.seed)``).

        "Unset" includes a parameter at a ``None`` default: :func:`bind` records defaults, and a
        TOML spec cannot write ``None``, so such a value never comes from the user.
        """
        kwargs = dict(self.params)
        accepted = signature_params(self.entry.factory)
        for k, v in extra.items():
            if kwargs.get(k) is None and (accepted is None or k in accepted[0] or accepted[1]):
                kwargs[k] = v
        try:
            return self.entry.factory(**kwargs)
        except SpecError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise SpecError(f"{self.where}: {KIND_NOUNS.get(self.kind, self.kind)} "
                            f"{self.name!r} rejected its parameters: {exc}") from exc

    def to_spec(self) -> dict[str, Any]:
        return {"name": self.name, **{k: to_spec_value(v) for k, v in self.params.items()}}


def to_spec_value(value: Any) -> Any:
    if isinstance(value, Component):
        return value.to_spec()
    if isinstance(value, (list, tuple)):
        return [to_spec_value(v) for v in value]
    if isinstance(value, dict):
        return {k: to_spec_value(v) for k, v in value.items()}
    return value


class _ShortRepr(reprlib.Repr):
    """``repr`` bounded in length and depth, for values quoted in messages."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxdict, self.maxlist, self.maxtuple = 4, 12, 12, 12
        self.maxstring, self.maxother, self.maxlong = 160, 160, 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 256:  # repr() of an int of thousands of digits raises ValueError
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)

    def repr_dict(self, x: dict, level: int) -> str:
        # Python's dict repr: plain reprlib sorts the keys (and fails on keys of mixed types).
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}" for k, v in list(x.items())[:self.maxdict]]
        return "{" + ", ".join(items) + (", ...}" if len(x) > self.maxdict else "}")


_short_repr = _ShortRepr()


def show(value: Any) -> str:
    """``repr(value)`` for a message: short (long strings, lists and deep nesting are elided),
    and never raising (huge integers, objects whose ``__repr__`` fails)."""
    try:
        return _short_repr.repr(value)
    except Exception:  # noqa: BLE001 - a message must never fail
        return f"<{type(value).__name__}>"


#: Integers nasreg passes on (to torch, numpy, ...) must fit in 64 bits, as TOML's do.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_NAMES = {int: "an integer", float: "a number", bool: "a boolean (true or false)", str: "a string",
          dict: "a table", list: "a list"}


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    extras: list[Any] = []
    while typing.get_origin(annotation) is Annotated:
        args = typing.get_args(annotation)
        annotation, extras = args[0], extras + list(args[1:])
    return annotation, extras


def describe(annotation: Any) -> str:
    base, extras = _unwrap(annotation)
    origin = typing.get_origin(base)
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in typing.get_args(base) if a is not type(None)]
        text = " or ".join(parts)
    elif origin is Literal:
        text = "one of " + ", ".join(repr(a) for a in typing.get_args(base))
    elif origin in (list, tuple):
        args = typing.get_args(base)
        text = f"a list of {_plural(describe(args[0]))}" if args else "a list"
    elif origin is dict:
        text = "a table"
    else:
        text = _NAMES.get(base, getattr(base, "__name__", str(base)))
    for extra in extras:
        if isinstance(extra, Range):
            text += " " + extra.describe()
        if isinstance(extra, Ref):
            text += f" naming a registered {KIND_NOUNS.get(extra.kind, extra.kind)}"
    return text


def _plural(text: str) -> str:
    for art in ("an ", "a "):
        if text.startswith(art):
            word, _, rest = text[len(art):].partition(" ")
            return word + "s" + (" " + rest if rest else "")
    return text


def check(value: Any, annotation: Any, where: str, registries: Any = None) -> Any:
    """Return ``value`` checked (and, for ints given where numbers are expected, converted)
    against ``annotation``; raise :class:`SpecError` naming ``where`` otherwise."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return value
    base, extras = _unwrap(annotation)

    def fail(expected: str | None = None) -> SpecError:
        return SpecError(f"{where}: expected {expected or describe(annotation)}, got {show(value)}")

    if typing.get_origin(base) in (Union, types.UnionType):
        return _check_union(value, base, extras, where, registries, fail)
    out = _check_base(value, base, where, registries, fail)
    for extra in extras:
        if isinstance(extra, Range) and isinstance(out, (int, float)) and not extra.ok(out):
            raise fail()
        if isinstance(extra, Ref) and registries is not None:
            out = resolve_ref(out, extra.kind, where, registries)
    if base is int and not INT64_MIN <= out <= INT64_MAX:  # within its Range, if any: no bound set
        raise fail(f"{describe(annotation)} that fits in 64 bits")
    return out


def _check_union(value: Any, base: Any, extras: list[Any], where: str, registries: Any,
                 fail: Callable[..., SpecError]) -> Any:
    options = typing.get_args(base)
    if value is None and type(None) in options:
        return None
    errors = []
    for opt in options:
        if opt is type(None):
            continue
        try:
            return check(value, Annotated[opt, *extras] if extras else opt, where, registries)
        except SpecError as exc:
            errors.append((opt, exc))
    # A single non-None option, or the single option whose outer type the value has (a list
    # for ``int | list[int]``, a table for ``str | dict``), gives its own, more precise message
    # (``epochs[1]: ...``, ``unknown clusterer 'x'; did you mean ...``).
    if len(errors) == 1:
        raise errors[0][1]
    shaped = [exc for opt, exc in errors if _has_shape(value, opt)]
    if len(shaped) == 1:
        raise shaped[0]
    raise fail()


#: Plain types and what a value must be to pass as one (bool is no int, and no float).
_PLAIN: dict[Any, Callable[[Any], bool]] = {
    dict: lambda v: isinstance(v, dict),
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def _check_base(value: Any, base: Any, where: str, registries: Any, fail: Callable[..., SpecError]) -> Any:
    """``value`` checked against an annotation with no union and no ``Annotated`` extras."""
    origin = typing.get_origin(base)
    if origin is Literal:
        if value not in typing.get_args(base) or isinstance(value, bool) != any(
                isinstance(a, bool) for a in typing.get_args(base) if a == value):
            raise fail()
        return value
    if origin in (list, tuple) or base in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail()
        args = typing.get_args(base)
        return _check_items(value, args[0] if args else Any, where, registries)
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        try:
            out = float(value)
        except OverflowError:  # an int beyond the largest float
            raise fail("a finite number") from None
        if out != out or out in (float("inf"), float("-inf")):
            raise fail("a finite number")
        return out
    plain = _PLAIN.get(dict if origin is dict else base)
    if plain is not None and not plain(value):
        raise fail()
    return value


def _check_items(items: Any, annotation: Any, where: str, registries: Any) -> list[Any]:
    """Each item checked against ``annotation``, in one pass: an equal scalar seen before reuses
    its result (a list of 300,000 copies is one check), and an item's key path
    (``where[i]``) is made only for the message of the item that fails."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return list(items)
    done: dict[tuple[type, Any], Any] = {}
    out = []
    for i, v in enumerate(items):
        key = (type(v), v) if isinstance(v, (str, int, float)) else None
        if key is not None and key in done:
            out.append(done[key])
            continue
        try:
            checked = check(v, annotation, where, registries)
        except SpecError:
            check(v, annotation, f"{where}[{i}]", registries)  # the same failure, at its index
            raise
        if key is not None:
            done[key] = checked
        out.append(checked)
    return out


def _has_shape(value: Any, annotation: Any) -> bool:
    """Whether ``value`` has the outer type of ``annotation`` (its items and bounds aside)."""
    base, _extras = _unwrap(annotation)
    origin = typing.get_origin(base)
    if origin in (Union, types.UnionType):
        return any(_has_shape(value, a) for a in typing.get_args(base))
    if origin is Literal:
        return any(type(value) is type(a) for a in typing.get_args(base))
    if origin in (list, tuple) or base in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or base is dict:
        return isinstance(value, dict)
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is str:
        return isinstance(value, str)
    return False


def table_where(where: str) -> str:
    """The key path of a sub-table: ``x.toml: [selector] clusterer`` -> ``x.toml: [selector.clusterer]``
    (as the spec writes it), so its keys read ``[selector.clusterer] n_clusters``."""
    m = re.fullmatch(r"(.*)\[([^\]]+)\] ([A-Za-z0-9_-]+)", where)
    return f"{m[1]}[{m[2]}.{m[3]}]" if m else where


def resolve_ref(value: Any, kind: str, where: str, registries: Any) -> Any:
    """Check a registry reference: a name (kept as a string) or a table (made a Component)."""
    registry = registries[kind]
    if isinstance(value, str):
        try:
            registry.get(value)
        except RegistryError as exc:
            raise SpecError(f"{where}: {exc}") from None
        return value
    if isinstance(value, dict):
        where = table_where(where)
        if "name" not in value:
            raise SpecError(f"{where} name: missing required key (which {registry.noun} to use; "
                            "`nasreg list-plugins` lists them)")
        return component(kind, value, where, registries)
    raise SpecError(f"{where}: expected a {registry.noun} name or a table with 'name', got {show(value)}")


def signature_params(factory: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool] | None:
    """A factory's keyword parameters (annotations resolved) and whether it takes ``**kwargs``."""
    target: Any = factory
    while isinstance(target, functools.partial):  # annotations live on the wrapped function
        target = target.func
    if inspect.isclass(target):
        target = target.__init__
    elif not (inspect.isfunction(target) or inspect.ismethod(target)) and callable(target):
        target = type(target).__call__  # a callable instance: its __call__, not its class's fields
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: accept values unchecked
        hints = {}
    params: dict[str, inspect.Parameter] = {}
    var_kw = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            params[p.name] = p.replace(annotation=hints.get(p.name, p.annotation))
    return params, var_kw


def bind(factory: Callable[..., Any], keys: dict[str, Any], where: str, registries: Any = None,
         *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check ``keys`` against ``factory``'s signature; return them with defaults filled in.

    ``where`` names the table in messages (``specs/x.toml: [selector.clusterer]``). Parameters in
    ``skip`` are supplied by the core, not the spec.
    """
    sig = signature_params(factory)
    if sig is None:
        return dict(keys)
    params, var_kw = sig
    allowed = {n: p for n, p in params.items() if n not in skip}
    out: dict[str, Any] = {}
    for key, value in keys.items():
        if key not in allowed:
            if var_kw:
                out[key] = value
                continue
            msg = f"{where} {key}: unknown key"
            close = difflib.get_close_matches(key, list(allowed), n=3, cutoff=0.6)
            if close:
                msg += "; did you mean " + ", ".join(repr(c) for c in close) + "?"
            elif allowed:
                msg += " (known keys: " + ", ".join(sorted(allowed)) + ")"
            raise SpecError(msg)
        out[key] = check(value, allowed[key].annotation, f"{where} {key}", registries)
    for name, p in allowed.items():
        if name in out:
            continue
        if p.default is inspect.Parameter.empty:
            raise SpecError(f"{where} {name}: missing required key ({describe(p.annotation)})")
        default = p.default
        if default is not None and registries is not None:
            base, extras = _unwrap(p.annotation)
            if any(isinstance(e, Ref) for e in extras) and isinstance(default, dict):
                default = check(default, p.annotation, f"{where} {name}", registries)
        out[name] = default
    return out


def component(kind: str, table: dict[str, Any], where: str, registries: Any, *,
              skip: tuple[str, ...] = (), name_key: str = "name") -> Component:
    """Validate a spec table whose ``name`` picks an entry of ``kind``; the rest are its params.

    ``name_key`` is what the spec calls the name key in messages (``[data] dataset``).
    """
    registry = registries[kind]
    name = table.get("name")
    if not isinstance(name, str):
        raise SpecError(f"{where} {name_key}: expected a string naming a registered {registry.noun}, "
                        f"got {show(name)}")
    try:
        entry = registry.get(name)
    except RegistryError as exc:
        raise SpecError(f"{where} {name_key}: {exc}") from None
    keys = {k: v for k, v in table.items() if k != "name"}
    params = bind(entry.factory, keys, where, registries, skip=skip)
    return Component(kind=kind, name=name, entry=entry, params=params, where=where)
