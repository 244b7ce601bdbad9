"""`nasreg export` and `nasreg.export_network`: the evaluation network with its trained weights to
ONNX and TorchScript, each file loaded back here and run beside the PyTorch network.

One tiny quickstart search (with its [evaluate]) is the acceptance test; one tiny `nasreg train`
serves the API and error tests (TorchScript where the format does not matter: it is fast).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import nasreg
from nasreg._core import export as export_mod
from nasreg.cli import main

ROOT = Path(__file__).resolve().parents[1]
DARTS_V1 = ROOT / "genotypes" / "darts_v1.json"
DARTS_V2 = ROOT / "genotypes" / "darts_v2.json"
TINY_TRAIN = ["evaluate.data.dataset=digits", "evaluate.epochs=1", "evaluate.cells=2", "evaluate.channels=4",
              "evaluate.cutout=false", "evaluate.limit=64", "evaluate.batch_size=32", "run.device=cpu",
              "run.threads=1"]
TINY_SEARCH = ["data.limit=64", "data.batch_size=32", "search_space.cells=3", "search_space.channels=4",
               "search.epochs=1", "search.warmup_epochs=0", "run.threads=1", "run.device=cpu",
               "evaluate.epochs=1", "evaluate.cells=2", "evaluate.channels=4", "evaluate.limit=64",
               "evaluate.batch_size=32"]
LINE = re.compile(r"exported (\S+) \((onnx|torchscript), ([\d,]+) params\): max \|diff\| vs PyTorch (\S+) "
                  r"on a batch of 8: ok")


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def invoke(*args: str | Path, sets: list[str] = ()):
    argv = [str(a) for a in args]
    for s in sets:
        argv += ["--set", s]
    return CliRunner().invoke(main, argv, env={"COLUMNS": "200"})


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def trained_network(run_dir: Path, genotype: Path) -> torch.nn.Module:
    """The PyTorch network as the training left it: its spec, its weights.pt, eval mode."""
    net = nasreg.build_network(genotype, spec=run_dir / "spec.toml")
    net.load_state_dict(torch.load(run_dir / "weights.pt", weights_only=True))
    return net.eval()


def run_onnx(path: Path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    return torch.from_numpy(out)


def images(n: int, seed: int = 123) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))  # digits: 1 x 8 x 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished `nasreg train` run directory of DARTS_V2 (2 cells, 4 channels, digits, 1 epoch)."""
    run = tmp_path_factory.mktemp("export") / "train"
    nasreg.train(DARTS_V2, overrides=TINY_TRAIN, out=run)
    return run


# --- the acceptance test: the quickstart's genotype and weights -----------------------------------


