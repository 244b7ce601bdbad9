"""nasreg._core.spec: TOML -> validated, typed spec; every error names the file and the key path."""

from __future__ import annotations

import tomllib

import pytest
import tomli_w

from nasreg._core import spec as S
from nasreg._core.errors import NasregError, PluginError, SpecError
from nasreg._core.params import Component

from conftest import TOY_SPEC, TOYCORE_FILE


@pytest.fixture
def regs(toy_plugins):
    return toy_plugins().registries


@pytest.fixture
def error(regs, write_spec):
    """``error(text_or_overrides)``: the SpecError message the toy spec with changes raises."""

    def get(*overrides: str, text: str = TOY_SPEC) -> str:
        path = write_spec(text)
        with pytest.raises(SpecError) as err:
            S.validate(S.apply_overrides(S.read_toml(path), overrides), path, regs)
        msg = str(err.value)
        assert "\n" not in msg
        return msg.replace(f"{path}: ", "SPEC: ")

    return get


def test_the_toy_spec_validates_into_typed_sections(regs, write_spec):
    path = write_spec()
    spec = S.validate(S.read_toml(path), path, regs)
    assert spec.run.name == "toy" and spec.run.seed == 1 and spec.run.device == "cpu"
    assert spec.data.dataset == "toy-data" and spec.data.batch_size == 8
    assert isinstance(spec.dataset, Component) and spec.dataset.params == {"size": 32, "image_size": 4, "classes": 3}
    assert spec.search_space.params == {"operations": ["toy_zero", "toy_skip", "toy_conv"], "nodes": 2, "channels": 4}
    assert spec.search.epochs == 2 and spec.search.warmup_epochs == 1 and spec.search.grad_stat == "mean"
    assert spec.strategy.name == "toy-sgd" and spec.strategy.params == {"w_lr": 0.05, "alpha_lr": 0.01}
    assert spec.selector.name == "toy-select"
    clusterer = spec.selector.params["clusterer"]
    assert isinstance(clusterer, Component) and clusterer.name == "toy-split"


def test_run_name_defaults_to_the_file_name(regs, write_spec):
    path = write_spec(TOY_SPEC.replace('name = "toy"\n', ""), name="my-search.toml")
    assert S.validate(S.read_toml(path), path, regs).run.name == "my-search"


def test_resolved_spec_has_every_default_and_round_trips_through_toml(regs, write_spec):
    path = write_spec()
    spec = S.validate(S.read_toml(path), path, regs)
    resolved = spec.resolved()
    assert resolved["run"]["checkpoint_every"] == 1 and resolved["run"]["plugins"] == []
    assert resolved["data"] == {"dataset": "toy-data", "batch_size": 8, "train_portion": 0.5, "num_workers": 0,
                                "limit": 0, "loader": "auto", "size": 32, "image_size": 4, "classes": 3}
    assert resolved["selector"] == {"name": "toy-select", "stages": 1, "min_ops": 1,
                                    "clusterer": {"name": "toy-split", "n_clusters": 2}}  # None dropped
    assert resolved["search"]["eval_batch_norm"] == "batch"
    # what the run directory gets validates again to the same spec
    again = tmp = path.with_name("resolved.toml")
    tmp.write_text(tomli_w.dumps(resolved))
    spec2 = S.validate(S.read_toml(again), again, regs)
    assert spec2.resolved() == resolved
    assert spec2.digest() == spec.digest()


def test_digest_ignores_name_and_out_dir_but_not_settings(regs, write_spec):
    path = write_spec()
    base = S.validate(S.read_toml(path), path, regs).digest()
    renamed = S.validate(S.apply_overrides(S.read_toml(path), ["run.name=other", "run.out_dir=elsewhere"]), path, regs)
    changed = S.validate(S.apply_overrides(S.read_toml(path), ["data.batch_size=16"]), path, regs)
    assert renamed.digest() == base
    assert changed.digest() != base
    assert len(base) == 16


# --- reading --------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(SpecError) as err:
        S.read_toml(tmp_path / "nope.toml")
    assert str(err.value) == f"{tmp_path / 'nope.toml'}: no such file"


def test_a_directory_is_not_a_spec(tmp_path):
    with pytest.raises(SpecError, match="is a directory, not a spec file"):
        S.read_toml(tmp_path)


def test_malformed_toml_names_the_file_and_the_line(write_spec):
    path = write_spec("[run]\nseed = = 3\n")
    with pytest.raises(SpecError) as err:
        S.read_toml(path)
    assert str(err.value).startswith(f"{path}: invalid TOML: ")
    assert "line 2" in str(err.value)


