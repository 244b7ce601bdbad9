"""What hostile-input tests check of a failed command: exit status 2, one line on stderr that
starts with ``error:``, no traceback, and no file of the user touched (bytes and mtimes).

``snapshot(folder)`` records a folder; ``check_line(...)`` checks a result's one line; the
``user`` fixture (import it into a test module) is a working folder with ``user.spec(text)`` and
``user.fails(*args, expect=...)``, which runs ``nasreg`` in-process and checks all of the above.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from nasreg import cli
from nasreg.cli import main

from conftest import TOY_SPEC, TOYCORE_FILE

#: The toy spec, loading the toy components as a file plugin (the core alone, fast).
SPEC = f'[run]\nplugins = ["{TOYCORE_FILE}"]\n' + TOY_SPEC.replace("[run]\n", "", 1)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: type, size, mtime (ns) and, for files, the bytes."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, data)
    return out


def check_line(exit_code: int, stderr: str, output: str, fragments: tuple[str, ...]) -> str:
    assert exit_code == 2, output
    assert "Traceback" not in output
    # A spec's warnings come first, each one clean line (`warning: ...`); the error is one line.
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def user(tmp_path, monkeypatch):
    """The user's folder (the working directory): ``user.spec(text)`` writes a spec,
    ``user.fails(*args, expect=(...))`` runs ``nasreg`` on it and checks the one-line error and
    that nothing in the folder changed."""
    monkeypatch.chdir(tmp_path)
    # A narrow error console: a long message must stay on one line.
    monkeypatch.setattr(cli, "err_console", Console(stderr=True, width=40))

    class User:
        root = tmp_path

        def spec(self, text: str | bytes = SPEC, name: str = "spec.toml") -> Path:
            path = tmp_path / name
            path.write_bytes(text if isinstance(text, bytes) else text.encode())
            return path

        def fails(self, *args, expect: tuple[str, ...] = ()) -> str:
            before = snapshot(tmp_path)
            result = CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "40"})
            line = check_line(result.exit_code, result.stderr, result.output, expect)
            assert not isinstance(result.exception, AssertionError)
            assert snapshot(tmp_path) == before, "a file of the user was touched"
            return line

    return User()


