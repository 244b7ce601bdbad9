"""The fast paths of the command line import no torch (issue 12, item 5).

``import torch`` takes seconds; ``nasreg --help``, ``--version``, ``validate``, ``list-plugins`` and ``show``
must not pay for it. Each check runs in a fresh interpreter and asks, at exit, whether any
``torch`` module was imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").glob("*.toml"))

#: Prints, last, whether a torch module is loaded.
REPORT = "print(json.dumps(any(m == 'torch' or m.startswith('torch.') for m in sys.modules)))"


def imports_torch(code: str) -> bool:
    """Run ``code`` in a fresh interpreter (from the repository root); did it import torch?"""
    script = f"import json, sys\n{code}\n{REPORT}\n"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def cli(*args: str) -> str:
    """Code that runs ``nasreg ARGS`` in-process (click's standalone mode off, --help's exit kept)."""
    return ("from nasreg.cli import main\n"
            "try:\n"
            f"    main({list(args)!r}, standalone_mode=False)\n"
            "except SystemExit as exc:\n"
            "    assert not exc.code, exc.code\n")


def test_import_nasreg_imports_no_torch():
    assert not imports_torch("import nasreg")


def test_plugin_contracts_import_no_torch():
    names = ["SearchSpace", "Candidates", "OperationTable", "operation_names", "SearchStrategy",
             "SamplingStrategy", "Selector", "StageResult", "DatasetBundle", "MemoryView"]
    assert not imports_torch("import nasreg\n" + "\n".join(f"nasreg.{n}" for n in names))


@pytest.mark.parametrize("module", ["nasreg_data", "nasreg_elkan", "nasreg_plots", "nasreg_rl.strategy",
                                    "nasreg_darts.factories", "nasreg_darts.strategy", "nasreg_darts.selector",
                                    "nasreg_dgdarts", "nasreg_nasnet", "nasreg_nasnet.factories"])
def test_plugin_registration_modules_import_no_torch(module):
    """What a built-in plugin's registration hooks import, and the factories they register."""
    assert not imports_torch(f"import {module}")


def test_darts_factories_build_after_a_torch_free_load():
    """The lazily-importing factories still build what they register."""
    code = ("import nasreg_darts.factories as f\n"
            "space = f.darts_cell(['none', 'sep_conv_3x3'], cells=2, channels=4)\n"
            "op = f.OPERATIONS.factories()['sep_conv_3x3'](4, 2, False)\n"
            "assert type(space).__name__ == 'DartsCellSpace' and type(op).__name__ == 'SepConv'\n")
    assert imports_torch(code)


def test_nasnet_factories_build_after_a_torch_free_load():
    code = ("import nasreg_nasnet.factories as f\n"
            "cell = f.nasnet_cell(['sep_conv_3x3', 'conv_3x3'], blocks=2)\n"
            "layers = f.nas_layers(layers=2)\n"
            "ops = f.OPERATIONS.factories()\n"
            "assert type(cell).__name__ == 'NasnetCellSpace' and type(layers).__name__ == 'NasLayersSpace'\n"
            "assert type(ops['conv_1x3_3x1'](4, 2, False)).__name__ == 'FactorizedConv'\n"
            "assert type(ops['max_pool_5x5'](4, 1, False, bn=False)).__name__ == 'Pool'\n"
            "made = {}\n"
            "f.register_layer_ops(lambda name, factory, **meta: made.setdefault(name, factory), [3], [5], [36], [1])\n"
            "assert type(made['conv_3x5_36'](36, 1, True)).__name__ == 'LayerConv'\n")
    assert imports_torch(code)


@pytest.mark.parametrize("args", [("--help",), ("--version",)])
def test_help_and_version_import_no_torch(args):
    assert not imports_torch(cli(*args))


@pytest.mark.parametrize("args", [("list-plugins",), ("list-plugins", "--json")])
def test_list_plugins_imports_no_torch(args):
    assert not imports_torch(cli(*args))


def test_validate_every_shipped_spec_imports_no_torch():
    assert SPECS
    assert not imports_torch(cli("validate", *SPECS))


def test_show_of_a_finished_run_imports_no_torch(tmp_path):
    """``nasreg show`` of a finished search (with its evaluation) reads files only."""
    run_dir = tmp_path / "qs"
    overrides = ["data.limit=100", "search.epochs=2", "search.warmup_epochs=1", "search_space.cells=2",
                 "search_space.channels=4", "evaluate.epochs=1", "evaluate.cells=2", "evaluate.channels=4",
                 "evaluate.limit=32", "run.threads=1"]
    args = ["run", "specs/quickstart.toml", "--out", str(run_dir), "-q", "--no-preflight"]
    for o in overrides:
        args += ["--set", o]
    assert imports_torch(cli(*args))  # the run itself does, of course
    assert (run_dir / "eval" / "results.json").is_file()
    assert not imports_torch(cli("show", str(run_dir)))