@pytest.mark.slow
def test_quickstart_genotype_and_weights_export_to_onnx_and_torchscript(tmp_path):
    run = tmp_path / "quickstart"
    nasreg.search(ROOT / "specs" / "quickstart.toml", overrides=TINY_SEARCH, out=run, preflight=False)
    weights = run / "eval" / "weights.pt"
    # [evaluate] left its final weights: the state dict of its last checkpoint's network.
    state = torch.load(weights, weights_only=True)
    final = torch.load(run / "eval" / "checkpoint.pt", weights_only=True)["model"]
    assert state.keys() == final.keys() and all(torch.equal(state[k], final[k]) for k in state)
    params = nasreg.RunDir(run / "eval").read_json("results.json")["params"]
    reference = trained_network(run / "eval", run / "genotype.json")
    batch = images(5)  # not the export's batch sizes (2 traced, 8 checked): the batch axis is dynamic
    with torch.no_grad():
        expected = reference(batch)

    result = invoke("export", run / "genotype.json", "--format", "onnx")  # weights found beside it
    assert result.exit_code == 0, result.output
    assert f"weights: {weights} (found beside {run / 'genotype.json'})" in result.stdout
    onnx_file = run / "eval" / "model.onnx"
    match = LINE.search(result.stdout)
    assert match, result.stdout
    assert (match[1], match[2], int(match[3].replace(",", ""))) == (str(onnx_file), "onnx", params)
    assert float(match[4]) <= 1e-4
    assert (run_onnx(onnx_file, batch) - expected).abs().max().item() <= 1e-4

    ts_file = tmp_path / "quickstart.pt"
    result = invoke("export", run / "genotype.json", "--format", "torchscript", "--weights", run, "--out", ts_file)
    assert result.exit_code == 0, result.output
    assert f"weights: {weights}\n" in result.stdout
    match = LINE.search(result.stdout)
    assert match and match[1] == str(ts_file) and float(match[4]) <= 1e-4, result.stdout
    loaded = torch.jit.load(str(ts_file))
    with torch.no_grad():
        assert (loaded(batch) - expected).abs().max().item() <= 1e-4

    # A search's own checkpoint holds the supernet: refused, pointing at the evaluation's weights.
    line = one_line_error(invoke("export", run / "genotype.json", "--format", "torchscript",
                                 "--weights", run / "checkpoint.pt", "--out", tmp_path / "x.pt"))
    assert "supernet" in line and "eval/weights.pt" in line
    assert not (tmp_path / "x.pt").exists()


# --- the API -------------------------------------------------------------------------------------


def test_nasreg_train_writes_its_final_weights(trained):
    state = torch.load(trained / "weights.pt", weights_only=True)
    final = torch.load(trained / "checkpoint.pt", weights_only=True)["model"]
    assert state.keys() == final.keys() and all(torch.equal(state[k], final[k]) for k in state)
    assert all(v.device.type == "cpu" for v in state.values())


def test_api_exports_onnx_from_a_run_directory(trained, tmp_path):
    out = tmp_path / "net.onnx"
    result = nasreg.export_network(DARTS_V2, format="onnx", weights=trained, out=out)
    assert isinstance(result, nasreg.ExportResult)
    assert (result.path, result.format, result.weights, result.batch) == (out, "onnx", trained / "weights.pt", 8)
    assert result.ok and 0 <= result.max_diff <= 1e-4
    assert result.params == nasreg.RunDir(trained).read_json("results.json")["params"]
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]  # no temporary left behind
    batch = images(3)
    with torch.no_grad():
        expected = trained_network(trained, DARTS_V2)(batch)
    assert (run_onnx(out, batch) - expected).abs().max().item() <= 1e-4
    # onnxruntime agrees with the PyTorch network as the export reported
    np.testing.assert_allclose(run_onnx(out, images(8, seed=0)).numpy(),
                               trained_network(trained, DARTS_V2)(images(8, seed=0)).detach().numpy(), atol=1e-4)


def test_api_exports_torchscript_from_a_training_checkpoint(trained, tmp_path):
    out = tmp_path / "net.pt"
    result = nasreg.export_network(DARTS_V2, format="torchscript", weights=trained / "checkpoint.pt", out=out)
    assert result.ok and result.weights == trained / "checkpoint.pt"
    loaded = torch.jit.load(str(out))
    batch = images(4)
    with torch.no_grad():
        diff = (loaded(batch) - trained_network(trained, DARTS_V2)(batch)).abs().max().item()
    assert diff <= 1e-4


def test_untrained_export_needs_the_flag(trained, tmp_path):
    line = one_line_error(invoke("export", DARTS_V2, "--format", "torchscript", "--out", tmp_path / "u.pt"))
    assert str(DARTS_V2) in line and "--weights" in line and "--untrained" in line
    result = invoke("export", DARTS_V2, "--format", "torchscript", "--untrained", "--out", tmp_path / "u.pt",
                    sets=TINY_TRAIN)
    assert result.exit_code == 0, result.output
    assert "untrained network of" in result.stdout and LINE.search(result.stdout)
    loaded = torch.jit.load(str(tmp_path / "u.pt"))
    assert loaded(images(2)).shape == (2, 10)
    line = one_line_error(invoke("export", DARTS_V2, "--format", "torchscript", "--untrained", "--weights", trained))
    assert "--untrained and --weights" in line


