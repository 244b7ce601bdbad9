"""Meta-tests (as datasette's test_docs.py): every hook nasreg calls is documented for plugin
authors and exercised by a test, so a new hook cannot land without both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nasreg import hookspecs

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
HOOKS = sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "nasreg_spec"))


def test_hookspecs_are_found():
    assert "register_operations" in HOOKS and "on_run_end" in HOOKS
    assert len(HOOKS) >= 10


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring(hook):
    doc = getattr(hookspecs, hook).__doc__
    assert doc and doc.strip(), f"nasreg/hookspecs.py: {hook} has no docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    docs = "\n".join((ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "CONTRIBUTING.md")
                     if (ROOT / name).exists())
    assert re.search(rf"\b{hook}\b", docs), f"hook {hook} is documented neither in README.md nor in CONTRIBUTING.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    sources = [p for p in TESTS.rglob("*.py") if p.resolve() != Path(__file__).resolve()]
    using = [p for p in sources if re.search(rf"\b{hook}\b", p.read_text(encoding="utf-8"))]
    assert any(p.name.startswith("test_") for p in using), f"no test under tests/ mentions hook {hook}"
