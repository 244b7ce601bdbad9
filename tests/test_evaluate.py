"""nasreg/_core/evaluate.py and the [evaluate] spec section: the recipe, its validation, cutout, the
drop-path schedule, FLOPs, dataset shapes without data, the training loop on tiny inputs."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

import nasreg
import torch
from torch import nn

from nasreg._core import spec as S
from nasreg._core.errors import GenotypeError, SpecError
from nasreg._core.evaluate import (EvalSpec, count_flops, count_parameters, cutout, dataset_shape, describe_network,
                             drop_path_schedule, is_eval_spec, load_eval_spec, plot_curves, prepare_evaluation,
                             run_evaluation, space_for)
from nasreg._core.genotype import Genotype
from nasreg._core.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
DARTS_V2 = ROOT / "genotypes" / "darts_v2.json"


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# --- the recipe -------------------------------------------------------------------------------

RECIPE_KEYS = [f.name for f in dataclasses.fields(S.EvaluateSection)
               if f.name not in ("num_workers", "augment", "data", "limit")]


def bound(path, *overrides, space="darts-cell"):
    """An evaluation spec resolved for ``space`` (as for a genotype of that space)."""
    espec, plugins = load_eval_spec(path, overrides)
    return espec.bind(space, plugins.registries)


def test_the_darts_plugin_supplies_the_shipped_darts_recipe():
    defaults = bound(None)
    shipped = bound(SPECS / "eval-darts.toml")
    for key in RECIPE_KEYS:
        assert getattr(defaults.evaluate, key) == getattr(shipped.evaluate, key), key
    assert defaults.network == shipped.network
    assert defaults.dataset.name == shipped.dataset.name == "cifar10"
    ev = defaults.evaluate
    # DARTS's CIFAR-10 evaluation (REFERENCE.md).
    assert (ev.epochs, ev.batch_size, ev.lr, ev.lr_min, ev.momentum, ev.weight_decay, ev.grad_clip) == \
        (600, 96, 0.025, 0.0, 0.9, 3e-4, 5.0)
    assert (ev.auxiliary_weight, ev.drop_path) == (0.4, 0.2)
    assert defaults.network == {"cells": 20, "channels": 36, "auxiliary": True, "stem_multiplier": None}
    assert (ev.cutout, ev.cutout_length, ev.autoaugment, ev.label_smoothing) == (True, 16, False, 0.0)
    # nasnet-cell genotypes train as before the recipe moved into the plugins: the same values.
    nasnet = bound(None, space="nasnet-cell")
    assert nasnet.evaluate == defaults.evaluate and nasnet.dataset.name == "cifar10"
    assert nasnet.network == {"cells": 20, "channels": 36, "auxiliary": True}


def test_the_core_recipe_defaults_are_neutral():
    params = {f.name: f.default for f in dataclasses.fields(S.EvaluateSection)}
    assert {k: params[k] for k in ("momentum", "weight_decay", "grad_clip", "label_smoothing", "drop_path",
                                   "auxiliary_weight", "cutout", "autoaugment", "amp", "limit")} == {
        "momentum": 0.0, "weight_decay": 0.0, "grad_clip": 0.0, "label_smoothing": 0.0, "drop_path": 0.0,
        "auxiliary_weight": 0.0, "cutout": False, "autoaugment": False, "amp": False, "limit": 0}
    assert S.REQUIRED_RECIPE_KEYS == ("epochs", "batch_size", "lr")  # no neutral value: the spec's or the space's
    # nas-layers supplies no recipe: a spec that leaves out a required key says so, in one line.
    with pytest.raises(SpecError) as err:
        bound(None, "evaluate.data.dataset=digits", "evaluate.epochs=1", space="nas-layers")
    assert str(err.value) == ("--set: [evaluate] batch_size: missing required key (an integer >= 1 and <= 65536; "
                              "search space 'nas-layers' supplies no default)")


def test_the_space_defaults_apply_under_the_spec_keys():
    espec = bound(None, "evaluate.epochs=3", "evaluate.cells=8", "evaluate.data.dataset=digits")
    assert espec.evaluate.epochs == 3 and espec.evaluate.lr == 0.025 and espec.evaluate.cutout is True
    assert espec.network == {"cells": 8, "channels": 36, "auxiliary": True, "stem_multiplier": None}
    assert espec.dataset.name == "digits"
    resolved = espec.resolved()["evaluate"]  # flat, every default filled
    assert (resolved["cells"], resolved["channels"], resolved["epochs"], resolved["weight_decay"]) == (8, 36, 3, 3e-4)
    assert resolved["data"]["dataset"] == "digits"
    # The spec's values win over the space's in a search spec too; its [data] over the space's dataset.
    spec, _ = S.load(SPECS / "quickstart.toml", ["evaluate.weight_decay=0.01"])
    assert spec.evaluate.weight_decay == 0.01 and spec.evaluate.grad_clip == 5.0  # the darts plugin's
    assert spec.eval_dataset.name == "digits"
    # Rebinding for another space resolves the same table again, with that space's keys.
    assert espec.bind("nasnet-cell", load_plugins().registries).network == {"cells": 8, "channels": 36,
                                                                             "auxiliary": True}


def test_a_dataset_comes_from_the_spec_or_the_space():
    with pytest.raises(SpecError) as err:
        bound(None, "evaluate.epochs=1", "evaluate.batch_size=8", "evaluate.lr=0.1", space="nas-layers")
    assert str(err.value) == ("--set: [evaluate.data] dataset: missing required key (a registered dataset name; "
                              "search space 'nas-layers' supplies no default)")
    espec = bound(None, "evaluate.epochs=1", "evaluate.batch_size=8", "evaluate.lr=0.1",
                  "evaluate.data.dataset=digits", space="nas-layers")
    assert espec.dataset.name == "digits" and espec.network == {}


def test_network_keys_are_checked_against_the_space():
    # A search spec: at validation, against its space's keys.
    with pytest.raises(SpecError) as err:
        S.load(SPECS / "quickstart.toml", ["evaluate.cells=0"])
    assert str(err.value).endswith("quickstart.toml: [evaluate] cells: expected an integer >= 1 and <= 100, got 0")
    with pytest.raises(SpecError, match=r"\[evaluate\] auxiliary: expected a boolean \(true or false\), got 'yes'"):
        S.load(SPECS / "quickstart.toml", ["evaluate.auxiliary=yes"])
    with pytest.raises(SpecError) as err:
        S.load(SPECS / "quickstart.toml", ["evaluate.depth=3"])
    message = str(err.value)
    assert "[evaluate] depth: unknown key (known keys: the recipe's " in message and "\n" not in message
    assert "the network's, of search space 'darts-cell': auxiliary, cells, channels, stem_multiplier)" in message
    # A space that declares no network keys refuses them (nas-layers: the genotype fixes every layer).
    with pytest.raises(SpecError) as err:
        S.load(SPECS / "nas-rl.toml", ["evaluate.cells=5"])
    assert "nas-rl.toml: [evaluate] cells: unknown key (search space 'nas-layers' declares no " \
           "evaluation-network keys; the recipe's keys: " in str(err.value)
    # An evaluation spec: a key no space declares at once, a space's key once the genotype is read.
    assert "[evaluate] depth: unknown key" in error_of(SPECS / "eval-darts.toml", "evaluate.depth=3")
    espec, _ = load_eval_spec(SPECS / "eval-darts.toml", ["evaluate.cells=0"])  # no space yet
    assert espec.evaluate is None and not espec.bound
    with pytest.raises(SpecError) as err:
        bound(SPECS / "eval-darts.toml", "evaluate.cells=0")
    assert str(err.value).endswith("eval-darts.toml: [evaluate] cells: expected an integer >= 1 and <= 100, got 0")
    with pytest.raises(SpecError) as err:
        bound(SPECS / "eval-darts.toml", "evaluate.stem_multiplier=2", space="nasnet-cell")
    assert "eval-darts.toml: [evaluate] stem_multiplier: unknown key" in str(err.value)


def test_dgdarts_recipe():
    spec = bound(SPECS / "eval-dgdarts.toml")
    ev = spec.evaluate
    assert (ev.autoaugment, ev.weight_decay, ev.drop_path, ev.auxiliary_weight, ev.cutout_length) == \
        (True, 0.003, 0.3, 0.4, 16)
    assert spec.dataset.params["autoaugment"] is True and spec.dataset.params["augment"] is True
    assert "3e-4" in (SPECS / "eval-dgdarts.toml").read_text()  # the discrepancy is noted


def test_eval_spec_detection():
    assert is_eval_spec({"evaluate": {}})
    assert is_eval_spec({"run": {}, "evaluate": {}})
    assert not is_eval_spec({"evaluate": {}, "search_space": {}})
    assert not is_eval_spec({"evaluate": {}, "data": {}})
    assert is_eval_spec({"evaluate": {}, "search": {}})  # then: unknown table [search]
    assert not is_eval_spec(S.read_toml(SPECS / "quickstart.toml"))


def error_of(path, *overrides) -> str:
    with pytest.raises(SpecError) as err:
        load_eval_spec(path, overrides)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_evaluate_key_errors():
    assert "[evaluate] epoch: unknown key; did you mean 'epochs'" in error_of(None, "evaluate.epoch=3")
    assert "[evaluate] lr_min: expected a number <= lr" in error_of(None, "evaluate.lr=0.05", "evaluate.lr_min=0.1")
    with pytest.raises(SpecError, match=r"\[evaluate\] lr_min: expected a number <= lr \(0.025\)"):
        bound(None, "evaluate.lr_min=0.1")  # the space's lr
    assert "[evaluate] drop_path: expected a number >= 0 and < 1" in error_of(None, "evaluate.drop_path=1")
    assert "[evaluate.data] dataset: unknown dataset 'cifar'; did you mean 'cifar10'" in error_of(None, "evaluate.data.dataset=cifar")
    line = error_of(None, "evaluate.data.dataset=digits", "evaluate.autoaugment=true")
    assert "[evaluate] autoaugment: dataset 'digits' has no 'autoaugment' key" in line
    assert "[evaluate.data] sizes: unknown key; did you mean 'size'" in error_of(
        None, "evaluate.data.dataset=digits", "evaluate.data.sizes=16")
    assert "unknown table [search] in an evaluation spec" in error_of(SPECS / "eval-darts.toml", "search.epochs=1")


def test_search_spec_evaluate_defaults_to_the_search_dataset(tmp_path):
    spec, plugins = S.load(SPECS / "quickstart.toml")
    assert spec.evaluate is not None and spec.eval_dataset.name == "digits"
    written = tomllib.loads((SPECS / "quickstart.toml").read_text())["evaluate"]
    assert spec.eval_network["cells"] == written["cells"] and spec.evaluate.cutout is False
    resolved = spec.resolved()
    assert resolved["evaluate"]["data"]["dataset"] == "digits"
    # The resolved spec (as written into the run directory) is a valid spec again.
    path = nasreg.RunDir(tmp_path).write_toml("spec.toml", resolved)
    again, _ = S.load(path)
    assert again.resolved() == {**resolved, "run": {**resolved["run"], "name": resolved["run"]["name"]}}
    # Another dataset for the evaluation than for the search.
    other, _ = S.load(SPECS / "quickstart.toml", ["evaluate.data.dataset=cifar10"])
    assert other.eval_dataset.name == "cifar10" and other.dataset.name == "digits"
    # A search spec without [evaluate] has none.
    plain, _ = S.load(SPECS / "darts.toml")
    assert plain.evaluate is None and "evaluate" not in plain.resolved()


def test_a_search_spec_serves_nasreg_train():
    espec, _ = load_eval_spec(SPECS / "quickstart.toml")
    written = tomllib.loads((SPECS / "quickstart.toml").read_text())["evaluate"]
    assert espec.dataset.name == "digits" and espec.network["cells"] == written["cells"] != 20  # the spec's value, not the default
    assert espec.search_space is not None and espec.search_space.name == "darts-cell"
    espec, _ = load_eval_spec(SPECS / "darts.toml")  # no [evaluate]: the defaults, on its data
    assert espec.dataset.name == "cifar10" and espec.evaluate.epochs == 600


# --- pieces of the loop -------------------------------------------------------------------------


def test_cutout_zeroes_one_clipped_square_per_image():
    torch.manual_seed(0)
    x = torch.ones(500, 3, 32, 32)
    y = cutout(x, 16)
    holes = (y[:, 0] == 0)
    assert torch.equal(holes.unsqueeze(1).expand_as(y), y == 0)  # same hole in every channel
    sizes = holes.sum((1, 2))
    assert sizes.max().item() == 256 and sizes.min().item() >= 64  # 16x16, or clipped at a corner
    # Each hole is a rectangle.
    for img in holes[:50]:
        rows, cols = img.any(1).nonzero().flatten(), img.any(0).nonzero().flatten()
        assert img.sum() == len(rows) * len(cols)
    assert len({tuple(h.nonzero()[0].tolist()) for h in holes}) > 50  # random positions
    assert torch.equal(x, torch.ones_like(x))  # not in place


@pytest.mark.parametrize("epoch,expected", [(0, 0.0), (300, 0.1), (599, 0.2 * 599 / 600)])
def test_drop_path_schedule_is_linear(epoch, expected):
    assert drop_path_schedule(0.2, epoch, 600) == pytest.approx(expected)


def test_count_flops_and_parameters():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(32, 5))
    assert count_flops(model, (1, 4, 4)) == 2 * (2 * 9 * 16 + 32 * 5)
    model.auxiliary_head = nn.Linear(3, 3)
    assert count_parameters(model) == (18 + 32 * 5 + 5, 18 + 32 * 5 + 5 + 12)
    assert model.training  # restored


def test_dataset_shapes_come_from_registry_metadata():
    regs = load_plugins().registries
    from nasreg._core import params as P

    def comp(name, **keys):
        return P.component("datasets", {"name": name, **keys}, "x", regs)

    assert dataset_shape(comp("cifar10")) == ((3, 32, 32), 10)
    assert dataset_shape(comp("cifar100")) == ((3, 32, 32), 100)
    assert dataset_shape(comp("mnist")) == ((1, 28, 28), 10)
    assert dataset_shape(comp("digits", size=16)) == ((1, 16, 16), 10)
    bundle = comp("digits", size=16).build()
    assert tuple(bundle.train[0][0].shape) == (1, 16, 16) and bundle.num_classes == 10
    assert dataset_shape(comp("image_folder", root="nowhere")) is None


def test_dry_run_needs_no_data_files(tmp_path):
    espec, plugins = load_eval_spec(None, [f"evaluate.data.root={tmp_path / 'no-cifar-here'}"])
    genotype = Genotype.load(DARTS_V2, plugins.registries)
    info = describe_network(espec, plugins, genotype, str(DARTS_V2))
    assert info["params"] == 3_349_342 and info["input_shape"] == [3, 32, 32]
    assert info["params_with_auxiliary"] > info["params"] and info["flops"] == 2 * info["macs"] > 0


def test_space_for_a_genotype_of_an_unknown_space():
    plugins = load_plugins()
    data = Genotype.load(DARTS_V2).to_dict()
    data["space"] = "nas-bench-201"
    with pytest.raises(GenotypeError, match="g.json: space: unknown search space 'nas-bench-201'"):
        space_for(Genotype.from_dict(data), plugins.registries, source="g.json")


def test_plot_failure_is_a_warning(tmp_path):
    messages = []
    history = [{"epoch": 0, "train_acc": 0.5, "test_acc": 0.4, "train_loss": 1.0, "test_loss": 1.2}]
    assert plot_curves(history, tmp_path / "curves.png", warn=messages.append)
    assert (tmp_path / "curves.png").stat().st_size > 0 and not messages
    assert not plot_curves(history, tmp_path / "missing" / "curves.png", warn=messages.append)
    assert len(messages) == 1 and messages[0].startswith("warning: could not write curves.png")


def test_training_loop_on_tiny_digits(tmp_path):
    espec, plugins = load_eval_spec(None, [
        "evaluate.data.dataset=digits", "evaluate.epochs=2", "evaluate.cells=2", "evaluate.channels=4",
        "evaluate.cutout=true", "evaluate.cutout_length=4", "evaluate.limit=96", "evaluate.batch_size=32",
        "evaluate.label_smoothing=0.1", "run.device=cpu", "run.threads=1"])
    genotype = Genotype.load(DARTS_V2, plugins.registries)
    space = space_for(genotype, plugins.registries)
    prepared = prepare_evaluation(espec, plugins, space, space_name=genotype.space)
    results = run_evaluation(prepared, genotype, tmp_path / "run", source="darts_v2.json")
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert [m["drop_path_prob"] for m in metrics] == [0.0, 0.1]
    assert metrics[0]["lr"] == 0.025 and metrics[1]["lr"] == pytest.approx(0.0125)
    assert results["test_acc"] == metrics[-1]["test_acc"] and results["test_error"] == pytest.approx(1 - results["test_acc"])
    assert results["params_with_auxiliary"] > results["params"] > 0
    assert "search_cost" not in results
    for name in ("spec.toml", "genotype.json", "checkpoint.pt", "results.json", "curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1 and "model" in state and "optimizer" in state
    resolved = S.read_toml(tmp_path / "run" / "spec.toml")
    assert resolved["evaluate"]["data"]["dataset"] == "digits" and "search_space" not in resolved


def test_a_dataset_without_test_split_is_refused():
    espec, plugins = load_eval_spec(None, ["evaluate.data.dataset=digits", "evaluate.data.test_fraction=0"])
    genotype = Genotype.load(DARTS_V2, plugins.registries)
    with pytest.raises(Exception, match="has no test split"):
        prepare_evaluation(espec, plugins, space_for(genotype, plugins.registries), space_name=genotype.space)


def test_eval_spec_type():
    espec, _ = load_eval_spec(None)
    assert isinstance(espec, EvalSpec) and espec.path is None
    assert set(espec.resolved()) == {"run", "evaluate"}
    assert len(espec.digest()) == 16


def test_same_seed_same_training_metrics(tmp_path):
    sets = ["evaluate.data.dataset=digits", "evaluate.epochs=2", "evaluate.cells=2", "evaluate.channels=4",
            "evaluate.limit=64", "evaluate.batch_size=32", "evaluate.cutout_length=4", "evaluate.drop_path=0.3",
            "run.device=cpu", "run.threads=1"]
    runs = []
    for name in ("a", "b"):
        espec, plugins = load_eval_spec(None, sets)
        genotype = Genotype.load(DARTS_V2, plugins.registries)
        prepared = prepare_evaluation(espec, plugins, space_for(genotype, plugins.registries), space_name=genotype.space)
        run_evaluation(prepared, genotype, tmp_path / name)
        runs.append([{k: v for k, v in json.loads(line).items() if "seconds" not in k and "memory" not in k}
                     for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()])
    assert runs[0] == runs[1] and len(runs[0]) == 2


def test_the_search_hash_ignores_evaluate():
    a, _ = S.load(SPECS / "quickstart.toml")
    b, _ = S.load(SPECS / "quickstart.toml", ["evaluate.epochs=3"])
    assert a.digest() == b.digest()
    assert from_search_spec_digest(a) != from_search_spec_digest(b)


def from_search_spec_digest(spec) -> str:
    from nasreg._core.evaluate import from_search_spec

    return from_search_spec(spec, load_plugins().registries).digest()


def test_the_api_takes_network_keys_on_top_of_the_spec():
    import nasreg

    net = nasreg.build_network(DARTS_V2, cells=2, channels=4, auxiliary=False, input_shape=(1, 8, 8), num_classes=10)
    assert len(net.cells) == 2 and net.auxiliary_head is None
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(SpecError, match=r"\[evaluate\] depth: unknown key \(known keys: "):
        nasreg.build_network(DARTS_V2, depth=3)
    # The dry run counts the auxiliary head only when the network has one.
    espec, plugins = load_eval_spec(None, ["evaluate.cells=2", "evaluate.channels=4", "evaluate.auxiliary=false",
                                           "evaluate.data.dataset=digits"])
    info = describe_network(espec, plugins, Genotype.load(DARTS_V2, plugins.registries), "g.json")
    assert info["params_with_auxiliary"] is None and info["network"] == {"cells": 2, "channels": 4, "auxiliary": False}
