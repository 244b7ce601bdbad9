"""The loggers kind (nasreg/_core/loggers.py) and the built-in nasreg_loggers plugin: a tiny digits
search with [evaluate] and `[run] loggers = ["tensorboard", "mlflow"]`, read back with
TensorBoard's event reader and MLflow's client; a third-party logger registered with
register_loggers on the toy components (every hook, unregistered at the end, close(status) on
success, error and interrupt; a resume that purges the steps trained again); the spec errors."""

from __future__ import annotations

import json
import math
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import nasreg
from nasreg import hookimpl
from nasreg.cli import main

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_module")

SPEC = """
[run]
name = "tiny-log"
device = "cpu"
threads = 1
loggers = ["tensorboard", "mlflow"]

[data]
dataset = "digits"
limit = 64
batch_size = 16

[search_space]
name = "darts-cell"
operations = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]
cells = 3
channels = 4
nodes = 2

[search]
epochs = 2
warmup_epochs = 1

[strategy]
name = "darts"
order = 1

[selector]
name = "dg-darts"
stages = 2
min_ops = 2

[selector.clusterer]
name = "elkan"
n_clusters = 2

[evaluate]
epochs = 2
batch_size = 32
cells = 2
channels = 4
auxiliary = false
cutout = false
limit = 64

[loggers.mlflow]
experiment = "tiny-experiment"
"""

SEARCH_SCALARS = ["train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds", "wall_seconds",
                  "peak_memory_mb"]
TRAIN_SCALARS = ["lr", "drop_path_prob", "train_loss", "train_acc", "test_loss", "test_acc", "test_error",
                 "epoch_seconds", "wall_seconds", "peak_memory_mb"]