# --- errors ----------------------------------------------------------------------------------------


def test_weights_of_another_genotype_are_refused(trained, tmp_path):
    line = one_line_error(invoke("export", DARTS_V1, "--format", "torchscript", "--weights", trained,
                                 "--out", tmp_path / "x.pt"))
    assert f"{trained / 'weights.pt'}: trained for another genotype" in line and str(DARTS_V1) in line
    assert not (tmp_path / "x.pt").exists()


def test_weights_of_another_shape_are_one_line_naming_the_file(trained, tmp_path):
    line = one_line_error(invoke("export", DARTS_V2, "--format", "torchscript", "--weights", trained / "weights.pt",
                                 "--out", tmp_path / "x.pt", sets=["evaluate.channels=8"]))
    assert f"{trained / 'weights.pt'}: does not fit the network of {DARTS_V2}" in line and "size mismatch" in line
    # a bare state dict (no spec beside it) on a network of other keys: the same line
    bare = tmp_path / "bare.pt"
    shutil.copy(trained / "weights.pt", bare)
    line = one_line_error(invoke("export", DARTS_V2, "--format", "torchscript", "--weights", bare,
                                 "--out", tmp_path / "y.pt", sets=TINY_TRAIN + ["evaluate.cells=3"]))
    assert f"{bare}: does not fit the network" in line
    line = one_line_error(invoke("export", DARTS_V2, "--format", "torchscript", "--weights", trained / "metrics.jsonl"))
    assert f"{trained / 'metrics.jsonl'}: not a weights file" in line
    line = one_line_error(invoke("export", DARTS_V2, "--format", "torchscript", "--weights", tmp_path / "none.pt"))
    assert "no such file" in line


def test_missing_onnx_extra_is_one_line(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    line = one_line_error(invoke("export", DARTS_V2, "--format", "onnx", "--weights", trained,
                                 "--out", tmp_path / "x.onnx"))
    assert line == "error: export to ONNX needs onnx and onnxruntime: pip install 'nasreg[onnx]'"
    assert not (tmp_path / "x.onnx").exists()


def test_existing_out_is_refused_without_force(trained, tmp_path):
    out = tmp_path / "x.pt"
    out.write_text("keep me")
    line = one_line_error(invoke("export", DARTS_V2, "--format", "torchscript", "--weights", trained, "--out", out))
    assert f"--out {out}: exists; pass --force" in line
    assert out.read_text() == "keep me"
    result = invoke("export", DARTS_V2, "--format", "torchscript", "--weights", trained, "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert torch.jit.load(str(out))(images(2)).shape == (2, 10)


def test_a_mismatch_exits_1_and_keeps_the_file_under_another_name(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "TOLERANCE", -1.0)  # any difference, even 0, is above it
    out = tmp_path / "x.pt"
    line = one_line_error(invoke("export", DARTS_V2, "--format", "torchscript", "--weights", trained, "--out", out),
                          code=1)
    kept = tmp_path / "x.mismatch.pt"
    assert f"{out}: the exported torchscript model's output differs from PyTorch's" in line
    assert f"kept as {kept}" in line
    assert not out.exists()
    assert torch.jit.load(str(kept))(images(2)).shape == (2, 10)


def test_the_export_command_calls_only_the_public_api():
    """`nasreg export` is a thin layer, like the rest of the CLI (tests/test_public_api.py): no
    internal module imported."""
    import ast

    tree = ast.parse((ROOT / "nasreg" / "_cli_export.py").read_text())
    modules = [("." * n.level) + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert modules and not [m for m in modules if "_core" in m]
    assert set(modules) <= {"__future__", "pathlib", ".cli", ".api"}