def test_binary_file_is_not_a_spec(tmp_path):
    path = tmp_path / "x.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SpecError, match="not a UTF-8 text file"):
        S.read_toml(path)


# --- tables and keys ------------------------------------------------------------------------


def test_unknown_table_with_suggestion(error):
    assert error("serach.epochs=3") == ("SPEC: unknown table [serach]; did you mean [search]? (known: [run], "
                                        "[data], [search_space], [search], [strategy], [selector], [executor], [evaluate], "
                                        "[loggers])")
    assert error("model.depth=3").startswith("SPEC: unknown table [model] (known: [run]")


def test_a_section_that_is_not_a_table(error):
    assert error("run=3") == "SPEC: [run]: expected a table, got 3"


@pytest.mark.parametrize("override, expected", [
    ("run.sead=1", "SPEC: [run] sead: unknown key; did you mean 'seed'?"),
    ("search.epoch=1", "SPEC: [search] epoch: unknown key; did you mean 'epochs'"),
    ("data.batchsize=4", "SPEC: [data] batchsize: unknown key; did you mean 'batch_size'"),
    ("data.sise=4", "SPEC: [data] sise: unknown key; did you mean 'size'"),
    ("strategy.w_lrr=0.1", "SPEC: [strategy] w_lrr: unknown key; did you mean 'w_lr'"),
    ("search_space.node=3", "SPEC: [search_space] node: unknown key; did you mean 'nodes'?"),
    ("selector.min_op=3", "SPEC: [selector] min_op: unknown key; did you mean 'min_ops'?"),
    ("selector.clusterer.n_cluster=3", "SPEC: [selector.clusterer] n_cluster: unknown key; did you mean 'n_clusters'?"),
    ("run.zzz=1", "SPEC: [run] zzz: unknown key (known keys: checkpoint_every, deterministic, device, loggers, "
                  "name, out_dir, plugins, seed, threads)"),
])
def test_unknown_keys_with_close_matches(error, override, expected):
    assert error(override).startswith(expected)


@pytest.mark.parametrize("override, expected", [
    ('selector.clusterer.n_clusters="three"',
     "SPEC: [selector.clusterer] n_clusters: expected an integer >= 1 and <= 10, got 'three'"),
    ('run.seed="three"', "SPEC: [run] seed: expected an integer >= 0 and <= 4294967295, got 'three'"),
    ("run.deterministic=1", "SPEC: [run] deterministic: expected a boolean (true or false), got 1"),
    ("data.batch_size=1.5", "SPEC: [data] batch_size: expected an integer >= 1 and <= 65536, got 1.5"),
    ("run.plugins=3", "SPEC: [run] plugins: expected a list of strings, got 3"),
    ('search.grad_stat="median"', "SPEC: [search] grad_stat: expected one of 'mean', 'abs_mean', 'sum', 'last', "
                                  "got 'median'"),
    ("strategy.w_lr=true", "SPEC: [strategy] w_lr: expected a number > 0 and <= 10, got True"),
    ('search_space.operations="toy_conv"', "SPEC: [search_space] operations: expected a list of strings naming "
                                           "a registered operation, got 'toy_conv'"),
    ("search_space.operations=[1]", "SPEC: [search_space] operations[0]: expected a string naming a registered "
                                    "operation, got 1"),
    ('search.epochs=[2, "x"]', "SPEC: [search] epochs[1]: expected an integer >= 0 and <= 100000, got 'x'"),
    ("run.device=gpu", "SPEC: [run] device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'"),
    ('run.name="../../etc"', "SPEC: [run] name: expected a folder name (no '/' or '\\', not '.' or '..'), "
                             "got '../../etc'"),
])
def test_wrong_types(error, override, expected):
    assert error(override) == expected


@pytest.mark.parametrize("override, expected", [
    ("data.batch_size=0", "SPEC: [data] batch_size: expected an integer >= 1 and <= 65536, got 0"),
    ("search.epochs=1000000000", "SPEC: [search] epochs: expected an integer >= 0 and <= 100000, got 1000000000"),
    ("data.train_portion=1.5", "SPEC: [data] train_portion: expected a number > 0 and < 1, got 1.5"),
    ("data.train_portion=0", "SPEC: [data] train_portion: expected a number > 0 and < 1, got 0"),
    ("run.seed=-1", "SPEC: [run] seed: expected an integer >= 0 and <= 4294967295, got -1"),
    ("search_space.nodes=9", "SPEC: [search_space] nodes: expected an integer >= 1 and <= 4, got 9"),
    ("data.size=1", "SPEC: [data] size: expected an integer >= 4 and <= 100000, got 1"),
    ("selector.clusterer.n_clusters=0", "SPEC: [selector.clusterer] n_clusters: expected an integer >= 1 and <= 10, got 0"),
    ("strategy.w_lr=0", "SPEC: [strategy] w_lr: expected a number > 0 and <= 10, got 0"),
])
def test_out_of_range(error, override, expected):
    assert error(override) == expected


