"""The training engine (nasreg.Trainer) and the hooks a training from scratch fires:
on_train_start, on_train_epoch_end and on_train_end, for ``nasreg train`` and ``[evaluate]``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import nasreg
from nasreg._core.evaluate import load_eval_spec, prepare_evaluation, run_evaluation, space_for

ROOT = Path(__file__).resolve().parent.parent
DARTS_V2 = ROOT / "genotypes" / "darts_v2.json"

OBSERVER = '''
from nasreg import hookimpl

CALLS = []


@hookimpl
def on_train_start(run, kind, epochs, steps, params):
    CALLS.append(("start", kind, epochs, steps, params, str(run.run_dir), run.genotype.space))


@hookimpl
def on_train_epoch_end(run, kind, epoch, metrics):
    CALLS.append(("epoch", kind, epoch, dict(metrics), run.files.checkpoint.is_file()))


@hookimpl
def on_train_end(run, kind, results):
    CALLS.append(("end", kind, results["test_acc"], run.seed))


@hookimpl
def on_epoch_end(run, stage, epoch, metrics):
    CALLS.append(("search epoch",))
'''

TINY = ["evaluate.data.dataset=digits", "evaluate.epochs=2", "evaluate.cells=2", "evaluate.channels=4",
        "evaluate.limit=64", "evaluate.batch_size=32", "run.device=cpu", "run.threads=1"]


def _train(tmp_path, name, **kwargs):
    plugin = tmp_path / f"observer_{name}.py"
    plugin.write_text(OBSERVER)
    espec, plugins = load_eval_spec(None, TINY, [str(plugin)])
    genotype = nasreg.Genotype.load(DARTS_V2, plugins.registries)
    prepared = prepare_evaluation(espec, plugins, space_for(genotype, plugins.registries), space_name=genotype.space)
    results = run_evaluation(prepared, genotype, tmp_path / name, **kwargs)
    module = next(p for p in plugins.pm.get_plugins() if getattr(p, "CALLS", None) is not None)
    return results, module.CALLS


def test_a_training_fires_the_train_hooks_with_what_it_writes(tmp_path):
    results, calls = _train(tmp_path, "train")
    assert [c[0] for c in calls] == ["start", "epoch", "epoch", "end"]  # never the search's on_epoch_end
    start = calls[0]
    assert start[1:5] == ("train", 2, 2, results["params"]) and start[5] == str(tmp_path / "train")
    lines = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [c[3] for c in calls[1:3]] == lines and [c[2] for c in calls[1:3]] == [0, 1]
    assert all(c[1] == "train" and c[4] for c in calls[1:3])  # the checkpoint is written first
    assert calls[3] == ("end", "train", results["test_acc"], 0)


def test_an_evaluation_after_a_search_is_kind_evaluate(tmp_path):
    cost = {"run_dir": "x", "wall_seconds": 1.0, "device": "cpu", "gpu_days": None}
    results, calls = _train(tmp_path, "eval", search_cost=cost)
    assert {c[1] for c in calls} == {"evaluate"} and results["search_cost"] == cost
    assert results["kind"] == "evaluate"  # results.json says which kind of training it records


# -- the engine on its own -------------------------------------------------------------------------

def _data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


class _Net(nn.Module):
    def __init__(self, poison: bool = False):
        super().__init__()
        self.fc, self.poison, self.drop_path_prob = nn.Linear(3, 2), poison, None

    def forward(self, x):
        out = self.fc(x)
        return out * float("nan") if self.poison else out


def test_the_engine_steps_the_schedule_and_calls_back():
    seen = []

    class Callback:
        def on_train_start(self, trainer, steps):
            seen.append(("start", steps))

        def on_epoch_end(self, trainer, stats):
            seen.append(("epoch", stats.epoch, stats.lr, stats.test_acc is not None))

    recipe = nasreg.TrainRecipe(epochs=2, lr=0.1, schedule="epoch", drop_path=0.2)
    model = _Net()
    trainer = nasreg.Trainer(model, recipe, callbacks=[Callback()])
    fit = trainer.fit(_data(), _data(seed=1))
    assert seen == [("start", 3), ("epoch", 0, 0.1, True), ("epoch", 1, pytest.approx(0.05), True)]
    assert model.drop_path_prob == pytest.approx(0.1) and not fit.diverged
    assert fit.test_acc == fit.epochs[-1].test_acc and fit.train_loss is not None

    per_step = nasreg.Trainer(_Net(), nasreg.TrainRecipe(epochs=2, lr=0.1, schedule="step", test="end"))
    fit = per_step.fit(_data(), _data(seed=1))
    assert per_step.scheduler.last_epoch == 6 and fit.epochs[0].test_acc is None and fit.test_acc is not None


def test_a_diverging_loss_stops_or_raises_as_the_recipe_says():
    stop = nasreg.TrainRecipe(epochs=2, lr=0.1, on_divergence="stop", test="end")
    fit = nasreg.Trainer(_Net(poison=True), stop).fit(_data(), _data())
    assert fit.diverged and fit.epochs == [] and fit.train_loss is None and fit.test_acc is None
    raise_ = nasreg.TrainRecipe(epochs=1, lr=0.1, divergence_hint="; try a lower lr")
    with pytest.raises(nasreg.DivergenceError, match=r"^training diverged: loss is nan at epoch 0, step 0; try a lower lr$"):
        nasreg.Trainer(_Net(poison=True), raise_).fit(_data(), _data())
