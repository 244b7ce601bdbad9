"""The command line, through click's CliRunner: user errors are one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import nasreg
from nasreg.cli import main
from nasreg._core.errors import SpecError

from conftest import BROKEN_PLUGINS, TOY_SPEC, TOYCORE_FILE

BUILT_INS = ("darts", "data", "dgdarts", "elkan", "plots")  # pyproject's [project.entry-points.nasreg]


def invoke(*args: str):
    # A wide terminal, so the rich table never truncates a name.
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "500"})


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture
def toy_spec(write_spec):
    """The toy spec, loading the toy components as a file plugin."""
    return write_spec(f'[run]\nplugins = ["{TOYCORE_FILE}"]\n' + TOY_SPEC.replace("[run]\n", "", 1))


# --- help and version -----------------------------------------------------------------------


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "validate", "list-plugins"):
        assert command in result.output
    assert invoke("-h").output == result.output


@pytest.mark.parametrize("command", ["run", "validate", "list-plugins"])
def test_command_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Usage: main" in result.output or "Usage: nasreg" in result.output
    if command != "list-plugins":
        assert "--set" in result.output
    assert "--plugin" in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"nasreg, version {nasreg.__version__}"


# --- validate -------------------------------------------------------------------------------


def test_validate_ok(toy_spec):
    result = invoke("validate", toy_spec)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok {toy_spec} (spec hash ")
    assert result.stderr == ""


def test_validate_with_set_and_plugin_options(write_spec):
    path = write_spec()
    result = invoke("validate", path, "--plugin", TOYCORE_FILE, "--set", "data.batch_size=16",
                    "--set", 'search_space.operations=["toy_skip", "toy_conv"]')
    assert result.exit_code == 0, result.output


def test_validate_error_is_one_line_with_the_key_path(toy_spec):
    result = invoke("validate", toy_spec, "--set", "data.batch_size=0")
    line = assert_one_line_error(result, str(toy_spec), "[data] batch_size: expected an integer >= 1")
    assert line.endswith("got 0")
    assert result.stdout == ""


def test_validate_stops_at_the_first_invalid_spec(toy_spec, write_spec):
    bad = write_spec("[serach]\n", name="bad.toml")
    result = invoke("validate", toy_spec, bad, toy_spec)
    assert_one_line_error(result, f"{bad}: unknown table [serach]; did you mean [search]?")
    assert result.stdout.count("ok ") == 1


def test_validate_missing_file(tmp_path):
    assert_one_line_error(invoke("validate", tmp_path / "nope.toml"), f"{tmp_path / 'nope.toml'}: no such file")


def test_validate_malformed_toml(write_spec):
    path = write_spec("[run\n")
    assert_one_line_error(invoke("validate", path), f"{path}: invalid TOML: ")


def test_validate_bad_set(toy_spec):
    assert_one_line_error(invoke("validate", toy_spec, "--set", "search.epochs=[1,"),
                          "--set 'search.epochs=[1,': value is not a valid TOML literal")


def test_validate_unknown_plugin_on_the_command_line(toy_spec):
    assert_one_line_error(invoke("validate", toy_spec, "--plugin", "no_such_plugin_module"),
                          "plugin 'no_such_plugin_module'", "No module named 'no_such_plugin_module'")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_spec_asking_for_a_failed_plugin(write_spec, broken_path, tmp_path, command):
    path = write_spec(f'[run]\nplugins = ["{TOYCORE_FILE}", "nasreg_broken_raises"]\n'
                      + TOY_SPEC.replace("[run]\n", "", 1))
    args = [command, path] + (["--out", tmp_path / "out"] if command == "run" else [])
    assert_one_line_error(invoke(*args), "plugin 'nasreg_broken_raises' (module nasreg_broken_raises) failed to load: "
                          "failed while registering: RuntimeError: cannot reach the licence server")
    assert not (tmp_path / "out").exists()


def test_validate_is_unaffected_by_broken_plugins_it_does_not_use(toy_spec, broken_dist):
    result = invoke("validate", toy_spec)
    assert result.exit_code == 0, result.output


def test_debug_shows_the_traceback(toy_spec):
    result = invoke("--debug", "validate", toy_spec, "--set", "data.batch_size=0")
    assert isinstance(result.exception, SpecError)  # re-raised: click shows the traceback


# --- list-plugins ---------------------------------------------------------------------------


def test_list_plugins_table_shows_the_built_ins():
    result = invoke("list-plugins")
    assert result.exit_code == 0, result.output
    for name in BUILT_INS:
        assert name in result.stdout
    assert "built-in" in result.stdout


def test_list_plugins_json(testplugin_dist):
    result = invoke("list-plugins", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert set(BUILT_INS) <= set(by_name)
    assert by_name["darts"]["source"] == "built-in"
    mine = by_name["nasreg_testplugin"]
    assert mine == {"name": "nasreg_testplugin", "source": "entry point of nasreg-testplugin", "version": "0.1.0",
                    "error": None, "hooks": ["register_clusterers", "register_operations"],
                    "registered": {"operations": ["test_identity_conv"], "clusterers": ["test_threshold"]}}
    assert data["registries"]["operations"]["test_identity_conv"] == {
        "plugin": "nasreg_testplugin", "description": "A 1x1 convolution with the edge's stride, then BatchNorm.",
        "keys": []}  # an operation takes no spec keys (the space calls it with C, stride, affine)
    assert data["registries"]["clusterers"]["test_threshold"]["plugin"] == "nasreg_testplugin"
    assert set(data["registries"]) == {"operations", "search_spaces", "strategies", "selectors", "clusterers",
                                       "datasets", "executors", "loggers"}


def test_list_plugins_table_shows_the_fixture_plugin(testplugin_dist):
    result = invoke("list-plugins")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "nasreg_testplugin" in line)
    assert "0.1.0" in row and "entry point of nasreg-testplugin" in row
    assert "test_identity_conv" in result.stdout and "test_threshold" in result.stdout


def test_list_plugins_with_a_plugin_option(monkeypatch):
    from conftest import PLUGIN_PKG

    monkeypatch.syspath_prepend(str(PLUGIN_PKG))
    data = json.loads(invoke("list-plugins", "--json", "--plugin", "nasreg_testplugin").stdout)
    mine = next(p for p in data["plugins"] if p["name"] == "nasreg_testplugin")
    assert mine["source"] == "module nasreg_testplugin" and mine["error"] is None
    assert data["registries"]["clusterers"]["test_threshold"]["plugin"] == "nasreg_testplugin"


def test_list_plugins_survives_every_broken_plugin(broken_dist, testplugin_dist):
    result = invoke("list-plugins")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    for name in BROKEN_PLUGINS:
        assert name in result.stdout
    assert result.stdout.count("failed") >= len(BROKEN_PLUGINS)
    assert "No module named 'nasreg_dependency_that_is_not_installed'" in result.stdout
    assert "cannot reach the licence server" in result.stdout
    for name in BUILT_INS:
        assert name in result.stdout

    data = json.loads(invoke("list-plugins", "--json").stdout)
    errors = {p["name"]: p["error"] for p in data["plugins"]}
    assert errors["nasreg_broken_import"].startswith("error importing 'nasreg_broken_import': ModuleNotFoundError")
    assert "register_operations(register, extra)" in errors["nasreg_broken_signature"]
    assert errors["nasreg_broken_unknown_hook"].startswith("implements unknown hook(s) register_operation ")
    assert errors["nasreg_broken_raises"] == "failed while registering: RuntimeError: cannot reach the licence server"
    assert errors["nasreg_broken_duplicate"] == ("plugin 'nasreg_broken_duplicate' registered operation "
                                                 "'broken_duplicate_twice' twice")
    assert errors["nasreg_testplugin"] is None
    for name in BUILT_INS:
        assert name in errors


def test_list_plugins_with_a_broken_plugin_option(broken_path):
    result = invoke("list-plugins", "--json", "--plugin", "nasreg_broken_import")
    assert result.exit_code == 0
    mine = next(p for p in json.loads(result.stdout)["plugins"] if p["name"] == "nasreg_broken_import")
    assert "ModuleNotFoundError" in mine["error"]


# --- run ------------------------------------------------------------------------------------


def test_run_missing_spec(tmp_path):
    assert_one_line_error(invoke("run", tmp_path / "nope.toml"), "no such file")


def test_run_bad_key(toy_spec, tmp_path):
    result = invoke("run", toy_spec, "--set", "search.epoch=1", "--out", tmp_path / "out")
    assert_one_line_error(result, "[search] epoch: unknown key; did you mean 'epochs'")
    assert not (tmp_path / "out").exists()  # nothing created for an invalid spec


def test_run_refuses_a_non_empty_out_dir_without_force(toy_spec, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    result = invoke("run", toy_spec, "--out", out, "-q")
    assert_one_line_error(result, f"--out {out}: run directory already exists and is not empty", "--force")
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    assert (out / "precious.txt").read_text() == "keep me"


def test_run_out_must_be_a_directory(toy_spec, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = invoke("run", toy_spec, "--out", target, "-q")
    assert result.exit_code == 2
    assert target.read_text() == "x"


def test_run_the_toy_search_end_to_end(toy_spec, tmp_path, restore_torch_threads, monkeypatch):
    monkeypatch.setenv("NASREG_DISABLE_PLUGINS", "plots")  # the core alone (plots have their own tests)
    out = tmp_path / "run"
    result = invoke("run", toy_spec, "--out", out, "-q", "--set", "search.epochs=1", "--set", "search.warmup_epochs=0")
    assert result.exit_code == 0, result.output
    for name in ("spec.toml", "metrics.jsonl", "genotype.json", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["name"] == "toy" and summary["seed"] == 1
    genotype = nasreg.Genotype.load(out / "genotype.json")
    assert genotype.space == "toy-space"
    assert "genotype" in result.stdout
    assert not list(out.glob("*.png"))  # the disabled plugin did not observe the run


# --- run: the pre-flight estimate -----------------------------------------------------------

SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"
#: DARTS's spec (second order) shrunk to a tiny supernet on digits.
TINY_DARTS = [a for kv in ("data.dataset=digits", "data.limit=64", "data.batch_size=8", "data.num_workers=0",
                           "search_space.cells=3", "search_space.channels=4", "run.threads=1", "run.device=cpu",
                           "search.epochs=1")
              for a in ("--set", kv)]


def test_run_prints_the_preflight_estimate(toy_spec, tmp_path, restore_torch_threads, monkeypatch):
    monkeypatch.setenv("NASREG_DISABLE_PLUGINS", "plots")
    out = tmp_path / "run"
    result = invoke("run", toy_spec, "--out", out, "--set", "search.epochs=1", "--set", "search.warmup_epochs=0")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("pre-flight: ")]
    assert len(lines) == 1, result.stdout
    assert "119 weights, 9 architecture parameters" in lines[0]  # the toy supernet's
    for fragment in ("0.1 MFLOP per step (21,888 FLOP forward at batch 8, x 3 x 2 passes)", "peak memory about ",
                     "free on cpu"):
        assert fragment in lines[0]
    assert result.stdout.index("pre-flight: ") < result.stdout.index("genotype")
    # quiet: no estimate printed (it is still checked: see below)
    quiet = invoke("run", toy_spec, "--out", tmp_path / "quiet", "-q", "--set", "search.epochs=1",
                   "--set", "search.warmup_epochs=0")
    assert quiet.exit_code == 0, quiet.output
    assert "pre-flight" not in quiet.output


def test_the_estimate_comes_before_the_run_directory(toy_spec, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    result = invoke("run", toy_spec, "--out", taken)
    assert_one_line_error(result, "run directory already exists")
    assert result.stdout.startswith("pre-flight: ")


@pytest.mark.parametrize("quiet", [False, True])
def test_run_stops_before_anything_when_memory_does_not_fit(tmp_path, monkeypatch, quiet):
    import nasreg._core.preflight as pf

    monkeypatch.setattr(pf, "free_memory_bytes", lambda device: 2**20)
    out = tmp_path / "out"
    spec = SPECS_DIR / "darts.toml"
    result = invoke("run", spec, *TINY_DARTS, "--out", out, *(["-q"] if quiet else []))
    line = assert_one_line_error(result, f"error: {spec}: the search needs about ", "of cpu memory at batch 8",
                                 "but only 1 MB is free", "[data] batch_size", "[search_space] partial_channels = 4",
                                 "[strategy] order = 1")
    assert "Traceback" not in line
    assert not out.exists()
    assert ("pre-flight: " in result.stdout) is not quiet


def test_an_absurd_batch_fails_on_the_real_free_memory(tmp_path):
    # 65536 images of a 64-channel supernet: terabytes of activations, whatever the machine
    if not Path("/proc/meminfo").exists():
        pytest.skip("the CPU's free memory is unknown here")
    out = tmp_path / "out"
    result = invoke("run", SPECS_DIR / "quickstart.toml", "--out", out, "-q", "--set", "data.limit=64",
                    "--set", "data.batch_size=65536", "--set", "search_space.channels=64", "--set", "run.device=cpu")
    assert_one_line_error(result, "at batch 65536", "is free; use a smaller [data] batch_size (about ",
                          "[search_space] partial_channels = 4")
    assert not out.exists()


def test_no_preflight_skips_the_estimate_and_its_check(toy_spec, tmp_path, restore_torch_threads, monkeypatch):
    import nasreg._core.preflight as pf

    monkeypatch.setenv("NASREG_DISABLE_PLUGINS", "plots")

    def fail(*args, **kwargs):
        raise AssertionError("the estimate ran")

    monkeypatch.setattr(pf, "estimate", fail)
    monkeypatch.setattr(pf, "free_memory_bytes", lambda device: 1)
    out = tmp_path / "run"
    result = invoke("run", toy_spec, "--out", out, "--no-preflight", "--set", "search.epochs=1",
                    "--set", "search.warmup_epochs=0")
    assert result.exit_code == 0, result.output
    assert "pre-flight" not in result.output
    assert (out / "summary.json").is_file()
    assert "--no-preflight" in invoke("run", "--help").output
    assert "--no-preflight" in invoke("resume", "--help").output


# --- the shipped specs ----------------------------------------------------------------------

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.toml"))


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_shipped_spec_validates(spec):
    result = invoke("validate", spec)
    assert result.exit_code == 0, result.output


def test_the_issue_example_error():
    spec = Path(__file__).resolve().parent.parent / "specs" / "quickstart.toml"
    result = invoke("validate", spec, "--set", 'selector.clusterer.n_clusters="three"')
    line = assert_one_line_error(result)
    assert line == f"error: {spec}: [selector.clusterer] n_clusters: expected an integer >= 1, got 'three'"