def events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def raw_steps(folder: Path, tag: str) -> list[int]:
    """The steps of every event of ``tag`` in the folder's event files, in file order (no purging)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mlflow_client(run_dir: Path):
    from mlflow.tracking import MlflowClient

    record = json.loads((run_dir / "mlflow-run.json").read_text())
    return MlflowClient(tracking_uri=record["tracking_uri"]), record


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One tiny DG-DARTS search (2 stages x 2 epochs) and its 2-epoch evaluation, both loggers on."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    folder = tmp_path_factory.mktemp("loggers")
    (folder / "spec.toml").write_text(SPEC)
    result = nasreg.search(folder / "spec.toml", out=folder / "run", preflight=False)
    yield Path(result.run_dir), result
    mp.undo()


# --- tensorboard ----------------------------------------------------------------------------------

def test_tensorboard_has_every_search_epoch_at_its_global_step_with_the_journals_values(searched):
    run_dir, _ = searched
    lines = jsonl(run_dir / "metrics.jsonl")
    assert len(lines) == 4  # 2 stages x 2 epochs
    acc = events(run_dir / "tensorboard")
    for key in SEARCH_SCALARS:
        points = acc.Scalars(f"search/{key}")
        assert [p.step for p in points] == [0, 1, 2, 3], key
        assert [p.value for p in points] == pytest.approx([line[key] for line in lines], rel=1e-6), key
    assert not any(tag.startswith("search/") and tag[7:] in ("stage", "epoch", "joint", "alphas")
                   for tag in acc.Tags()["scalars"])


def test_tensorboard_has_every_edges_alpha_softmax_and_gradient_trajectory(searched):
    run_dir, _ = searched
    lines = jsonl(run_dir / "metrics.jsonl")
    stages = json.loads((run_dir / "stages.json").read_text())
    gradients = json.loads((run_dir / "gradients.json").read_text())["stages"]
    acc = events(run_dir / "tensorboard")
    tags = set(acc.Tags()["scalars"])
    checked = 0
    for info, grads in zip(stages, gradients):
        steps = [i for i, line in enumerate(lines) if line["stage"] == info["stage"]]
        joint = [i for i in steps if lines[i]["joint"]]
        for cell_type, edges in info["candidates"].items():
            for e, ops in enumerate(edges):
                for o, op in enumerate(ops):
                    points = [p for p in acc.Scalars(f"alphas/{cell_type}/edge{e}/{op}") if p.step in steps]
                    assert [p.step for p in points] == steps
                    assert [p.value for p in points] == pytest.approx(
                        [lines[i]["alphas"][cell_type][e][o] for i in steps], rel=1e-6)
                    trajectory = grads["grad_history"][cell_type][e][o]
                    points = [p for p in acc.Scalars(f"gradients/{cell_type}/edge{e}/{op}") if p.step in steps]
                    assert [p.step for p in points] == joint
                    assert [p.value for p in points] == pytest.approx(trajectory, rel=1e-5, abs=1e-12)
                    checked += 1
    assert checked == sum(len(ops) for info in stages for edges in info["candidates"].values() for ops in edges)
    assert len([t for t in tags if t.startswith("alphas/")]) == len(
        {(ct, e, op) for info in stages for ct, edges in info["candidates"].items()
         for e, ops in enumerate(edges) for op in ops})


def test_tensorboard_has_the_genotype_as_text_and_the_figures_as_images(searched):
    run_dir, result = searched
    acc = events(run_dir / "tensorboard")
    text = acc.Tensors("genotype/text_summary")
    assert len(text) == 1 and text[0].step == 3
    assert text[0].tensor_proto.string_val[0].decode() == result.genotype.describe()
    pngs = sorted(p.stem for p in run_dir.glob("*.png"))
    assert {"alphas", "cell_normal", "cell_reduce", "gradients_stage0"} <= set(pngs)
    assert sorted(acc.Tags()["images"]) == [f"plots/{stem}" for stem in pngs]
    image = acc.Images("plots/cell_normal")[0]
    assert image.width > 100 and image.height > 100 and image.encoded_image_string.startswith(b"\x89PNG")


def test_tensorboard_has_the_evaluations_epochs_in_its_own_folder(searched):
    run_dir, result = searched
    lines = jsonl(run_dir / "eval" / "metrics.jsonl")
    assert len(lines) == 2
    acc = events(run_dir / "eval" / "tensorboard")
    for key in TRAIN_SCALARS:
        points = acc.Scalars(f"evaluate/{key}")
        assert [p.step for p in points] == [0, 1], key
        assert [p.value for p in points] == pytest.approx([line[key] for line in lines], rel=1e-6), key
    assert acc.Scalars("evaluate/final_test_acc")[0].value == pytest.approx(result.evaluation.test_acc)
    assert acc.Tags()["images"] == ["plots/curves"]
    assert not any(t.startswith("search/") for t in acc.Tags()["scalars"])


# --- mlflow ---------------------------------------------------------------------------------------

def test_mlflow_params_are_the_resolved_spec_flattened(searched):
    run_dir, _ = searched
    client, record = mlflow_client(run_dir)
    assert record["tracking_uri"] == (run_dir.resolve() / "mlruns").as_uri()
    run = client.get_run(record["run_id"])
    assert client.get_experiment(record["experiment_id"]).name == "tiny-experiment"
    assert run.info.run_name == "tiny-log" and run.info.status == "FINISHED"
    params = run.data.params
    spec = tomllib.loads((run_dir / "spec.toml").read_text())
    assert params["search.epochs"] == "2" and params["search.warmup_epochs"] == "1"
    assert params["selector.clusterer.n_clusters"] == str(spec["selector"]["clusterer"]["n_clusters"]) == "2"
    assert json.loads(params["search_space.operations"]) == spec["search_space"]["operations"]
    assert params["evaluate.epochs"] == "2" and params["data.dataset"] == "digits"
    assert json.loads(params["run.loggers"]) == ["tensorboard", "mlflow"]
    assert params["loggers.mlflow.experiment"] == "tiny-experiment"
    leaves = sum(1 for table in spec.values() for _ in _leaves(table))
    assert len(params) == leaves


def _leaves(table):
    for value in table.values():
        if isinstance(value, dict):
            yield from _leaves(value)
        else:
            yield value


def test_mlflow_metrics_are_the_journals_with_their_steps(searched):
    run_dir, _ = searched
    client, record = mlflow_client(run_dir)
    lines = jsonl(run_dir / "metrics.jsonl")
    eval_lines = jsonl(run_dir / "eval" / "metrics.jsonl")
    for key in SEARCH_SCALARS:
        history = sorted(client.get_metric_history(record["run_id"], f"search/{key}"), key=lambda m: m.step)
        assert [m.step for m in history] == [0, 1, 2, 3], key
        assert [m.value for m in history] == pytest.approx([line[key] for line in lines]), key
    for key in TRAIN_SCALARS:
        history = sorted(client.get_metric_history(record["run_id"], f"evaluate/{key}"), key=lambda m: m.step)
        assert [m.step for m in history] == [0, 1], key
        assert [m.value for m in history] == pytest.approx([line[key] for line in eval_lines]), key
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert client.get_metric_history(record["run_id"], "evaluate/params")[0].value == results["params"]


def test_mlflow_artifacts_are_the_run_directorys_files_without_checkpoints(searched):
    run_dir, _ = searched
    client, record = mlflow_client(run_dir)
    top = {a.path for a in client.list_artifacts(record["run_id"]) if not a.is_dir}
    expected = {p.name for p in run_dir.iterdir() if p.is_file() and p.suffix != ".pt" and not p.name.startswith(".")}
    assert {"genotype.json", "spec.toml", "summary.json", "metrics.jsonl", "cell_normal.png"} <= top
    assert top == expected and "checkpoint.pt" not in top
    evaluated = {a.path for a in client.list_artifacts(record["run_id"], "eval")}
    assert {"eval/results.json", "eval/metrics.jsonl", "eval/curves.png", "eval/spec.toml"} <= evaluated
    assert not any(path.endswith(".pt") for path in evaluated)
    local = Path(client.download_artifacts(record["run_id"], "genotype.json", str(run_dir.parent / "dl")))
    assert local.read_text() == (run_dir / "genotype.json").read_text()


# --- the spec ---------------------------------------------------------------------------------------

def test_loggers_are_resolved_but_not_part_of_the_digest(searched, tmp_path):
    run_dir, _ = searched
    with_loggers = nasreg.load_spec(run_dir / "spec.toml")
    path = tmp_path / "plain.toml"
    path.write_text(SPEC.replace('loggers = ["tensorboard", "mlflow"]', "").split("[loggers.mlflow]")[0])
    plain = nasreg.load_spec(path, overrides=["run.name=tiny-log"])
    assert with_loggers.digest() == plain.digest()
    assert with_loggers.resolved()["loggers"] == {
        "tensorboard": {"log_dir": "tensorboard", "flush_secs": 30},
        "mlflow": {"tracking_uri": "", "experiment": "tiny-experiment", "run_name": "", "log_checkpoints": False}}
    assert "loggers" not in plain.resolved() and plain.resolved()["run"]["loggers"] == []


@pytest.mark.parametrize("overrides, expected", [
    (['run.loggers=["tensorboard", "tensorbord"]'],
     "SPEC: [run] loggers[1]: unknown logger 'tensorbord'; did you mean 'tensorboard'?"),
    (['run.loggers=["mlflow", "mlflow"]'], "SPEC: [run] loggers[1]: logger 'mlflow' is listed twice"),
    (["run.loggers=[3]"], "SPEC: [run] loggers[0]: expected a string, got 3"),
    (['run.loggers=["tensorboard"]', "loggers.mlflow.experiment=x"],
     "SPEC: [loggers.mlflow]: logger 'mlflow' is not listed in [run] loggers (listed: 'tensorboard'); "
     "add it there or remove the table"),
    (['run.loggers=["mlflow"]', "loggers.mlflow.tracking_uri=3"],
     "SPEC: [loggers.mlflow] tracking_uri: expected a string, got 3"),
    (['run.loggers=["mlflow"]', "loggers.mlflow.tracking_url=x"],
     "SPEC: [loggers.mlflow] tracking_url: unknown key; did you mean 'tracking_uri'?"),
    (['run.loggers=["tensorboard"]', "loggers.tensorboard.flush_secs=0"],
     "SPEC: [loggers.tensorboard] flush_secs: expected an integer >= 1 and <= 86400, got 0"),
    (["loggers=3"], "SPEC: [loggers]: expected a table of logger tables ([loggers.<name>]), got 3"),
])
def test_logger_spec_errors_are_one_line_naming_the_key(tmp_path, overrides, expected):
    path = tmp_path / "SPEC"
    path.write_text(SPEC.replace('loggers = ["tensorboard", "mlflow"]', "").split("[loggers.mlflow]")[0])
    with pytest.raises(nasreg.SpecError) as info:
        nasreg.validate(path, overrides=overrides)
    message = str(info.value).replace(str(path), "SPEC")
    assert message.startswith(expected) and "\n" not in message


@pytest.mark.parametrize("module, line", [
    ("mlflow", "logger 'mlflow' needs MLflow: pip install 'nasreg[mlflow]'"),
    ("tensorboard", "logger 'tensorboard' needs TensorBoard: pip install 'nasreg[tensorboard]'"),
])
def test_validate_says_which_extra_a_logger_needs(tmp_path, monkeypatch, module, line):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.split("[loggers.mlflow]")[0])
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails, as when not installed
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.strip().endswith(line)
    assert "Traceback" not in result.output


# --- the mechanism, on the toy components -------------------------------------------------------------

class Recorder:
    """A third-party logger: records its hooks and how it was closed; can interrupt a run."""

    instances: list["Recorder"] = []

    def __init__(self, tag: str = "", interrupt_at: int = -1):
        self.tag, self.interrupt_at = tag, interrupt_at
        self.calls: list[str] = []
        self.closed: list[str] = []
        Recorder.instances.append(self)

    @hookimpl
    def on_run_start(self, run):
        self.calls.append("on_run_start")

    @hookimpl
    def on_epoch_end(self, run, stage, epoch, metrics):
        self.calls.append(f"on_epoch_end {stage}.{epoch}")
        if len([c for c in self.calls if c.startswith("on_epoch_end")]) - 1 == self.interrupt_at:
            raise KeyboardInterrupt  # the user's Ctrl-C at this moment

    @hookimpl
    def on_stage_end(self, run, stage, result):
        self.calls.append(f"on_stage_end {stage}")

    @hookimpl
    def on_run_end(self, run, genotype, summary):
        self.calls.append("on_run_end")

    def close(self, status):
        self.closed.append(status)


def recorder(tag: str = "", interrupt_at: int = -1):
    """A recording logger: ``[loggers.recorder]`` keys ``tag`` and ``interrupt_at``."""
    return Recorder(tag, interrupt_at)


class RecorderPlugin:
    @hookimpl
    def register_loggers(self, register):
        register("recorder", recorder)


TOY = """
[run]
name = "toy"
seed = 1
device = "cpu"
threads = 1
loggers = {loggers}

