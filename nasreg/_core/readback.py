"""Reading back what nasreg wrote: one bounded parser and a small schema checker for every JSON
and JSON-lines file nasreg reads from a run directory (or a genotype file a user names).

:func:`parse` turns bytes (or text) into JSON values and refuses, as a :class:`Damaged` naming
the key path, what nasreg never writes and Python's ``json`` would crash on or pass on:

* text that is not UTF-8, and text that is not JSON;
* nesting deeper than :data:`MAX_DEPTH` (Python's parser raises RecursionError near 1,000);
* ``NaN``, ``Infinity``, ``-Infinity`` and floats that overflow (``1e999``);
* numbers of more than :data:`MAX_NUMBER_CHARS` characters (``int()`` raises ValueError past
  4,300 digits) and integers beyond 64 bits;
* strings holding lone UTF-16 surrogates (``"\\ud800"``: printing one raises).

The schema types (:class:`Num`, :class:`Int`, :class:`Str`, :class:`Bool`, :class:`ListOf`,
:class:`MapOf`, :class:`Obj`, :data:`ANY`, :class:`GenotypeValue`) check a parsed value: required
and optional keys, types, bounds, nested lists and objects; extra keys are allowed. A mismatch
is a :class:`Damaged` such as ``key "final_val_acc": expected a number, got a string``.

:func:`schema_for` looks a schema up by file name (``"summary.json"``, ``"eval/results.json"``,
``"metrics.jsonl"``, ...): the core's files are checked; any other file (a plugin's) gets only
the bounded parse. :class:`nasreg.RunDir` reads through :func:`load` and :func:`load_line`, so
callers need not change.

Sizes are bounded and every check is linear in the size of the file.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from pathlib import PurePath
from typing import Any, Callable, Iterator

#: Larger than any file nasreg writes; reading stops there.
MAX_BYTES = 64 * 2**20
#: Deeper than any file nasreg writes (a results.json's genotype edges: 6 levels).
MAX_DEPTH = 64
#: Longer than any number nasreg writes (a float's repr is at most 24 characters).
MAX_NUMBER_CHARS = 40
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: What a JSON-lines line that does not parse (a crash mid-append, if it is the last one) is.
TORN = "is not valid JSON"
#: How long a key (or a key path) may be in a message before it is shortened.
MAX_KEY_CHARS, MAX_PATH_CHARS = 40, 160

Path_ = tuple  # a key path: dict keys (str) and list indices (int), outermost first


class Damaged(ValueError):
    """What is wrong with a JSON text or value: ``what``, at the key path ``key`` (empty: the
    whole value). ``torn``: the text does not parse at all (a cut file or line)."""

    def __init__(self, what: str, key: Path_ = (), torn: bool = False):
        super().__init__(what)
        self.what, self.key, self.torn = what, tuple(key), torn

    def __str__(self) -> str:
        return f'key "{key_path(self.key)}": {self.what}' if self.key else self.what


def key_path(key: Path_) -> str:
    """``("stages", 0, "epoch_seconds")`` as ``stages[0].epoch_seconds``, long keys shortened
    and control characters escaped (a message stays one short line)."""
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = json.dumps(part)[1:-1]  # ASCII, control characters and quotes escaped
            if len(text) > MAX_KEY_CHARS:
                text = text[: MAX_KEY_CHARS - 3] + "..."
            out += ("." if out else "") + text
    if len(out) > MAX_PATH_CHARS:
        out = out[: MAX_PATH_CHARS // 2 - 2] + "...." + out[-(MAX_PATH_CHARS // 2 - 2):]
    return out


# --- the bounded parser --------------------------------------------------------------------------

class _Bad:
    """Stands in the parsed value for a number nasreg refuses (found, with its key path, after)."""

    __slots__ = ("what",)

    def __init__(self, what: str):
        self.what = what


def _number_hooks(found: list[_Bad]) -> dict[str, Callable[[str], Any]]:
    """``json.loads`` hooks that put a :class:`_Bad` (also into ``found``) in place of a number of
    too many digits, an integer beyond 64 bits, a float that overflows, NaN or an infinity."""
    def bad(what: str) -> _Bad:
        found.append(_Bad(what))
        return found[-1]

    def parse_int(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            return bad(f"a number has too many digits ({len(text)}); not a number nasreg writes")
        value = int(text)
        return value if INT64_MIN <= value <= INT64_MAX else bad(f"integer {text} is beyond 64 bits")

    def parse_float(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            return bad(f"a number has too many digits ({len(text)}); not a number nasreg writes")
        value = float(text)
        return value if math.isfinite(value) else bad(f"expected a finite number, got {text} (it overflows)")

    return {"parse_int": parse_int, "parse_float": parse_float,
            "parse_constant": lambda text: bad(f"expected a finite number, got {text}")}


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
#: A surrogate escape (``\ud800``), which may be half of a valid pair; checked exactly after.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _too_deep(text: str) -> bool:
    """Whether arrays and objects nest more than :data:`MAX_DEPTH` deep (outside strings)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > MAX_DEPTH