@pytest.mark.parametrize("override, expected", [
    ('search_space.operations=["toy_skip", "toy_cnov"]',
     "SPEC: [search_space] operations[1]: unknown operation 'toy_cnov'; did you mean 'toy_conv'"),
    ('data.dataset="toy-dta"', "SPEC: [data] dataset: unknown dataset 'toy-dta'; did you mean 'toy-data'?"),
    ('search_space.name="toy-spcae"', "SPEC: [search_space] name: unknown search space 'toy-spcae'; did you mean"),
    ('strategy.name="toy-sdg"', "SPEC: [strategy] name: unknown search strategy 'toy-sdg'; did you mean 'toy-sgd'?"),
    ('selector.name="toy-selct"', "SPEC: [selector] name: unknown selector 'toy-selct'; did you mean 'toy-select'?"),
    ('selector.clusterer.name="toy-splt"',
     "SPEC: [selector.clusterer] name: unknown clusterer 'toy-splt'; did you mean 'toy-split'?"),
    ('selector.clusterer.name="kmeans"', "SPEC: [selector.clusterer] name: unknown clusterer 'kmeans'"),
])
def test_unknown_registry_names(error, override, expected):
    msg = error(override)
    assert msg.startswith(expected)
    assert msg.endswith("(`nasreg list-plugins` shows what is available)")


def test_duplicate_and_empty_operation_lists(error):
    assert error('search_space.operations=["toy_skip", "toy_conv", "toy_skip"]') == \
        "SPEC: [search_space] operations: operation 'toy_skip' is listed twice"
    assert error("search_space.operations=[]") == \
        "SPEC: [search_space] operations: expected at least one operation, got []"


@pytest.mark.parametrize("table, expected", [
    ("data", "SPEC: [data] dataset: missing required key (a registered dataset name)"),
    ("search_space", "SPEC: [search_space] name: missing required key (a registered search space;"),
    ("strategy", "SPEC: [strategy] name: missing required key (a registered search strategy;"),
    ("selector", "SPEC: [selector] name: missing required key (a registered selector;"),
])
def test_missing_required_keys(error, table, expected):
    raw = tomllib.loads(TOY_SPEC)
    key = "dataset" if table == "data" else "name"
    del raw[table][key]
    assert error(text=tomli_w.dumps(raw)).startswith(expected)


def test_missing_selector_clusterer_name(error):
    assert error("selector.clusterer={n_clusters = 2}") == (
        "SPEC: [selector.clusterer] name: missing required key (which clusterer to use; "
        "`nasreg list-plugins` lists them)")


def test_errors_are_user_errors(error):
    assert issubclass(SpecError, NasregError) and SpecError.exit_code == 2


# --- per-stage epochs -----------------------------------------------------------------------


def test_per_stage_epochs():
    assert S.SearchSection(epochs=3, warmup_epochs=1).per_stage(2) == [(1, 3), (1, 3)]
    assert S.SearchSection(epochs=[2, 4], warmup_epochs=[0, 1]).per_stage(2) == [(0, 2), (1, 4)]
    with pytest.raises(SpecError, match=r"^x: \[search\] epochs: expected one value per stage \(2\), got 3$"):
        S.SearchSection(epochs=[1, 2, 3]).per_stage(2, "x: [search]")
    with pytest.raises(SpecError, match=r"warmup_epochs: stage 1 has 5 warm-up epochs but only 4 epochs"):
        S.SearchSection(epochs=[2, 4], warmup_epochs=[0, 5]).per_stage(2)
    with pytest.raises(SpecError, match=r"epochs: stage 0 needs at least 1 epoch, got 0"):
        S.SearchSection(epochs=0).per_stage(1)


# --- --set ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, path, value", [
    ("data.batch_size=32", ["data", "batch_size"], 32),
    ("strategy.w_lr=1e-3", ["strategy", "w_lr"], 0.001),
    ("run.deterministic=true", ["run", "deterministic"], True),
    ("run.device=cpu", ["run", "device"], "cpu"),  # a bare word is a string
    ("run.name=my search", ["run", "name"], "my search"),
    ('run.name="quoted"', ["run", "name"], "quoted"),
    ('search_space.operations=["none", "sep_conv_3x3"]', ["search_space", "operations"], ["none", "sep_conv_3x3"]),
    ("search.epochs=[1, 2]", ["search", "epochs"], [1, 2]),
    ('selector.clusterer={name = "elkan", n_clusters = 2}', ["selector", "clusterer"],
     {"name": "elkan", "n_clusters": 2}),
    (" data.limit = 5 ", ["data", "limit"], 5),
])
def test_parse_override(text, path, value):
    assert S.parse_override(text) == (path, value)