[data]
dataset = "toy-data"
batch_size = 8
size = 32

[search_space]
name = "toy-space"
operations = ["toy_zero", "toy_skip", "toy_conv"]
nodes = 2

[search]
epochs = 3
warmup_epochs = 1

[strategy]
name = "toy-sgd"

[selector]
name = "toy-select"
"""


@pytest.fixture
def toy_spec(tmp_path, toycore):
    Recorder.instances.clear()

    def write(loggers: str, tables: str = "") -> Path:
        path = tmp_path / "toy.toml"
        path.write_text(TOY.format(loggers=loggers) + tables)
        return path

    return write


def test_a_registered_logger_gets_every_hook_then_is_unregistered_and_closed(toy_spec, toycore, tmp_path):
    path = toy_spec('["recorder"]', '[loggers.recorder]\ntag = "mine"\n')
    plugins = [toycore, RecorderPlugin()]
    spec = nasreg.load_spec(path, plugins=plugins)
    assert [type(c.entry.factory(**c.params)) for c in spec.loggers] == [Recorder]  # (validate built one too)
    Recorder.instances.clear()
    nasreg.search(spec, out=tmp_path / "run", preflight=False)
    (logger,) = Recorder.instances
    assert logger.tag == "mine"
    assert logger.calls == ["on_run_start", "on_epoch_end 0.0", "on_epoch_end 0.1", "on_epoch_end 0.2",
                            "on_stage_end 0", "on_run_end"]
    assert logger.closed == ["finished"]
    assert all(not name.startswith("logger:") for name, _ in spec.plugins.pm.list_name_plugin())


def test_an_interrupted_run_closes_its_loggers_as_interrupted_and_mlflow_as_killed(toy_spec, toycore, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    path = toy_spec('["recorder", "mlflow"]', "[loggers.recorder]\ninterrupt_at = 1\n")
    spec = nasreg.load_spec(path, plugins=[toycore, RecorderPlugin()])
    Recorder.instances.clear()
    with pytest.raises(KeyboardInterrupt):
        nasreg.search(spec, out=tmp_path / "run", preflight=False)
    (logger,) = Recorder.instances
    assert logger.closed == ["interrupted"]
    client, record = mlflow_client(tmp_path / "run")
    assert client.get_run(record["run_id"]).info.status == "KILLED"
    assert all(not name.startswith("logger:") for name, _ in spec.plugins.pm.list_name_plugin())


def test_a_failed_run_closes_mlflow_as_failed(toy_spec, toycore, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    class Broken(toycore.ToyStrategy):
        def step(self, train_batch, val_batch, *, update_alpha):
            raise RuntimeError("the strategy broke")

    class BrokenPlugin:
        @hookimpl
        def register_strategies(self, register):
            register("toy-broken", Broken)

    path = toy_spec('["mlflow"]')
    spec = nasreg.load_spec(path, overrides=["strategy.name=toy-broken"], plugins=[toycore, BrokenPlugin()])
    with pytest.raises(RuntimeError, match="the strategy broke"):
        nasreg.search(spec, out=tmp_path / "run", preflight=False)
    client, record = mlflow_client(tmp_path / "run")
    assert client.get_run(record["run_id"]).info.status == "FAILED"


def test_a_resumed_run_logs_each_step_once_and_continues_the_mlflow_run(toy_spec, toycore, tmp_path, monkeypatch):
    """Interrupted in the hook of epoch 1 (its checkpoint not yet written), resumed from epoch 0's:
    epoch 1 is trained and logged again; TensorBoard keeps one value per step (purge_step)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    path = toy_spec('["tensorboard", "mlflow", "recorder"]', "[loggers.recorder]\ninterrupt_at = 1\n")
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        nasreg.search(path, out=run_dir, plugins=[toycore, RecorderPlugin()], preflight=False)
    _, first = mlflow_client(run_dir)
    spec_toml = (run_dir / "spec.toml").read_text()
    (run_dir / "spec.toml").write_text(spec_toml.replace("interrupt_at = 1", "interrupt_at = -1"))
    nasreg.resume(run_dir, plugins=[toycore, RecorderPlugin()], preflight=False)
    lines = jsonl(run_dir / "metrics.jsonl")
    assert len(lines) == 3
    acc = events(run_dir / "tensorboard")
    points = acc.Scalars("search/val_loss")
    assert [p.step for p in points] == [0, 1, 2]
    assert [p.value for p in points] == pytest.approx([line["val_loss"] for line in lines], rel=1e-6)
    assert raw_steps(run_dir / "tensorboard", "search/val_loss") == [0, 1, 1, 2]  # written twice, read once
    client, record = mlflow_client(run_dir)
    assert record == first  # the same MLflow run, continued
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(record["run_id"], "search/val_loss"))
    assert sorted(set(steps)) == [0, 1, 2] and math.isclose(
        run.data.metrics["search/val_loss"], lines[-1]["val_loss"], rel_tol=1e-6)


def test_nasreg_train_with_an_evaluation_spec_listing_a_logger(searched, tmp_path):
    run_dir, _ = searched
    spec = tmp_path / "eval.toml"
    spec.write_text('[run]\nthreads = 1\ndevice = "cpu"\nloggers = ["tensorboard"]\n\n'
                    "[evaluate]\nepochs = 1\nbatch_size = 32\nlr = 0.05\ncells = 2\nchannels = 4\n"
                    "auxiliary = false\ncutout = false\nlimit = 64\n\n[evaluate.data]\ndataset = \"digits\"\n\n"
                    "[loggers.tensorboard]\nlog_dir = \"tb\"\n")
    result = nasreg.train(run_dir / "genotype.json", spec=spec, out=tmp_path / "train")
    acc = events(tmp_path / "train" / "tb")
    points = acc.Scalars("train/test_acc")
    assert [p.step for p in points] == [0] and points[0].value == pytest.approx(result.test_acc)
    assert "[loggers.tensorboard]" in (tmp_path / "train" / "spec.toml").read_text()
