"""A plugin that raises ``KeyboardInterrupt`` or ``SystemExit`` itself (while it is imported, or
in a registration hook) fails that plugin; it is not the user's Ctrl-C.

Through the CLI: a ``--plugin FILE.py``, a ``--plugin MODULE`` and a spec's ``[run] plugins``
that raise are one ``error:`` line naming the plugin, exit status 2, nothing in the user's folder
touched; an entry-point plugin that raises is recorded (``list-plugins --json`` shows its load
error) and the others still load. A real Ctrl-C (SIGINT sent to a real ``nasreg`` process while a
plugin is being imported) still stops the command with exit status 130, even when the plugin
turns the ``KeyboardInterrupt`` into a ``SystemExit``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli_checks import SPEC, user  # noqa: F401
from conftest import write_dist
from nasreg.cli import main

NASREG = Path(sys.executable).with_name("nasreg")

#: Plugin sources, by what they raise and where.
RAISES = {
    "import_keyboard": "raise KeyboardInterrupt\n",
    "import_keyboard_message": "raise KeyboardInterrupt('from the plugin')\n",
    "import_exit_0": "import sys\nsys.exit(0)\n",
    "import_exit_3": "raise SystemExit(3)\n",
    "register_keyboard": "def register_operations(register):\n    raise KeyboardInterrupt\n",
    "register_exit": "def register_operations(register):\n    raise SystemExit(5)\n",
}
WHAT = {"import_keyboard": "KeyboardInterrupt", "import_keyboard_message": "KeyboardInterrupt: from the plugin",
        "import_exit_0": "SystemExit: 0", "import_exit_3": "SystemExit: 3",
        "register_keyboard": "KeyboardInterrupt", "register_exit": "SystemExit: 5"}


def plugin_file(folder: Path, kind: str) -> Path:
    path = folder / f"raiser_{kind}.py"
    header = "import nasreg\n" if kind.startswith("register") else ""
    body = RAISES[kind].replace("def register", "@nasreg.hookimpl\ndef register")
    path.write_text(header + body)
    return path


@pytest.mark.parametrize("kind", sorted(RAISES))
def test_a_file_plugin_that_raises_is_that_plugins_failure(user, kind):  # noqa: F811
    spec = user.spec()
    path = plugin_file(user.root, kind)
    line = user.fails("validate", "--plugin", path.name, spec, expect=(f"plugin 'raiser_{kind}'", WHAT[kind]))
    assert "raised by the plugin itself" in line


@pytest.mark.parametrize("kind", ["import_keyboard", "register_keyboard", "import_exit_3"])
def test_a_spec_plugin_that_raises_stops_the_run_before_anything_is_written(user, kind):  # noqa: F811
    path = plugin_file(user.root, kind)
    spec = user.spec(SPEC.replace("[run]\nplugins = [", f'[run]\nplugins = ["{path.name}", ', 1))
    user.fails("run", spec, "--out", "out", "-q", expect=(f"plugin 'raiser_{kind}'", WHAT[kind]))
    assert not (user.root / "out").exists()


@pytest.mark.parametrize("kind", ["import_keyboard", "register_exit"])
def test_a_module_plugin_that_raises_is_that_plugins_failure(user, monkeypatch, kind):  # noqa: F811
    modules = user.root / "modules"
    modules.mkdir()
    name = f"raiser_module_{kind}"
    plugin_file(modules, kind).rename(modules / f"{name}.py")
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.delitem(sys.modules, name, raising=False)
    user.fails("validate", "--plugin", name, user.spec(), expect=(f"plugin '{name}'", WHAT[kind]))


@pytest.mark.parametrize("kind", ["import_keyboard", "import_exit_0", "register_keyboard"])
def test_an_entry_point_plugin_that_raises_is_recorded_and_the_others_load(site_dir, monkeypatch, kind):
    name = f"raiser_ep_{kind}"
    plugin_file(site_dir, kind).rename(site_dir / f"{name}.py")
    write_dist(site_dir, "nasreg-raiser", "1.0", {name: name})
    monkeypatch.delitem(sys.modules, name, raising=False)
    import importlib

    importlib.invalidate_caches()
    result = CliRunner().invoke(main, ["list-plugins", "--json"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    infos = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert WHAT[kind] in infos[name]["error"] and "raised by the plugin itself" in infos[name]["error"]
    assert infos["darts"]["error"] is None and infos["darts"]["registered"]["operations"]


# --- a real Ctrl-C while a plugin is imported --------------------------------------------------------


def _sigint_during_import(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """Run ``nasreg validate --plugin slow.py`` and send SIGINT once the plugin is being imported."""
    marker = tmp_path / "importing"
    (tmp_path / "slow.py").write_text(f"import pathlib, time\npathlib.Path({str(marker)!r}).write_text('x')\n{body}")
    (tmp_path / "spec.toml").write_text(SPEC)
    env = {**os.environ, "NASREG_DISABLE_PLUGINS": "plots", "COLUMNS": "200"}
    proc = subprocess.Popen([str(NASREG), "validate", "--plugin", "slow.py", "spec.toml"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("body", [
    "time.sleep(30)\n",
    # the plugin turns the user's Ctrl-C into an exit: still the user's Ctrl-C
    "try:\n    time.sleep(30)\nexcept KeyboardInterrupt:\n    raise SystemExit(0)\n",
], ids=["sleeps", "turns-it-into-an-exit"])
def test_a_real_ctrl_c_while_a_plugin_is_imported_still_interrupts(tmp_path, body):
    result = _sigint_during_import(tmp_path, body)
    assert result.returncode == 130, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["stopped: interrupted"], result.stderr
    assert "ok " not in result.stdout
