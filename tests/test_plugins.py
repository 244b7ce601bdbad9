"""nasreg._core.plugins: discovery through entry points, modules, files and objects; every hook called;
broken plugins reported, never fatal."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import textwrap

import pytest
import torch

import nasreg
from nasreg import hookimpl, hookspecs
from nasreg._core.errors import PluginError, RegistryError, SpecError
from nasreg._core.plugins import DISABLE_ENV, Plugins, load_plugins
from nasreg._core.search import notify

from conftest import BROKEN_PLUGINS, PLUGIN_PKG, TOYCORE_FILE

HOOKS = sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "nasreg_spec"))
REGISTRATION_HOOKS = ["register_operations", "register_search_spaces", "register_strategies",
                      "register_selectors", "register_clusterers", "register_datasets",
                      "register_executors", "register_loggers"]
LIFECYCLE_HOOKS = ["on_run_start", "on_epoch_end", "on_stage_end", "on_run_end",
                   "on_train_start", "on_train_epoch_end", "on_train_end"]


def test_the_hooks_are_the_documented_ones():
    assert HOOKS == sorted(REGISTRATION_HOOKS + LIFECYCLE_HOOKS)


# --- the fixture package: a third-party plugin ----------------------------------------------


def _check_fixture_plugin(plugins: Plugins, name: str = "nasreg_testplugin") -> None:
    import nasreg_testplugin

    info = plugins.infos[name]
    assert info.ok, info.error
    assert info.registered == {"operations": ["test_identity_conv"], "clusterers": ["test_threshold"]}
    assert info.hooks == ["register_clusterers", "register_operations"]
    op = plugins.registries.operations.get("test_identity_conv")
    assert op.factory is nasreg_testplugin.identity_conv
    assert op.plugin == name
    assert op.get("parameter_free") is False
    assert op.description == "A 1x1 convolution with the edge's stride, then BatchNorm."
    clusterer = plugins.registries.clusterers.get("test_threshold")
    assert clusterer.factory is nasreg_testplugin.ThresholdClusterer
    assert clusterer.plugin == name


def test_fixture_package_is_found_through_its_distribution(testplugin_dist):
    plugins = load_plugins()  # the real entry points, the fake distribution among them
    _check_fixture_plugin(plugins)
    info = plugins.infos["nasreg_testplugin"]
    assert info.source == "entry point of nasreg-testplugin"
    assert info.version == "0.1.0"


def test_fixture_package_through_given_entry_points(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_PKG))
    eps = [*md.entry_points(group="nasreg"), md.EntryPoint("nasreg_testplugin", "nasreg_testplugin", "nasreg")]
    plugins = load_plugins(entry_points=eps)
    _check_fixture_plugin(plugins)
    assert plugins.infos["nasreg_testplugin"].source == "entry point"


def test_fixture_package_through_the_plugins_manager(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_PKG))
    plugins = Plugins()
    plugins.load_entry_points([md.EntryPoint("nasreg_testplugin", "nasreg_testplugin", "nasreg")])
    assert list(plugins.infos) == ["nasreg_testplugin"]
    regs = plugins.fill_registries()
    assert regs is plugins.registries
    _check_fixture_plugin(plugins)


def test_fixture_package_as_a_module_named_by_a_spec(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_PKG))
    plugins = load_plugins(["nasreg_testplugin"], entry_points=[])
    _check_fixture_plugin(plugins)
    assert plugins.infos["nasreg_testplugin"].source == "module nasreg_testplugin"


def test_a_plugin_loaded_twice_under_two_names_is_one_plugin(monkeypatch):
    # The entry point "thirdparty" and a spec listing the module itself: one plugin, no clash.
    monkeypatch.syspath_prepend(str(PLUGIN_PKG))
    plugins = load_plugins(["nasreg_testplugin"],
                           entry_points=[md.EntryPoint("thirdparty", "nasreg_testplugin", "nasreg")])
    assert list(plugins.infos) == ["thirdparty"]
    _check_fixture_plugin(plugins, "thirdparty")


def test_fixture_op_honours_the_operation_contract(testplugin_dist):
    factory = load_plugins(entry_points=None).registries.operations.get("test_identity_conv").factory
    for stride, size, out in [(1, 7, 7), (2, 8, 4), (2, 7, 4)]:
        module = factory(6, stride, False)
        assert isinstance(module, torch.nn.Module)
        y = module(torch.randn(2, 6, size, size))
        assert y.shape == (2, 6, out, out)
    assert any(p.requires_grad for p in factory(6, 1, False).parameters())  # parameter_free=False


def test_fixture_clusterer_honours_the_clusterer_contract(testplugin_dist):
    cls = load_plugins().registries.clusterers.get("test_threshold").factory
    X = [[0.5, 0.1], [-1.0, -2.0], [3.0, 1.0], [-0.1, 0.0]]
    assert cls().fit_predict(X).tolist() == [1, 0, 1, 0]
    assert cls(threshold=1.5).fit_predict(X).tolist() == [0, 0, 1, 0]
    assert cls(statistic="last").fit_predict(X).tolist() == [1, 0, 1, 0]


# --- every registration hook, through a plugin object ---------------------------------------


class EveryKind:
    """A plugin object implementing all six registration hooks."""

    def __init__(self):
        self.called: list[str] = []

    def factory(self, **keys):
        """Makes a thing."""

    @hookimpl
    def register_operations(self, register):
        self.called.append("register_operations")
        register("obj_op", self.factory, is_zero=False, parameter_free=True)

    @hookimpl
    def register_search_spaces(self, register):
        self.called.append("register_search_spaces")
        register("obj-space", self.factory, description="A space.")

    @hookimpl
    def register_strategies(self, register):
        self.called.append("register_strategies")
        register("obj-strategy", self.factory)

    @hookimpl
    def register_selectors(self, register):
        self.called.append("register_selectors")
        register("obj-selector", self.factory)

    @hookimpl
    def register_clusterers(self, register):
        self.called.append("register_clusterers")
        register(name="obj-clusterer", factory=self.factory)

    @hookimpl
    def register_datasets(self, register):
        self.called.append("register_datasets")
        register("obj-data", self.factory, custom="kept")

    @hookimpl
    def register_executors(self, register):
        self.called.append("register_executors")
        register("obj-executor", self.factory)

    @hookimpl
    def register_loggers(self, register):
        self.called.append("register_loggers")
        register("obj-logger", self.factory)


def test_every_registration_hook_is_called_once_with_a_bound_register():
    obj = EveryKind()
    plugins = load_plugins(entry_points=[], objects=[("every", obj)])
    assert sorted(obj.called) == sorted(REGISTRATION_HOOKS)
    regs = plugins.registries
    expected = {"operations": "obj_op", "search_spaces": "obj-space", "strategies": "obj-strategy",
                "selectors": "obj-selector", "clusterers": "obj-clusterer", "datasets": "obj-data", "executors": "obj-executor",
                "loggers": "obj-logger"}
    for kind, name in expected.items():
        entry = regs[kind].get(name)
        assert entry.plugin == "every"
        assert entry.factory == obj.factory
    assert regs.operations.get("obj_op").metadata == {"is_zero": False, "parameter_free": True}
    assert regs.search_spaces.get("obj-space").description == "A space."
    assert regs.datasets.get("obj-data").description == "Makes a thing."
    assert regs.datasets.get("obj-data")["custom"] == "kept"
    info = plugins.infos["every"]
    assert info.source == "object"
    assert info.registered == {k: [v] for k, v in expected.items()}
    assert info.hooks == sorted(REGISTRATION_HOOKS)


def test_a_hook_implementation_may_take_no_arguments():
    calls = []

    class NoArgs:
        @hookimpl
        def register_operations(self):
            calls.append(True)

        @hookimpl
        def on_run_end(self):
            calls.append("end")

    plugins = load_plugins(entry_points=[], objects=[("noargs", NoArgs())])
    assert calls == [True]
    assert plugins.infos["noargs"].ok
    notify(plugins, "on_run_end", run=None, genotype=None, summary={})
    assert calls == [True, "end"]


def test_refilling_the_registries_gives_the_same_result(toy_plugins):
    plugins = toy_plugins(("every", EveryKind()))
    first = {r.kind: r.names() for r in plugins.registries}
    plugins.fill_registries()
    assert {r.kind: r.names() for r in plugins.registries} == first
    assert all(i.ok for i in plugins.infos.values())


# --- broken plugins -------------------------------------------------------------------------


def test_import_error_is_recorded_and_the_others_still_load(broken_path, toycore):
    eps = [md.EntryPoint("nasreg_broken_import", "nasreg_broken_import", "nasreg")]
    plugins = load_plugins(entry_points=eps, objects=[("toycore", toycore)])
    info = plugins.infos["nasreg_broken_import"]
    assert not info.ok
    assert info.error == ("error importing 'nasreg_broken_import': ModuleNotFoundError: "
                          "No module named 'nasreg_dependency_that_is_not_installed'")
    assert plugins.infos["toycore"].ok
    assert "toy_conv" in plugins.registries.operations
    # an unknown name names the failed plugins: the name may have been theirs
    with pytest.raises(RegistryError, match="plugins that failed to load: nasreg_broken_import: error importing"):
        plugins.registries.operations.get("never_registered")


def test_a_name_registered_twice_by_one_plugin_fails_that_plugin_and_the_lookup(broken_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_PKG))
    eps = [md.EntryPoint("nasreg_testplugin", "nasreg_testplugin", "nasreg"),
           md.EntryPoint("nasreg_broken_duplicate", "nasreg_broken_duplicate", "nasreg")]
    plugins = load_plugins(entry_points=eps)
    expected = "plugin 'nasreg_broken_duplicate' registered operation 'broken_duplicate_twice' twice"
    assert plugins.infos["nasreg_broken_duplicate"].error == expected
    assert plugins.infos["nasreg_testplugin"].ok
    for name in ("broken_duplicate_twice", "nasreg_broken_duplicate:broken_duplicate_twice"):
        with pytest.raises(RegistryError) as err:  # neither registration silently wins
            plugins.registries.operations.get(name)
        assert str(err.value) == expected
    # its other entries stay usable
    assert plugins.registries.operations.get("broken_duplicate_unique_op").plugin == "nasreg_broken_duplicate"
    assert plugins.registries.clusterers.get("test_threshold").plugin == "nasreg_testplugin"


def test_wrong_hook_signature_is_rejected_with_the_reason(broken_path):
    eps = [md.EntryPoint("nasreg_broken_signature", "nasreg_broken_signature", "nasreg")]
    plugins = load_plugins(entry_points=eps)
    error = plugins.infos["nasreg_broken_signature"].error
    assert error.startswith("PluginValidationError: ")
    assert "register_operations(register, extra)" in error
    assert "'extra'" in error and "not be found in the hookspec" in error
    assert "\n" not in error
    assert "never_registered" not in plugins.registries.operations


def test_unknown_hook_name_is_rejected(broken_path):
    eps = [md.EntryPoint("nasreg_broken_unknown_hook", "nasreg_broken_unknown_hook", "nasreg")]
    plugins = load_plugins(entry_points=eps)
    info = plugins.infos["nasreg_broken_unknown_hook"]
    assert info.error == ("implements unknown hook(s) register_operation "
                          "(see nasreg.hookspecs for the hooks nasreg calls)")
    assert not plugins.pm.is_registered(importlib.import_module("nasreg_broken_unknown_hook"))


def test_a_raising_registration_hook_registers_nothing(broken_path):
    eps = [md.EntryPoint("nasreg_broken_raises", "nasreg_broken_raises", "nasreg")]
    plugins = load_plugins(entry_points=eps)
    info = plugins.infos["nasreg_broken_raises"]
    assert info.error == "failed while registering: RuntimeError: cannot reach the licence server"
    assert info.registered == {}
    # it registered a clusterer before raising: staged, never committed
    assert "broken_raises_clusterer" not in plugins.registries.clusterers


def test_all_broken_plugins_at_once_do_not_stop_the_good_ones(broken_dist, testplugin_dist):
    plugins = load_plugins()
    for name in BROKEN_PLUGINS:
        assert not plugins.infos[name].ok, name
        assert plugins.infos[name].source == "entry point of nasreg-broken"
        assert plugins.infos[name].version == "6.6.6"
    assert json.dumps([i.to_dict() for i in plugins.infos.values()])  # serializable for --json


@pytest.mark.parametrize("name, message", [
    ("nasreg_broken_import", "error importing 'nasreg_broken_import': ModuleNotFoundError"),
    ("nasreg_broken_signature", "PluginValidationError"),
    ("nasreg_broken_unknown_hook", "implements unknown hook(s) register_operation"),
    ("nasreg_broken_raises", "failed while registering: RuntimeError: cannot reach the licence server"),
])
def test_a_failed_plugin_that_was_asked_for_raises(broken_path, name, message):
    with pytest.raises(PluginError) as err:
        load_plugins([name], entry_points=[])
    text = str(err.value)
    assert text.startswith(f"plugin '{name}' (module {name}) failed to load: ")
    assert message in text
    assert "\n" not in text


def test_a_missing_plugin_module_that_was_asked_for_raises():
    with pytest.raises(PluginError, match="plugin 'no_such_plugin_module' .* No module named 'no_such_plugin_module'"):
        load_plugins(["no_such_plugin_module"], entry_points=[])


def test_asking_for_a_duplicate_plugin_raises(broken_path):
    with pytest.raises(PluginError, match="registered operation 'broken_duplicate_twice' twice"):
        load_plugins(["nasreg_broken_duplicate"], entry_points=[])


def test_register_misuse_fails_the_plugin_alone(toycore):
    class ThirdPositional:
        @hookimpl
        def register_operations(self, register):
            register("x", toycore.toy_conv, "a description given positionally")

    class ReservedKey:
        @hookimpl
        def register_operations(self, register):
            register("y", toycore.toy_conv, plugin="me")

    plugins = load_plugins(entry_points=[], objects=[("toycore", toycore), ("third", ThirdPositional()),
                                                     ("reserved", ReservedKey())])
    assert plugins.infos["third"].error.startswith("failed while registering: TypeError:")
    assert "'plugin' is reserved" in plugins.infos["reserved"].error
    assert plugins.infos["toycore"].ok
    assert "x" not in plugins.registries.operations and "y" not in plugins.registries.operations


def test_a_plugin_can_be_disabled_by_name(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_PKG))
    monkeypatch.setenv(DISABLE_ENV, "other, nasreg_testplugin")
    plugins = load_plugins(entry_points=[md.EntryPoint("nasreg_testplugin", "nasreg_testplugin", "nasreg")])
    assert "nasreg_testplugin" not in plugins.infos
    assert "test_identity_conv" not in plugins.registries.operations


# --- file plugins ---------------------------------------------------------------------------


def test_a_file_plugin_relative_to_the_spec_folder(tmp_path):
    (tmp_path / "local_ops.py").write_text(textwrap.dedent('''
        from torch import nn
        from nasreg import hookimpl

        def local_op(C, stride, affine):
            """A local op."""
            return nn.Identity()

        @hookimpl
        def register_operations(register):
            register("local_op", local_op)
    '''))
    plugins = load_plugins(["local_ops.py"], base_dir=tmp_path, entry_points=[])
    assert plugins.infos["local_ops"].source == "file local_ops.py"
    assert plugins.registries.operations.get("local_op").description == "A local op."
    # the same file named twice (spec and --plugin) is one plugin, not a clash
    again = load_plugins(["local_ops.py", str(tmp_path / "local_ops.py")], base_dir=tmp_path, entry_points=[])
    assert list(again.infos) == ["local_ops"] and again.infos["local_ops"].ok


def test_a_missing_file_plugin_raises(tmp_path):
    with pytest.raises(PluginError, match=r"plugin 'nope' \(file nope.py\) failed to load: file not found: "):
        load_plugins(["nope.py"], base_dir=tmp_path, entry_points=[])


def test_a_file_plugin_that_fails_to_import(tmp_path, fresh_modules):
    (tmp_path / "bad.py").write_text("raise ImportError('needs libfoo')\n")
    with pytest.raises(PluginError) as err:
        load_plugins(["bad.py"], base_dir=tmp_path, entry_points=[])
    assert str(err.value) == ("plugin 'bad' (file bad.py) failed to load: "
                              "error importing 'bad.py': ImportError: needs libfoo")


def test_the_toycore_file_loads_as_a_file_plugin():
    plugins = load_plugins([str(TOYCORE_FILE)], entry_points=[])
    assert plugins.infos["nasreg_toycore"].ok
    assert plugins.registries.selectors.get("toy-select").plugin == "nasreg_toycore"


# --- lifecycle hooks ------------------------------------------------------------------------


class Observer:
    def __init__(self):
        self.calls: list[tuple] = []

    @hookimpl
    def on_run_start(self, run):
        self.calls.append(("on_run_start", run))

    @hookimpl
    def on_epoch_end(self, run, stage, epoch, metrics):
        self.calls.append(("on_epoch_end", stage, epoch, metrics))

    @hookimpl
    def on_stage_end(self, stage, result):  # a subset of the arguments
        self.calls.append(("on_stage_end", stage, result))

    @hookimpl
    def on_run_end(self, run, genotype, summary):
        self.calls.append(("on_run_end", genotype, summary))


class Raising:
    @hookimpl
    def on_epoch_end(self, epoch):
        raise ValueError(f"observer broke at epoch {epoch}")


class Messages:
    def __init__(self):
        self.lines: list[str] = []

    def message(self, text):
        self.lines.append(text)


def test_notify_delivers_every_lifecycle_hook_with_its_arguments():
    obs = Observer()
    plugins = load_plugins(entry_points=[], objects=[("obs", obs)])
    run, result, genotype = object(), object(), object()
    notify(plugins, "on_run_start", run=run)
    notify(plugins, "on_epoch_end", run=run, stage=0, epoch=3, metrics={"val_acc": 0.5})
    notify(plugins, "on_stage_end", run=run, stage=1, result=result)
    notify(plugins, "on_run_end", run=run, genotype=genotype, summary={"name": "x"})
    assert obs.calls == [("on_run_start", run), ("on_epoch_end", 0, 3, {"val_acc": 0.5}),
                         ("on_stage_end", 1, result), ("on_run_end", genotype, {"name": "x"})]


def test_a_raising_observer_only_produces_a_warning():
    obs = Observer()
    plugins = load_plugins(entry_points=[], objects=[("raising", Raising()), ("obs", obs)])
    reporter = Messages()
    notify(plugins, "on_epoch_end", reporter, run=None, stage=0, epoch=7, metrics={})
    assert reporter.lines == ["warning: plugin 'raising' failed in on_epoch_end: "
                              "ValueError: observer broke at epoch 7"]
    assert obs.calls == [("on_epoch_end", 0, 7, {})]  # the other observers still ran


def test_a_raising_observer_without_reporter_prints_the_warning(capsys):
    plugins = load_plugins(entry_points=[], objects=[("raising", Raising())])
    notify(plugins, "on_epoch_end", run=None, stage=0, epoch=1, metrics={})
    assert "warning: plugin 'raising' failed in on_epoch_end" in capsys.readouterr().out


def test_a_whole_search_calls_the_lifecycle_hooks_in_order(toy_plugins, write_spec, tmp_path,
                                                           restore_torch_threads):
    from nasreg._core import spec as spec_mod
    from nasreg._core.search import prepare, run_search

    obs = Observer()
    plugins = toy_plugins(("obs", obs), ("raising", Raising()))
    path = write_spec()
    spec = spec_mod.validate(spec_mod.apply_overrides(spec_mod.read_toml(path), ["selector.stages=2"]),
                             path, plugins.registries)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    reporter = _Reporter()
    summary = run_search(prepare(spec, plugins), run_dir, reporter)

    names = [c[0] for c in obs.calls]
    assert names == (["on_run_start"] + ["on_epoch_end"] * 2 + ["on_stage_end"]
                     + ["on_epoch_end"] * 2 + ["on_stage_end", "on_run_end"])
    run = obs.calls[0][1]
    assert run.spec is spec and run.run_dir == run_dir and run.plugins is plugins
    epochs = [(c[1], c[2]) for c in obs.calls if c[0] == "on_epoch_end"]
    assert epochs == [(0, 0), (0, 1), (1, 0), (1, 1)]
    metrics = [c[3] for c in obs.calls if c[0] == "on_epoch_end"]
    written = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(m["stage"], m["epoch"], m["train_loss"]) for m in metrics] == \
        [(m["stage"], m["epoch"], m["train_loss"]) for m in written]
    stage_results = [c[2] for c in obs.calls if c[0] == "on_stage_end"]
    assert isinstance(stage_results[0], nasreg.StageResult)
    assert stage_results[0].stage == 0 and stage_results[1].stage == 1
    # the toy selector drops each edge's weakest op between stages
    assert all(len(c) == 2 for c in stage_results[1].candidates["normal"])
    _, genotype, final = obs.calls[-1]
    assert isinstance(genotype, nasreg.Genotype)
    assert final is summary and summary["genotype"] == genotype.to_dict()
    assert nasreg.Genotype.load(run_dir / "genotype.json", plugins.registries).to_dict() == genotype.to_dict()
    # the raising observer warned at every epoch and stopped nothing
    assert len([m for m in reporter.lines if "plugin 'raising' failed in on_epoch_end" in m]) == 4


class _Reporter(Messages):
    def stage_start(self, *a): ...
    def step(self, *a): ...
    def epoch_end(self, *a): ...
    def stage_end(self, *a): ...
    def close(self): ...


def test_spec_registries_and_hooks_together_through_spec_load(testplugin_dist, write_spec):
    """A spec whose [run] plugins names the toy file and uses the third-party op: validates."""
    from nasreg._core import spec as spec_mod

    path = write_spec(f'''
        [run]
        plugins = ["{TOYCORE_FILE}"]
        [data]
        dataset = "toy-data"
        [search_space]
        name = "toy-space"
        operations = ["toy_zero", "test_identity_conv"]
        [strategy]
        name = "toy-sgd"
        [selector]
        name = "toy-select"
        [selector.clusterer]
        name = "test_threshold"
        threshold = 0.5
    ''')
    spec, plugins = spec_mod.load(path)
    assert spec.search_space.params["operations"] == ["toy_zero", "test_identity_conv"]
    clusterer = spec.selector.params["clusterer"]
    assert clusterer.name == "test_threshold"
    assert clusterer.entry.factory is importlib.import_module("nasreg_testplugin").ThresholdClusterer
    assert clusterer.build().threshold == 0.5
    with pytest.raises(SpecError, match=r"\[selector.clusterer\] threshold: expected a number >= -1000000"):
        spec_mod.load(path, ["selector.clusterer.threshold=1e9"])


# --- the fixture plugin with the built-ins --------------------------------------------------

BUILTIN_SPEC = """\
[run]
name = "thirdparty"
seed = 0
device = "cpu"
threads = 1

