"""The public surface: what ``nasreg`` exports is what plugins (ours included) may use.

A built-in plugin that imports ``nasreg.<module>``, a name ``nasreg`` does not export, or another
plugin's modules would break under any refactor of the core, and a third party would copy it.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import nasreg

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_FILES = sorted((ROOT / "plugins").rglob("*.py"))
PLUGIN_PACKAGES = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").is_file())


def _package_of(path: Path) -> str:
    return path.relative_to(ROOT / "plugins").parts[0]


def violations(path: Path) -> list[str]:
    """Every use in ``path`` of a core name that ``nasreg`` does not export, of a core module,
    or of another plugin's package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _package_of(path)
    exported = set(nasreg.__all__)
    found = []
    where = lambda node: f"{path.relative_to(ROOT)}:{node.lineno}"  # noqa: E731
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if alias.name.startswith("nasreg."):
                    found.append(f"{where(node)}: import {alias.name} (a core module)")
                elif top in PLUGIN_PACKAGES and top != own:
                    found.append(f"{where(node)}: import {alias.name} (another plugin)")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if node.module.startswith("nasreg."):
                found.append(f"{where(node)}: from {node.module} import ... (a core module)")
            elif node.module == "nasreg":
                found += [f"{where(node)}: from nasreg import {a.name} (not exported)"
                          for a in node.names if a.name not in exported]
            elif top in PLUGIN_PACKAGES and top != own:
                found.append(f"{where(node)}: from {node.module} import ... (another plugin)")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "nasreg" and node.attr not in exported):
            found.append(f"{where(node)}: nasreg.{node.attr} (not exported)")
    return found


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(ROOT / "plugins")))
def test_plugins_use_only_what_nasreg_exports(path):
    assert violations(path) == []


def test_the_checker_catches_each_kind_of_violation(tmp_path):
    bad = ROOT / "plugins" / "nasreg_darts" / "_probe_for_test.py"
    bad.write_text("import nasreg\nimport nasreg._core.search\nfrom nasreg._core.rundir import write_json\n"
                   "from nasreg import not_a_name\nfrom nasreg_rl import strategy\nx = nasreg._core.spec\n")
    try:
        found = violations(bad)
    finally:
        bad.unlink()
    assert len(found) == 5, found


def test_every_exported_name_resolves_and_is_documented():
    for name in nasreg.__all__:
        value = getattr(nasreg, name)
        if callable(value) and not name.startswith("__"):
            assert (getattr(value, "__doc__", None) or "").strip(), f"nasreg.{name} has no docstring"


def test_import_nasreg_does_not_import_torch():
    code = "import sys, nasreg; print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_internal_modules_are_marked_internal():
    """Every module of the core but the public entry points lives in the internal package (or,
    for the CLI's own helpers, has a leading underscore)."""
    public = {"__init__.py", "__main__.py", "api.py", "cli.py", "hookspecs.py"}
    top = {p.name for p in (ROOT / "nasreg").glob("*.py") if not p.name.startswith("_") or p.name in public}
    assert top <= public, f"modules outside nasreg/_core: {sorted(top - public)}"
    importlib.import_module("nasreg._core")


@pytest.mark.parametrize("name", ["cli.py", "_cli_show.py"])
def test_the_cli_calls_only_the_public_api(name):
    """The command line is a thin layer: it imports what ``nasreg`` exports (and nasreg.api),
    never an internal module."""
    path = ROOT / "nasreg" / name
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = ("." * node.level) + (node.module or "")
            if "_core" in module:
                found.append(f"{name}:{node.lineno}: from {module} import ...")
            elif module in (".", "nasreg"):
                found += [f"{name}:{node.lineno}: {a.name} (not exported)" for a in node.names
                          if a.name not in nasreg.__all__]
        elif isinstance(node, ast.Import):
            found += [f"{name}:{node.lineno}: import {a.name}" for a in node.names if "_core" in a.name]
    assert found == []


def test_the_api_functions_are_not_shadowed_by_internal_modules():
    """``nasreg.search`` is the API function, also once the search engine's module is imported
    (a submodule of the package would replace the package attribute of the same name)."""
    import nasreg._core.search  # noqa: F401 - the import is the point

    assert callable(nasreg.search) and nasreg.search.__module__ == "nasreg.api"
