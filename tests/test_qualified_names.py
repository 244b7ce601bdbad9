"""Names two plugins share: a third-party plugin (``acme``, tests/fixtures/shared_names/acme.py)
registers ``conv_7x1_1x7``, as the built-in ``darts`` plugin does. Both entries stay usable by
their qualified names (``acme:conv_7x1_1x7``, ``darts:conv_7x1_1x7``); the shared bare name is an
error only where a spec or a genotype uses it, listing the qualified names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nasreg.cli import main
from nasreg import hookimpl
from nasreg._core.errors import GenotypeError, RegistryError, SpecError
from nasreg._core.genotype import CellGenotype, Genotype, GenotypeEdge
from nasreg._core.plugins import load_plugins
from nasreg._core.run import Run
from nasreg._core.spec import apply_overrides, read_toml, validate

ROOT = Path(__file__).resolve().parents[1]
NASNET = ROOT / "specs" / "nasnet.toml"
ACME = Path(__file__).parent / "fixtures" / "shared_names" / "acme.py"
CHOICES = "'conv_7x1_1x7' is registered by 2 plugins: use 'acme:conv_7x1_1x7' or 'darts:conv_7x1_1x7'"

#: A tiny reinforce search (2 updates of 2 children, 2 blocks) and [evaluate] (1 epoch), as in
#: tests/test_rl_search.py, on two candidate ops: both conv_7x1_1x7s, by their qualified names.
TINY = ["run.threads=1", "run.device=cpu", "data.limit=160", "strategy.updates=2",
        "strategy.children_per_update=2", "strategy.child_epochs=1", "strategy.child_batch_size=32",
        "strategy.workers=1", "evaluate.epochs=1", "evaluate.limit=64", "evaluate.batch_size=32",
        "search_space.blocks=2", "search_space.channels=8", "evaluate.channels=8",
        'search_space.operations=["acme:conv_7x1_1x7", "darts:conv_7x1_1x7"]']


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def plugins():
    return load_plugins([str(ACME)])


@pytest.fixture(scope="module")
def regs(plugins):
    return plugins.registries


def invoke(*args, sets=()):
    argv = [str(a) for a in args]
    for s in sets:
        argv += ["--set", s]
    return CliRunner().invoke(main, argv, env={"COLUMNS": "200"})


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def qualified_copy(tmp_path: Path) -> Path:
    """specs/nasnet.toml with the DARTS op by its qualified name, and ACME's op as a 14th."""
    text = NASNET.read_text()
    assert text.count('"conv_7x1_1x7"') == 1
    spec = tmp_path / "nasnet-qualified.toml"
    spec.write_text(text.replace('"conv_7x1_1x7"', '"darts:conv_7x1_1x7", "acme:conv_7x1_1x7"'))
    return spec


def test_both_entries_are_kept_and_only_the_shared_bare_name_is_ambiguous(regs):
    ops = regs.operations
    assert ops.get("acme:conv_7x1_1x7").plugin == "acme"
    assert ops.get("darts:conv_7x1_1x7").plugin == "darts"
    assert ops.get("acme_pool").plugin == "acme"  # the rest of both plugins keeps working
    assert ops.get("sep_conv_7x7").plugin == "darts"
    with pytest.raises(RegistryError) as err:
        ops.get("conv_7x1_1x7")
    assert str(err.value) == CHOICES


def test_the_shipped_spec_fails_on_one_line_naming_both_qualified_names():
    line = one_line_error(invoke("validate", NASNET, "--plugin", ACME))
    assert line.endswith(f"specs/nasnet.toml: [search_space] operations[2]: {CHOICES}")


def test_the_shipped_spec_validates_with_the_built_ins_alone():
    result = invoke("validate", NASNET)
    assert result.exit_code == 0, result.output


class Rival:
    """A plugin sharing a dataset, a search strategy and a clusterer name with the built-ins."""

    @hookimpl
    def register_datasets(self, register):
        register("digits", anything)

    @hookimpl
    def register_strategies(self, register):
        register("reinforce", anything)

    @hookimpl
    def register_clusterers(self, register):
        register("elkan", anything)


def anything(**keys):
    """Never built: the specs below pick the built-in entries."""
    raise AssertionError("the rival plugin's entry was built")


@pytest.mark.parametrize("spec, sets, key, name, choices", [
    ("quickstart", [], "[data] dataset", "digits", "'data:digits' or 'rival:digits'"),
    ("quickstart", ["data.dataset='data:digits'"], "[selector.clusterer] name", "elkan",
     "'elkan:elkan' or 'rival:elkan'"),
    ("nasnet", ["data.dataset='data:digits'"], "[strategy] name", "reinforce",
     "'rival:reinforce' or 'rl:reinforce'"),
])
def test_a_shared_name_in_any_spec_key_is_an_error_naming_the_key(spec, sets, key, name, choices):
    regs = load_plugins(objects=[("rival", Rival())]).registries
    path = ROOT / "specs" / f"{spec}.toml"
    with pytest.raises(SpecError) as err:
        validate(apply_overrides(read_toml(path), sets), path, regs)
    assert str(err.value) == f"{path}: {key}: {name!r} is registered by 2 plugins: use {choices}"