[data]
dataset = "digits"
batch_size = 32
limit = 64

[search_space]
name = "darts-cell"
operations = ["none", "skip_connect", "avg_pool_3x3", "test_identity_conv"]
nodes = 2
cells = 3
channels = 4

[search]
epochs = 1

[strategy]
name = "darts"
order = 1

[selector]
name = "dg-darts"
stages = 2
min_ops = 1
plot = false

[selector.clusterer]
name = "test_threshold"
threshold = 0.0
statistic = "last"
"""


def test_a_spec_naming_the_fixture_op_and_clusterer_validates(testplugin_dist, write_spec):
    import nasreg_testplugin
    from nasreg._core import spec as spec_mod

    spec, plugins = spec_mod.load(write_spec(BUILTIN_SPEC))
    regs = plugins.registries
    assert spec.search_space.params["operations"][-1] == "test_identity_conv"
    assert regs.operations.get("test_identity_conv").factory is nasreg_testplugin.identity_conv
    clusterer = spec.selector.params["clusterer"]
    assert clusterer.name == "test_threshold"
    assert clusterer.params == {"threshold": 0.0, "statistic": "last", "random_state": None}
    assert clusterer.entry is regs.clusterers.get("test_threshold")
    assert clusterer.entry.factory is nasreg_testplugin.ThresholdClusterer
    assert spec.resolved()["selector"]["clusterer"] == {"name": "test_threshold", "threshold": 0.0,
                                                        "statistic": "last"}
    with pytest.raises(SpecError) as err:
        spec_mod.load(write_spec(BUILTIN_SPEC), ['selector.clusterer.statistic="median"'])
    assert str(err.value).endswith("[selector.clusterer] statistic: expected one of 'mean', 'last', 'norm', "
                                   "got 'median'")


def test_the_fixture_op_and_clusterer_run_in_a_dg_darts_search(testplugin_dist, write_spec, tmp_path,
                                                                monkeypatch, restore_torch_threads):
    from click.testing import CliRunner

    from nasreg.cli import main

    monkeypatch.setenv("NASREG_DISABLE_PLUGINS", "plots")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(write_spec(BUILTIN_SPEC)), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    clusters = json.loads((out / "clusters.json").read_text())
    assert clusters["settings"]["clusterer"]["name"] == "test_threshold"
    stages = json.loads((out / "stages.json").read_text())
    assert all("test_identity_conv" in ops for ops in stages[0]["candidates"]["normal"])
    genotype = nasreg.Genotype.load(out / "genotype.json", load_plugins().registries)
    assert genotype.space == "darts-cell"
