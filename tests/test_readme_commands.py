"""The README's command list is the CLI: every command, with every option, and nothing else.

Read from the ``## Commands`` block of README.md and compared with the click commands themselves
(``nasreg.cli.main`` and its groups), so a new option or command cannot go undocumented.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from nasreg.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_lines() -> dict[str, str]:
    """``"study run"`` -> the README's line for it, from the fenced block under ``## Commands``."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"^## Commands\s*\n+```\n(.*?)\n```", text, re.S | re.M)
    assert block, "README.md has no ``## Commands`` block"
    lines: dict[str, str] = {}
    for line in block.group(1).splitlines():
        words = line.split()
        assert words and words[0] == "nasreg", line
        path = [w for w in words[1:4] if re.fullmatch(r"[a-z][a-z-]*", w)]
        name = " ".join(path[:2] if path and path[0] in _groups() else path[:1])
        assert name not in lines, f"README lists `nasreg {name}` twice"
        lines[name] = line
    return lines


def _groups() -> set[str]:
    return {name for name, cmd in main.commands.items() if isinstance(cmd, click.Group)}


def _commands() -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for name, cmd in main.commands.items():
        if cmd.hidden:
            continue
        if isinstance(cmd, click.Group):
            out.update({f"{name} {sub}": c for sub, c in cmd.commands.items() if not c.hidden})
        else:
            out[name] = cmd
    return out


def test_every_command_is_listed_and_nothing_else():
    assert set(_readme_lines()) == set(_commands())


@pytest.mark.parametrize("name", sorted(_commands()))
def test_the_readme_line_has_exactly_the_commands_options(name):
    line = _readme_lines().get(name)
    assert line is not None, f"README's command list lacks `nasreg {name}`"
    listed = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", line))
    options = [p for p in _commands()[name].params if isinstance(p, click.Option) and p.name != "help"]
    known = {opt for p in options for opt in (*p.opts, *p.secondary_opts)}
    for p in options:
        assert listed & set(p.opts), f"README's `nasreg {name}` line lacks {'/'.join(p.opts)}"
    assert listed <= known, f"README's `nasreg {name}` line shows {sorted(listed - known)}, which it does not take"
    for arg in (p for p in _commands()[name].params if isinstance(p, click.Argument)):
        metavar = arg.metavar or arg.name.upper()
        assert metavar.rstrip(".") in line, f"README's `nasreg {name}` line lacks the argument {metavar}"