@pytest.mark.parametrize("spec, sets", [
    ("quickstart", ["data.dataset='data:digits'", "selector.clusterer.name='elkan:elkan'"]),
    ("nasnet", ["data.dataset='data:digits'", "strategy.name='rl:reinforce'"]),
])
def test_the_qualified_names_validate_and_are_kept_in_the_resolved_spec(spec, sets):
    regs = load_plugins(objects=[("rival", Rival())]).registries
    path = ROOT / "specs" / f"{spec}.toml"
    resolved = validate(apply_overrides(read_toml(path), sets), path, regs).resolved()
    assert resolved["data"]["dataset"] == "data:digits"
    assert validate(resolved, path, regs).resolved() == resolved


def test_list_plugins_shows_both_entries_and_fails_neither_plugin():
    result = invoke("list-plugins", "--plugin", ACME)
    assert result.exit_code == 0, result.output
    assert "failed" not in result.output
    assert "acme:conv_7x1_1x7" in result.output and "darts:conv_7x1_1x7" in result.output
    data = json.loads(invoke("list-plugins", "--json", "--plugin", ACME).stdout)
    errors = {p["name"]: p["error"] for p in data["plugins"]}
    assert errors["acme"] is None and errors["darts"] is None
    registered = {p["name"]: p["registered"] for p in data["plugins"]}
    assert registered["acme"]["operations"] == ["acme:conv_7x1_1x7", "acme_pool"]
    assert "darts:conv_7x1_1x7" in registered["darts"]["operations"]
    assert "sep_conv_7x7" in registered["darts"]["operations"]  # unshared names stay bare
    ops = data["registries"]["operations"]
    assert ops["acme:conv_7x1_1x7"]["plugin"] == "acme" and ops["darts:conv_7x1_1x7"]["plugin"] == "darts"
    assert "conv_7x1_1x7" not in ops


def test_a_genotype_with_a_qualified_op_round_trips_and_a_shared_bare_one_is_refused(regs, tmp_path):
    cell = CellGenotype(edges=[GenotypeEdge(2, 0, "acme:conv_7x1_1x7"), GenotypeEdge(2, 1, "skip_connect")],
                        concat=[2])
    genotype = Genotype(space="nasnet-cell", cells={"normal": cell, "reduce": cell})
    back = Genotype.load(genotype.save(tmp_path / "g.json"), regs)
    assert back.cells == genotype.cells
    bare = Genotype.from_dict(json.loads(json.dumps(genotype.to_dict()).replace("acme:conv", "conv")))
    with pytest.raises(GenotypeError) as err:
        bare.validate(regs, source="g.json")
    assert str(err.value) == f"g.json: cells.normal.edges[0]: {CHOICES}"


def test_a_zero_op_named_by_its_qualified_name_is_a_zero_op(plugins, tmp_path):
    run = Run(spec=None, plugins=plugins, run_dir=tmp_path, device=torch.device("cpu"), space=None)
    assert {"none", "darts:none"} <= run.zero_ops()  # selectors never keep it, whichever name is used
    assert "acme:conv_7x1_1x7" not in run.zero_ops()


def test_a_spec_using_the_qualified_names_validates_and_runs(tmp_path):
    spec = qualified_copy(tmp_path)
    result = invoke("validate", spec, "--plugin", ACME)
    assert result.exit_code == 0, result.output

    run_dir = tmp_path / "run"
    result = invoke("run", spec, "--plugin", ACME, "--out", run_dir, "-q", sets=TINY)
    assert result.exit_code == 0, result.output
    genotype = Genotype.load(run_dir / "genotype.json", load_plugins([str(ACME)]).registries)
    ops = {e.op for c in genotype.cells.values() for e in c.edges}
    assert ops and ops <= {"acme:conv_7x1_1x7", "darts:conv_7x1_1x7"}
    assert json.loads((run_dir / "eval" / "results.json").read_text())["test_acc"] is not None
    # the resolved spec saved into the run directory validates again
    result = invoke("validate", run_dir / "spec.toml", "--plugin", ACME)
    assert result.exit_code == 0, result.output


def test_an_op_listed_once_bare_and_once_qualified_is_listed_twice():
    result = invoke("validate", str(ROOT / "specs" / "quickstart.toml"),
                    sets=['search_space.operations=["none", "sep_conv_3x3", "darts:sep_conv_3x3"]'])
    assert result.exit_code == 2
    assert one_line_error(result).endswith(
        "[search_space] operations: operation 'sep_conv_3x3' (as 'darts:sep_conv_3x3') is listed twice")