@pytest.mark.parametrize("text, expected", [
    ("data.batch_size", "--set 'data.batch_size': expected KEY.PATH=VALUE"),
    ("=3", "--set '=3': expected KEY.PATH=VALUE"),
    ("data..batch_size=3", "--set 'data..batch_size=3': empty part in key path 'data..batch_size'"),
    ("search.epochs=[1, 2", "--set 'search.epochs=[1, 2': value is not a valid TOML literal"),
    ('run.name="unclosed', "--set 'run.name=\"unclosed': value is not a valid TOML literal"),
    ("x={a = ", "--set 'x={a = ': value is not a valid TOML literal"),
])
def test_invalid_overrides(text, expected):
    with pytest.raises(SpecError) as err:
        S.parse_override(text)
    assert str(err.value) == expected


def test_overrides_create_nested_tables_and_leave_the_input_alone():
    raw = {"selector": {"name": "dg-darts"}}
    out = S.apply_overrides(raw, ["selector.clusterer.name=elkan", "selector.clusterer.n_clusters=4", "run.seed=3"])
    assert out == {"selector": {"name": "dg-darts", "clusterer": {"name": "elkan", "n_clusters": 4}},
                   "run": {"seed": 3}}
    assert raw == {"selector": {"name": "dg-darts"}}
    assert S.apply_overrides(out, ["selector.clusterer.n_clusters=5"])["selector"]["clusterer"]["n_clusters"] == 5


def test_override_through_a_value_that_is_not_a_table():
    with pytest.raises(SpecError) as err:
        S.apply_overrides({"a": 1}, ["a.b=1"])
    assert str(err.value) == "--set 'a.b=1': a is not a table"
    with pytest.raises(SpecError, match=r"^--set 'data.batch_size.x=1': data.batch_size is not a table$"):
        S.apply_overrides({"data": {"batch_size": 3}}, ["data.batch_size.x=1"])


def test_later_overrides_win():
    assert S.apply_overrides({}, ["data.limit=1", "data.limit=2"]) == {"data": {"limit": 2}}


# --- load: plugins named by the spec ----------------------------------------------------------


def test_load_with_a_file_plugin_relative_to_the_spec(write_spec, tmp_path):
    (tmp_path / "toys.py").write_text(TOYCORE_FILE.read_text())
    path = write_spec('[run]\nplugins = ["toys.py"]\n' + TOY_SPEC.replace("[run]\n", "", 1).replace(
        'name = "toy"\nseed = 1\ndevice = "cpu"\n', 'name = "toy"\n'))
    spec, plugins = S.load(path, ["data.batch_size=4"])
    assert spec.data.batch_size == 4
    assert plugins.infos["toys"].source == "file toys.py"
    assert spec.search_space.entry.plugin == "toys"


def test_load_with_a_command_line_file_plugin_relative_to_the_working_directory(write_spec, tmp_path, monkeypatch):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    path = spec_dir / "toy.toml"
    path.write_text(TOY_SPEC)
    work = tmp_path / "work"
    work.mkdir()
    (work / "mytoys.py").write_text(TOYCORE_FILE.read_text())
    monkeypatch.chdir(work)
    spec, plugins = S.load(path, extra_plugins=["mytoys.py"])  # not specs/mytoys.py
    assert plugins.infos["mytoys"].ok
    assert spec.strategy.entry.plugin == "mytoys"


def test_load_stops_at_a_failed_plugin_the_spec_asks_for(write_spec, broken_path):
    path = write_spec('[run]\nplugins = ["nasreg_broken_import"]\n')
    with pytest.raises(PluginError) as err:
        S.load(path)
    assert str(err.value) == ("plugin 'nasreg_broken_import' (module nasreg_broken_import) failed to load: "
                              "error importing 'nasreg_broken_import': ModuleNotFoundError: No module named "
                              "'nasreg_dependency_that_is_not_installed'")


def test_load_checks_the_plugins_list_before_loading(write_spec):
    path = write_spec('[run]\nplugins = "nasreg_testplugin"\n')
    with pytest.raises(SpecError, match=r"\[run\] plugins: expected a list of strings, got 'nasreg_testplugin'"):
        S.load(path)


def test_data_name_is_not_a_second_dataset_key(error):
    assert error('data.name="other"') == "SPEC: [data] name: unknown key (the dataset is chosen with `dataset`)"
