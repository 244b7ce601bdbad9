"""Shared fixtures of the core tests: the fixture plugin package, the broken plugins and the toy
components, all loaded without installing anything into the environment.

A "fake distribution" is a ``NAME-VERSION.dist-info`` folder (METADATA + entry_points.txt) in a
temporary directory put on ``sys.path``: ``importlib.metadata`` then finds its entry points
exactly as it finds an installed package's, so plugin discovery is tested for real.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from nasreg._core.plugins import Plugins, load_plugins

FIXTURES = Path(__file__).parent / "fixtures"
PLUGIN_PKG = FIXTURES / "plugin_pkg"
BROKEN = FIXTURES / "broken_plugins"
TOYCORE = FIXTURES / "toycore"
TOYCORE_FILE = TOYCORE / "nasreg_toycore.py"

#: Entry-point name -> module of every broken fixture plugin.
BROKEN_PLUGINS = {
    "nasreg_broken_import": "nasreg_broken_import",
    "nasreg_broken_duplicate": "nasreg_broken_duplicate",
    "nasreg_broken_signature": "nasreg_broken_signature",
    "nasreg_broken_unknown_hook": "nasreg_broken_unknown_hook",
    "nasreg_broken_raises": "nasreg_broken_raises",
}


def write_dist(site: Path, name: str, version: str, entry_points: dict[str, str]) -> Path:
    """Write an installed-looking distribution (metadata only) declaring ``nasreg`` entry points."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[nasreg]\n{lines}")
    return info


@pytest.fixture
def site_dir(tmp_path, monkeypatch) -> Path:
    """An empty folder on ``sys.path`` where fake distributions go."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.fixture
def testplugin_dist(site_dir, monkeypatch) -> dict[str, Any]:
    """The fixture package, "installed": its source on ``sys.path`` and a distribution whose
    entry points are the ones its ``pyproject.toml`` declares."""
    project = tomllib.loads((PLUGIN_PKG / "pyproject.toml").read_text())["project"]
    monkeypatch.syspath_prepend(str(PLUGIN_PKG))
    write_dist(site_dir, project["name"], project["version"], project["entry-points"]["nasreg"])
    importlib.invalidate_caches()
    return project


@pytest.fixture
def broken_path(monkeypatch) -> Path:
    """The broken fixture plugins importable (by module name), not yet advertised."""
    monkeypatch.syspath_prepend(str(BROKEN))
    return BROKEN


@pytest.fixture
def broken_dist(site_dir, broken_path) -> dict[str, str]:
    """Every broken fixture plugin advertised through a fake distribution ``nasreg-broken``."""
    write_dist(site_dir, "nasreg-broken", "6.6.6", BROKEN_PLUGINS)
    importlib.invalidate_caches()
    return BROKEN_PLUGINS


@pytest.fixture
def toycore(monkeypatch):
    """The toy components module (see tests/fixtures/toycore/nasreg_toycore.py)."""
    monkeypatch.syspath_prepend(str(TOYCORE))
    return importlib.import_module("nasreg_toycore")


@pytest.fixture
def toy_plugins(toycore) -> Callable[..., Plugins]:
    """``toy_plugins(*objects)``: plugins with no entry points, the toy components and ``objects``
    (``(name, plugin)`` pairs), registries filled."""

    def make(*objects: tuple[str, Any]) -> Plugins:
        return load_plugins(entry_points=[], objects=[("toycore", toycore), *objects])

    return make


TOY_SPEC = """\
[run]
name = "toy"
seed = 1
device = "cpu"
threads = 1

[data]
dataset = "toy-data"
batch_size = 8
size = 32

[search_space]
name = "toy-space"
operations = ["toy_zero", "toy_skip", "toy_conv"]
nodes = 2

[search]
epochs = 2
warmup_epochs = 1

[strategy]
name = "toy-sgd"

[selector]
name = "toy-select"

[selector.clusterer]
name = "toy-split"
"""


@pytest.fixture
def write_spec(tmp_path) -> Callable[..., Path]:
    """``write_spec(text=TOY_SPEC, name="spec.toml")``: a spec file in the test's tmp folder."""

    def write(text: str = TOY_SPEC, name: str = "spec.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    """``nasreg --debug`` sets NASREG_DEBUG in the process; never let it leak between tests."""
    monkeypatch.delenv("NASREG_DEBUG", raising=False)
    monkeypatch.delenv("NASREG_DISABLE_PLUGINS", raising=False)
    yield
    os.environ.pop("NASREG_DEBUG", None)  # set by the CLI itself: not undone by monkeypatch


@pytest.fixture(scope="module")
def one_thread_module():
    """One torch thread for a whole test module (``pytestmark = pytest.mark.usefixtures(...)``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Tiny networks: one torch thread is fastest (two oversubscribe a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_torch_threads():
    """A search sets torch's thread count ([run] threads) for the process: restore it after."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fresh_modules():
    """Forget fixture plugin modules imported by a test (a later import runs them again)."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("nasreg_broken_", "nasreg_local_plugin_")):
            del sys.modules[name]


# --- hypothesis profiles --------------------------------------------------------------------
# The property tests (tests/test_spec_properties.py) run 200 random examples each. In CI the
# examples must be the same on every run: `pytest --hypothesis-profile=ci`, or CI=1 in the
# environment (as CI services set it), loads the derandomized profile.
try:
    from hypothesis import HealthCheck as _HealthCheck
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    pass
else:
    _hypothesis_settings.register_profile(
        "ci", derandomize=True, deadline=None, print_blob=True,
        suppress_health_check=[_HealthCheck.too_slow])
    if os.environ.get("CI"):
        _hypothesis_settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _release_leaked_run_dir_locks():
    """Drop the run-directory locks a test took and did not release (``create_run_dir`` called
    directly): the next tests start with none held by this process."""
    yield
    from nasreg._core.rundir import RunDirLock

    for lock in list(RunDirLock._held.values()):
        lock._count = 1
        lock.release()
