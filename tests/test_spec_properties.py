"""Property tests (hypothesis): validation accepts a spec or fails cleanly, never crashes.

What is generated and what must hold:

* random specs: nested tables of every TOML type (integers of any size, including beyond int64,
  negative, floats with NaN, infinities, -0.0 and 1e300, booleans, strings of any characters,
  dates, times and datetimes, lists and tables nested a few levels), with table and key names
  drawn from the real ones, near misses and random text;
* valid specs (the toy spec and every spec in specs/) mutated at random paths, one to four times:
  a key dropped, a value replaced by any TOML value (another type, a list, a table), a number
  replaced by a huge, negative, zero, NaN or float-for-int one, an unknown key inserted at any
  level, a registry name (``name``, ``dataset``, an operation) replaced by another registered
  name, a near miss or random text;

  ``nasreg._core.spec.validate`` either returns a Spec or raises a NasregError (SpecError mostly) with
  a non-empty message: never another exception. An accepted spec's resolved form (what a run
  directory gets) dumps to TOML, encodes as UTF-8, and validates again to the same digest;
* ``--set`` text: random text, and ``KEY.PATH=VALUE`` built from real and random keys and TOML
  literals (and broken ones): ``parse_override`` parses or raises SpecError; applied to the toy
  spec, validation accepts or raises a NasregError;
* genotypes: random JSON-like data, valid genotypes mutated at random paths, and random bytes
  in a file: ``Genotype.from_dict`` / ``Genotype.load`` return a Genotype or raise
  GenotypeError (then ``validate`` against the registries: None or GenotypeError); and valid
  random genotypes round-trip exactly through ``to_dict``/JSON/``from_dict`` and ``save``/``load``.

Plugins are loaded once for the module (the built-ins and the toy components). ``pytest
--hypothesis-profile=ci`` (or ``CI=1``) derandomizes the examples (the profile is in conftest.py).
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import string
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis.control import currently_in_test_context, event
from hypothesis import strategies as st

from nasreg._core import spec as S
from nasreg._core.errors import GenotypeError, NasregError, SpecError
from nasreg._core.genotype import CellGenotype, Genotype, GenotypeEdge
from nasreg._core.plugins import load_plugins

from conftest import TOY_SPEC, TOYCORE_FILE

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = Path("prop.toml")

#: Loaded once for the module: the built-in plugins (entry points) and the toy components.
PLUGINS = load_plugins([str(TOYCORE_FILE)])
REGS = PLUGINS.registries

_FILES: list[dict[str, Any]] = [tomllib.loads(TOY_SPEC)] + [
    tomllib.loads(p.read_text()) for p in sorted((ROOT / "specs").glob("*.toml"))]
#: The valid search specs as written, and resolved (every key written out, defaults included,
#: so that mutations reach every key a factory takes).
SEARCH_SPECS = [raw for raw in _FILES if "data" in raw]
BASES: list[dict[str, Any]] = SEARCH_SPECS + [
    S.validate(copy.deepcopy(raw), SPEC_PATH, REGS).resolved() for raw in SEARCH_SPECS]

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _all_keys(value: Any, out: set[str]) -> set[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(k)
            _all_keys(v, out)
    elif isinstance(value, list):
        for v in value:
            _all_keys(v, out)
    return out


KNOWN_KEYS = sorted(set().union(*(_all_keys(b, set()) for b in BASES)) | set(S.SECTIONS))
REGISTERED = sorted({name for reg in REGS for name in reg.names()})

# --- TOML values --------------------------------------------------------------------------------

INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
                    -(2**63), -(2**63) - 1, 10**30, -(10**30), 2**200]
INTERESTING_FLOATS = [0.0, -0.0, 0.5, 1.0, 1.5, -1.0, 1e-300, 1e300, -1e300, math.nan, math.inf, -math.inf]

texts = st.text(max_size=16) | st.text(alphabet=string.ascii_lowercase + "_-.", max_size=12)
names = st.sampled_from(REGISTERED) | texts | st.sampled_from(REGISTERED).map(lambda n: n[:-1] + "x")
keys = st.sampled_from(KNOWN_KEYS) | texts
integers = st.integers() | st.sampled_from(INTERESTING_INTS) | st.integers(-(2**70), 2**70)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(INTERESTING_FLOATS)
numbers = integers | floats
scalars = (numbers | st.booleans() | texts | names
           | st.dates() | st.times() | st.datetimes()
           | st.datetimes(timezones=st.just(datetime.timezone.utc)))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=8)
random_specs = st.dictionaries(
    st.sampled_from(S.SECTIONS) | texts,
    st.dictionaries(keys, values, max_size=8) | values,
    max_size=8)


# --- mutations of valid specs -------------------------------------------------------------------


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (a tuple of dict keys and list indices) below ``node``."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(prefix + (i,))
            out.extend(_paths(v, prefix + (i,)))
    return out


def _get(root: Any, path: tuple) -> Any:
    for part in path:
        root = root[part]
    return root


def _parent(root: Any, path: tuple) -> Any:
    return _get(root, path[:-1])


@st.composite
def mutated_specs(draw) -> dict[str, Any]:
    raw = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(raw)
        kind = draw(st.sampled_from(["drop", "replace", "number", "insert", "rename"]))
        if kind == "insert" or not paths:
            tables = [()] + [p for p in paths if isinstance(_get(raw, p), dict)]
            _get(raw, draw(st.sampled_from(tables)))[draw(keys)] = draw(values)
            continue
        path = draw(st.sampled_from(paths))
        parent = _parent(raw, path)
        if kind == "drop":
            del parent[path[-1]]
        elif kind == "replace":
            parent[path[-1]] = draw(values)
        elif kind == "number":  # anything, or a plausible size (more specs get accepted)
            parent[path[-1]] = draw(numbers | st.integers(0, 8) | st.floats(0, 1))
        else:  # a name: a registered one, a near miss or random text
            named = [p for p in paths if p[-1] in ("name", "dataset") or "operations" in p[:-1]]
            if named:
                path = draw(st.sampled_from(named))
                _parent(raw, path)[path[-1]] = draw(names)
    return raw


# --- the property ---------------------------------------------------------------------------------


def validates_cleanly(raw: Any) -> S.Spec | None:
    """``validate`` returns a Spec or raises a NasregError; an accepted spec's resolved form is
    what a run directory can hold (TOML, UTF-8) and validates again to the same spec."""
    try:
        spec = S.validate(copy.deepcopy(raw), SPEC_PATH, REGS)
    except NasregError as exc:
        assert str(exc).strip()
        _event(f"rejected: {type(exc).__name__}")
        return None
    _event("accepted")
    resolved = spec.resolved()
    S.check_toml_values(resolved, "resolved: ")  # valid TOML: 64-bit integers, shallow
    text = tomli_w.dumps(resolved)
    text.encode("utf-8")
    again = S.validate(tomllib.loads(text), SPEC_PATH, REGS)
    assert again.digest() == spec.digest()
    return spec


def _event(name: str) -> None:
    """Count outcomes (``--hypothesis-show-statistics``): a property that never accepts tests little."""
    if currently_in_test_context():
        event(name)


def test_the_bases_are_valid():
    for raw in BASES:
        assert validates_cleanly(raw) is not None


@PROPERTY
@given(random_specs)
def test_random_specs_validate_or_fail_cleanly(raw):
    validates_cleanly(raw)


@PROPERTY
@given(mutated_specs())
def test_mutated_valid_specs_validate_or_fail_cleanly(raw):
    validates_cleanly(raw)


@st.composite
def one_value_changed(draw) -> dict[str, Any]:
    """A valid spec with one value (at any depth) replaced: the rest stays valid, so odd values
    (huge, negative, NaN, another type) at that key reach what comes after validation."""
    raw = copy.deepcopy(draw(st.sampled_from(BASES)))
    path = draw(st.sampled_from(_paths(raw)))
    _parent(raw, path)[path[-1]] = draw(values)
    return raw


@PROPERTY
@given(one_value_changed())
def test_one_value_changed(raw):
    validates_cleanly(raw)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@st.composite
def one_number_changed(draw) -> dict[str, Any]:
    """A valid spec with one of its numbers (sizes, rates, seeds, epochs, ...) replaced by any
    number: huge, beyond 64 bits, negative, zero, a float for an int, NaN, infinite."""
    raw = copy.deepcopy(draw(st.sampled_from(BASES)))
    path = draw(st.sampled_from([p for p in _paths(raw) if _is_number(_get(raw, p))]))
    _parent(raw, path)[path[-1]] = draw(numbers)
    return raw


@PROPERTY
@given(one_number_changed())
def test_one_number_changed(raw):
    validates_cleanly(raw)


@PROPERTY
@given(st.sampled_from(BASES), st.sampled_from(S.SECTIONS), values)
def test_a_whole_table_replaced(base, section, value):
    raw = copy.deepcopy(base)
    raw[section] = value
    validates_cleanly(raw)


# --- --set ----------------------------------------------------------------------------------------


def _literal(value: Any) -> str:
    """``value`` as a one-line TOML literal (inline tables and arrays), as ``--set`` takes it."""
    if isinstance(value, dict):
        return "{" + ", ".join(tomli_w.dumps({k: 0})[:-len(" = 0\n")] + " = " + _literal(v)
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = "):].strip()


key_paths = st.lists(keys, min_size=1, max_size=4).map(".".join)
broken = st.sampled_from(["[1,", "{a = ", '"open', "'", "[[", "1 2", "= =", "nan nan", "\n[x]\ny = 1", "\udcff"])
set_texts = (st.text(max_size=40)
             | st.tuples(key_paths, st.sampled_from(["=", " = ", "=="]),
                         values.map(_literal) | texts | broken | st.text(max_size=20)).map("".join))


@PROPERTY
@given(set_texts)
def test_set_parses_or_raises_spec_error(text):
    try:
        parts, _value = S.parse_override(text)
    except SpecError as exc:
        assert str(exc).startswith("--set ")
        return
    assert parts and all(isinstance(p, str) and p for p in parts)


#: ``--set`` as users write it: a real key path of the toy spec (or a new key below one), a value.
real_set_texts = st.tuples(
    st.sampled_from([".".join(map(str, p)) for p in _paths(BASES[0]) if all(isinstance(k, str) for k in p)]),
    st.sampled_from(["", "", ""]) | keys.map(lambda k: "." + k),
    st.just("="),
    numbers.map(_literal) | values.map(_literal) | texts | broken,
).map("".join)


@PROPERTY
@given(st.lists(real_set_texts | set_texts, max_size=3))
def test_set_applied_to_a_valid_spec(overrides):
    try:
        raw = S.apply_overrides(BASES[0], overrides)
    except SpecError:
        return
    validates_cleanly(raw)


# --- genotypes ------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
json_no_nan = st.recursive(  # (integers within 64 bits: what nasreg reads back)
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


@st.composite
def edges(draw) -> GenotypeEdge:
    node = draw(st.integers(1, 2**40))
    return GenotypeEdge(node, draw(st.integers(0, node - 1)), draw(names))


@st.composite
def genotypes(draw) -> Genotype:
    cells = {}
    for name in draw(st.lists(texts, min_size=1, max_size=3, unique=True)):
        cells[name] = CellGenotype(edges=draw(st.lists(edges(), min_size=1, max_size=6)),
                                   concat=draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=4)),
                                   combine=draw(st.dictionaries(st.integers(0, 10**8), texts, max_size=3)))
    return Genotype(space=draw(names.filter(bool)), cells=cells,
                    provenance=draw(st.dictionaries(st.text(max_size=8), json_no_nan, max_size=4)))


@st.composite
def mutated_genotype_dicts(draw) -> Any:
    data = json.loads(json.dumps(draw(genotypes()).to_dict()))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        action = draw(st.sampled_from(["drop", "replace", "insert"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
    return data


def loads_cleanly(data: Any) -> Genotype | None:
    try:
        genotype = Genotype.from_dict(data, source="g.json")
    except GenotypeError as exc:
        assert str(exc).startswith("g.json: ")
        return None
    try:
        genotype.validate(REGS, source="g.json")
    except GenotypeError:
        pass
    genotype.describe()
    json.dumps(genotype.to_dict())
    return genotype


@PROPERTY
@given(json_values)
def test_genotype_from_random_json(data):
    loads_cleanly(data)


@PROPERTY
@given(mutated_genotype_dicts())
def test_genotype_from_mutated_valid_json(data):
    loads_cleanly(data)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@PROPERTY
@given(data=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())
       | mutated_genotype_dicts().map(lambda v: json.dumps(v).encode()[: len(json.dumps(v)) // 2]))
def test_genotype_load_of_random_bytes(scratch, data):
    path = scratch / "g.json"
    path.write_bytes(data)
    try:
        Genotype.load(path, REGS)
    except GenotypeError as exc:
        assert str(exc).startswith(f"{path}: ")


@PROPERTY
@given(genotypes(), st.sampled_from([2**63, -2**63 - 1, 10**30]))
def test_a_genotype_nasreg_could_not_read_back_is_not_written(scratch, genotype, number):
    genotype.provenance = {**genotype.provenance, "big": number}
    path = scratch / "unreadable.json"
    path.unlink(missing_ok=True)
    with pytest.raises(GenotypeError, match="beyond 64 bits.*not written"):
        genotype.save(path)
    assert not path.exists()


@PROPERTY
@given(genotypes())
def test_valid_genotypes_round_trip(scratch, genotype):
    data = genotype.to_dict()
    back = Genotype.from_dict(json.loads(json.dumps(data)))
    assert back == genotype
    assert back.to_dict() == data
    assert Genotype.load(genotype.save(scratch / "rt.json")) == genotype
