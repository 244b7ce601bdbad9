"""Sizes that made nasreg slow or loud (issue 13, class 8).

A spec with a few hundred thousand list entries is checked in linear time (a list of 300,000
``[run] plugins`` was 300,000 imports, the operations' duplicate check was quadratic), and user
text echoed into a message is shortened at one place (``nasreg._core.errors.shorten``, applied
to every :class:`nasreg.NasregError`): a 100,000-character key or value gives a line of a few
hundred characters that keeps its head and tail and says how many characters were cut.

Every case goes through the CLI: ``validate`` and ``run`` give the same one line, exit 2,
nothing written. No tight timings: a generous bound per command, and the linearity of the
duplicate check counted in comparisons.
"""

from __future__ import annotations

import time

import pytest

import nasreg
from cli_checks import SPEC, user  # noqa: F401

N = 300_000
#: Far above what a linear check of N entries takes, far below what the quadratic one took.
BOUND_S = 60.0


def huge_list(items) -> str:
    return "[" + ", ".join(items) + "]"


def with_key(table: str, line: str, spec: str = SPEC) -> str:
    """``spec`` with ``line`` added at the top of ``[table]``."""
    head = f"[{table}]\n"
    assert head in spec
    return spec.replace(head, head + line + "\n", 1)


def refused_quickly(user, text: str, expect: tuple[str, ...], longest: int = 600) -> str:  # noqa: F811
    """validate and run: the same short line, each within the bound."""
    path = user.spec(text)
    lines = []
    for args in (("validate", path), ("run", path, "-q")):
        start = time.monotonic()
        lines.append(user.fails(*args, expect=expect))
        assert time.monotonic() - start < BOUND_S, args[0]
    assert lines[0] == lines[1]
    assert len(lines[0]) < longest, len(lines[0])
    return lines[0]


def test_300000_plugins_of_one_name_are_one_import(user):  # noqa: F811
    text = SPEC.replace('plugins = [', 'plugins = [' + ', '.join(['"no_such_plugin_module"'] * N) + ', ', 1)
    refused_quickly(user, text, ("plugin 'no_such_plugin_module'", "No module named"))


def test_300000_distinct_plugins_are_refused_by_their_count(user):  # noqa: F811
    text = SPEC.replace('plugins = [', 'plugins = [' + ', '.join(f'"p{i}"' for i in range(N)) + ', ', 1)
    refused_quickly(user, text, ("[run] plugins", "at most 256 plugins", "300,001"))


def test_300000_operations_are_checked_once_each(user):  # noqa: F811
    text = SPEC.replace('operations = ["toy_zero", "toy_skip", "toy_conv"]',
                        "operations = " + huge_list(['"toy_conv"'] * N))
    refused_quickly(user, text, ("[search_space] operations", "'toy_conv' is listed twice"))


def test_an_epoch_list_of_300000_entries(user):  # noqa: F811
    text = SPEC.replace("epochs = 2\n", "epochs = " + huge_list(["2"] * N) + "\n")
    refused_quickly(user, text, ("[search] epochs", "one value per stage", "300000"))


def test_300000_reduction_indices_name_the_duplicate_not_the_list(user):  # noqa: F811
    """The DARTS space, built when the spec is validated: one index named, not the whole list."""
    from test_validate_is_run import DARTS

    text = DARTS.replace("reductions = [1]", "reductions = " + huge_list(["1"] * N))
    refused_quickly(user, text, ("reductions", "duplicate cell index 1"))


def test_a_100000_character_key_is_shortened(user):  # noqa: F811
    key = "k" * 60_000 + "TAIL" + "q" * 39_996
    line = refused_quickly(user, with_key("data", f"{key} = 1"), ("[data] kkkk", "characters cut", "unknown key"))
    assert "qqqq" in line  # the tail, as well as the head
    assert key not in line


def test_a_100000_character_value_is_shortened(user):  # noqa: F811
    name = "d" * 100_000
    text = SPEC.replace('dataset = "toy-data"', f'dataset = "{name}"')
    line = refused_quickly(user, text, ("[data] dataset", "characters cut"))
    assert name not in line


@pytest.mark.parametrize("arg", ["run.device=" + "c" * 100_000, "run.name=" + "n/" * 50_000,
                                 "search_space.name=" + "s" * 100_000])
def test_long_values_from_the_command_line_are_shortened(user, arg):  # noqa: F811
    path = user.spec()
    line = user.fails("validate", path, "--set", arg)
    assert len(line) < 600


class CountingStr(str):
    """A string that counts how often it is compared for equality."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        CountingStr.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_the_duplicate_check_of_operations_is_linear():
    """``operation_names`` compared every name with every other (``list.count``): n**2 comparisons.
    Counted, not timed: a linear check compares a few times per name at most."""
    n = 3000
    names = [CountingStr(f"op{i}") for i in range(n)]
    CountingStr.comparisons = 0
    assert nasreg.operation_names(names) == names
    assert CountingStr.comparisons <= 2 * n, CountingStr.comparisons
    with pytest.raises(ValueError, match="'op7' listed more than once"):
        nasreg.operation_names([*names, CountingStr("op7")])


def test_a_long_message_is_cut_in_one_place():
    """Every NasregError: over-long tokens keep head and tail, the whole line stays bounded."""
    from nasreg._core.errors import MAX_MESSAGE, shorten

    exc = nasreg.SpecError("x.toml: [a] " + "k" * 100_000 + ": unknown key; known: " + ", ".join(["abc"] * 100_000))
    assert len(str(exc)) <= MAX_MESSAGE + 100
    assert "[99," in str(exc) and "characters cut]" in str(exc)
    assert shorten("a short message") == "a short message"
    assert shorten(str(exc)) == str(exc)  # shortening twice changes nothing