def _walk(value: Any, key: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every value and object key inside ``value`` with its key path, in document order (the
    depth is bounded by :func:`parse` before this runs)."""
    yield key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*key, k), k
            yield from _walk(v, (*key, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*key, i))


def parse(data: bytes | str) -> Any:
    """The JSON value in ``data``, bounded and checked (see the module docstring); a
    :class:`Damaged` otherwise."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Damaged(f"not valid JSON: not UTF-8 text (byte {exc.start})", torn=True) from None
    if _too_deep(data):
        raise Damaged(f"not valid JSON: nested too deeply (more than {MAX_DEPTH} levels)")
    found: list[_Bad] = []
    try:
        value = json.loads(data, **_number_hooks(found))
    except RecursionError:  # not reached after _too_deep; kept so no input can raise it
        raise Damaged(f"not valid JSON: nested too deeply (more than {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # json.JSONDecodeError
        raise Damaged(f"not valid JSON (truncated or corrupted?): {exc}", torn=True) from None
    if found:
        _find_bad_numbers(value)
    if _SURROGATE_ESCAPE.search(data):
        for key, item in _walk(value):
            if isinstance(item, str) and _SURROGATE.search(item):
                raise Damaged("a string holds a lone UTF-16 surrogate (not text nasreg writes)", key)
    return value


def _find_bad_numbers(value: Any) -> None:
    """Raise for the first refused number in ``value``, naming its key path."""
    if not isinstance(value, (dict, list, _Bad)):
        return
    for key, item in _walk(value):
        if isinstance(item, _Bad):
            raise Damaged(item.what, key)


# --- schemas -------------------------------------------------------------------------------------

def _got(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    return {float: "a number", str: "a string", dict: "a JSON object", list: "a JSON array"}.get(
        type(value), type(value).__name__)


class Schema:
    """A check of a JSON value: :meth:`check` raises :class:`Damaged` naming the key path."""

    #: What the value should be, for messages (``"a number"``).
    what = "a JSON value"

    def __init__(self, *, null: bool = False):
        self.null = null

    def check(self, value: Any, key: Path_ = ()) -> None:
        """Raise :class:`Damaged` if ``value`` (at ``key``) does not match."""
        if value is None and self.null:
            return
        if not self.accepts(value):
            raise Damaged(f"expected {self.what}{' or null' if self.null else ''}, got {_got(value)}", key)
        self.check_inside(value, key)

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has the right type (contents are :meth:`check_inside`'s)."""
        return True

    def check_inside(self, value: Any, key: Path_) -> None:
        """Check what a value of the right type holds (bounds, items, keys)."""


class _Any(Schema):
    pass


#: Any JSON value (parse has bounded it already).
ANY = _Any()


class Num(Schema):
    """A finite number (an integer or a float; not true/false), at least ``min`` if given."""

    what = "a number"

    def __init__(self, *, null: bool = False, min: float | None = None):
        super().__init__(null=null)
        self.min = min

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def check_inside(self, value: Any, key: Path_) -> None:
        if not math.isfinite(value):
            raise Damaged(f"expected a finite number, got {value}", key)
        if self.min is not None and value < self.min:
            raise Damaged(f"expected {self.what} >= {self.min}, got {value}", key)


class Int(Num):
    """An integer within 64 bits (not true/false), at least ``min`` if given."""

    what = "an integer"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def check_inside(self, value: Any, key: Path_) -> None:
        if not INT64_MIN <= value <= INT64_MAX:
            raise Damaged("integer is beyond 64 bits", key)
        super().check_inside(value, key)


class Str(Schema):
    what = "a string"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)


class Bool(Schema):
    what = "true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


class ListOf(Schema):
    """A JSON array whose every item matches ``item``."""

    what = "a JSON array"

    def __init__(self, item: Schema, *, null: bool = False):
        super().__init__(null=null)
        self.item = item

    def accepts(self, value: Any) -> bool:
        return isinstance(value, list)

    def check_inside(self, value: Any, key: Path_) -> None:
        if self.item is not ANY:
            for i, item in enumerate(value):
                self.item.check(item, (*key, i))


class MapOf(Schema):
    """A JSON object of any keys whose every value matches ``value``."""

    what = "a JSON object"

    def __init__(self, value: Schema, *, null: bool = False):
        super().__init__(null=null)
        self.value = value

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def check_inside(self, value: Any, key: Path_) -> None:
        if self.value is not ANY:
            for k, v in value.items():
                self.value.check(v, (*key, k))


class Obj(Schema):
    """A JSON object with the ``required`` keys and, where present, the ``optional`` ones, each
    matching its schema; other keys are allowed (and not checked)."""

    what = "a JSON object"

    def __init__(self, required: dict[str, Schema] | None = None, optional: dict[str, Schema] | None = None,
                 *, null: bool = False):
        super().__init__(null=null)
        self.required, self.optional = dict(required or {}), dict(optional or {})

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def check_inside(self, value: Any, key: Path_) -> None:
        for name in self.required:
            if name not in value:
                raise Damaged("missing (a required key)", (*key, name))
        for name, schema in (*self.required.items(), *self.optional.items()):
            if name in value:
                schema.check(value[name], (*key, name))


class GenotypeValue(Schema):
    """A genotype as :meth:`nasreg.Genotype.from_dict` reads it (its messages, after the key)."""

    what = "a JSON object"

    def check(self, value: Any, key: Path_ = ()) -> None:
        from .errors import GenotypeError
        from .genotype import Genotype

        prefix = "genotype: "
        try:
            Genotype.from_dict(value, source=prefix[:-2])
        except GenotypeError as exc:
            message = str(exc)
            raise Damaged(message[len(prefix):] if message.startswith(prefix) else message, key) from None


# --- the core's files ----------------------------------------------------------------------------

_NUM, _NUM_OR_NULL, _COUNT = Num(), Num(null=True), Int(min=0)
#: Per cell type, per edge, the candidate op names.
_CANDIDATES = MapOf(ListOf(ListOf(Str())))
#: Per cell type, per edge, per op: one value per joint epoch.
_HISTORY = MapOf(ListOf(ListOf(ListOf(_NUM_OR_NULL))))

_STAGE = Obj(
    required={"stage": _COUNT, "epochs": _COUNT, "num_weights": _COUNT, "num_candidate_ops": _COUNT,
              "epoch_seconds": ListOf(_NUM)},
    optional={"candidates": _CANDIDATES, "warmup_epochs": _COUNT, "step_seconds": _NUM,
              # [search] monitor_early_stop fired (nasreg._core.monitor)
              "stopped_early": Obj(required={"epoch": _COUNT, "reason": Str()}, optional={"alphas_epoch": Int()})},
)


class _Summary(Obj):
    """``summary.json``: a finished search's keys and genotype are required; a failed run's
    (``"status": "failed"``) may lack any of them (those present are still checked)."""

    def check_inside(self, value: Any, key: Path_) -> None:
        if value.get("status") == "failed":
            Obj(optional=self.required | self.optional).check_inside(value, key)
            return
        if "genotype" not in value:
            raise Damaged("missing (a required key)", (*key, "genotype"))
        super().check_inside(value, key)


SUMMARY = _Summary(
    required={"name": Str(null=True), "run_dir": Str(), "wall_seconds": _NUM, "peak_memory_mb": _NUM},
    optional={"genotype": GenotypeValue(), "spec_hash": Str(), "device": Str(), "deterministic": Bool(),
              "seed": Int(), "loader": Str(null=True), "final_val_acc": _NUM_OR_NULL,
              "final_val_loss": _NUM_OR_NULL, "stages": ListOf(Obj(optional=_STAGE.required | _STAGE.optional)),
              "report": ListOf(ANY), "world_size": Int(min=1), "status": Str(), "error": Str()},
)

RESULTS = Obj(
    required={"kind": Str(), "test_acc": _NUM_OR_NULL, "params": _COUNT, "flops": _COUNT,
              "wall_seconds": _NUM, "genotype": GenotypeValue()},
    optional={"name": Str(null=True), "run_dir": Str(), "genotype_source": Str(null=True), "spec_hash": Str(),
              "dataset": Str(), "device": Str(), "seed": Int(), "epochs": _COUNT, "loader": Str(null=True),
              "test_error": _NUM_OR_NULL, "test_error_percent": _NUM_OR_NULL, "test_loss": _NUM_OR_NULL,
              "train_acc": _NUM_OR_NULL, "params_with_auxiliary": Int(min=0, null=True), "macs": _COUNT,
              "input_shape": ListOf(_COUNT), "num_classes": _COUNT, "network": MapOf(ANY),
              "peak_memory_mb": _NUM_OR_NULL,
              "search_cost": Obj(optional={"run_dir": Str(null=True), "wall_seconds": _NUM,
                                           "device": Str(null=True), "gpu_days": _NUM_OR_NULL})},
)

STAGES = ListOf(_STAGE)

GRADIENTS = Obj(
    required={"stat": Str(), "stages": ListOf(Obj(
        required={"stage": _COUNT},
        optional={"candidates": _CANDIDATES, "grad_history": _HISTORY, "alpha_history": _HISTORY}))},
)

#: One line of ``metrics.jsonl``: a search's epoch (with ``stage``) or a training run's.
METRICS_LINE = Obj(
    required={"epoch": _COUNT},
    optional={"stage": _COUNT, "joint": Bool(), "alphas": MapOf(ListOf(ListOf(_NUM))),
              "skip_connects": MapOf(_COUNT), "monitor_iterations_run": _COUNT,  # [search] monitor
              **{k: _NUM_OR_NULL for k in (
                  "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "test_error",
                  "lr", "drop_path_prob", "epoch_seconds", "wall_seconds", "peak_memory_mb",
                  "hessian_max_eig", "monitor_seconds")}},
)

#: The schema of each core file, by file name (a path's last part).
SCHEMAS: dict[str, Schema] = {
    "summary.json": SUMMARY, "results.json": RESULTS, "stages.json": STAGES, "gradients.json": GRADIENTS,
    "genotype.json": GenotypeValue(), "metrics.jsonl": METRICS_LINE,
}


def schema_for(name: str | PurePath) -> Schema | None:
    """The schema of the core file ``name`` (of each line, for a ``.jsonl`` file), or None (a
    plugin's file: only the bounded parse)."""
    return SCHEMAS.get(PurePath(name).name)


# --- reading -------------------------------------------------------------------------------------

def load(data: bytes | str, schema: Schema | None = None) -> Any:
    """:func:`parse` ``data``, then check it against ``schema``; a :class:`Damaged` otherwise."""
    value = parse(data)
    if schema is not None:
        schema.check(value)
    return value


def load_line(line: bytes, schema: Schema | None = None) -> dict[str, Any]:
    """One JSON-lines record (a JSON object), checked; a :class:`Damaged` whose ``what`` reads
    after ``line N``: :data:`TORN`, ``is not a JSON object``, ``is nested too deeply ...`` or a
    key's problem."""
    try:
        value = parse(line)
    except Damaged as exc:
        if exc.torn:
            raise Damaged(TORN, torn=True) from None
        raise Damaged(exc.what.replace("not valid JSON: ", "is ", 1) if not exc.key else exc.what,
                      exc.key) from None
    if not isinstance(value, dict):
        raise Damaged("is not a JSON object")
    if schema is not None:
        schema.check(value)
    return value


def line_message(source: Any, number: int, why: str) -> str:
    """The one-line message of line ``number`` of ``source`` being damaged as ``why`` says."""
    return f"{source}: line {number}{' ' if why.startswith('is ') else ': '}{why}"
