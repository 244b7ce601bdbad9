"""Export: an evaluation network with its trained weights to ONNX or TorchScript, checked.

The pieces :func:`nasreg.export_network` (``nasreg export``) puts together:

* :func:`write_weights`: a training's final weights as ``weights.pt`` in its run directory (a
  plain ``state_dict`` of the evaluation network, CPU tensors; ``spec.toml``, ``genotype.json``
  and ``results.json`` beside it say how to rebuild the network). The evaluation engine calls it
  after the last epoch, before ``results.json``.
* :func:`find_weights` / :func:`read_weights`: what ``--weights`` names (that file, a training's
  run directory, a search's run directory with ``eval/``, or a training checkpoint, whose
  ``"model"`` is picked out), or the weights found beside ``GENOTYPE.json``; every fault is one
  :class:`~nasreg._core.rundir.CheckpointError` line naming the file.
* :func:`load_into`: the weights into the built network (a state of another shape: one line).
* :func:`export_module`: the network in eval mode, logits only (:class:`LogitsOnly` when its
  forward returns a tuple), serialized in memory (ONNX: torch's ``torch.export``-based exporter,
  the default of torch >= 2.9, which needs ``onnxscript``, with a dynamic batch axis; TorchScript:
  ``torch.jit.trace``), loaded back (onnxruntime on the CPU for ONNX) and run on a random batch
  beside PyTorch. Within :data:`TOLERANCE` the file is written atomically to its path; above
  it, it is written as ``NAME.mismatch.SUFFIX`` beside that path (kept for inspection, never
  under the name asked for, so that nothing picks up an unverified model) and
  :class:`ExportMismatch` (exit status 1) says so.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import GenotypeError, NasregError, PluginError, RunDirError
from .rundir import CHECKPOINT_FILE, CHECKPOINT_FORMAT, EVAL_DIR, GENOTYPE_FILE, CheckpointError, RunDir

__all__ = ["CHECK_BATCH", "ExportMismatch", "ExportResult", "FORMATS", "LogitsOnly", "ONNX_INSTALL",
           "TOLERANCE", "WEIGHTS_FILE", "Weights", "check_out", "default_out", "export_module", "find_weights",
           "load_into", "read_weights", "write_weights"]

#: A training's final weights, in its run directory (``RUN_DIR/eval/`` after a search).
WEIGHTS_FILE = "weights.pt"
#: Export format -> the default file name's ending.
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
#: The largest max |exported - PyTorch| accepted on the check batch.
TOLERANCE = 1e-4
#: Images in the random check batch (the export itself traces a batch of 2: a batch of 8 also
#: checks that the batch axis is dynamic).
CHECK_BATCH = 8
TRACE_BATCH = 2
ONNX_INSTALL = "export to ONNX needs onnx and onnxruntime: pip install 'nasreg[onnx]'"


class ExportMismatch(NasregError):
    """The exported model's output differs from PyTorch's by more than the tolerance (exit 1);
    the file is kept as ``NAME.mismatch.SUFFIX``, not under the name asked for."""

    exit_code = 1


@dataclass
class Weights:
    """Trained weights as found: the state dict, the file it came from, and the directory whose
    ``spec.toml`` / ``genotype.json`` / ``results.json`` describe the training (None: a bare file)."""

    state: dict[str, torch.Tensor]
    path: Path
    run_dir: Path | None
    #: The training checkpoint's ``genotype_hash`` (None: a weights file).
    genotype_hash: str | None = None
    #: True when found beside ``GENOTYPE.json`` rather than named by ``--weights``.
    found: bool = False


@dataclass
class ExportResult:
    """An exported network: where, in what format, its parameters (without an auxiliary head),
    the weights it holds (None: untrained) and the check: max |exported - PyTorch| on a random
    batch of ``batch`` images, within ``tolerance``."""

    path: Path
    format: str
    params: int
    max_diff: float
    batch: int
    tolerance: float
    weights: Path | None
    weights_found: bool = False

    @property
    def ok(self) -> bool:
        return self.max_diff <= self.tolerance

    def weights_line(self, genotype_source: str) -> str:
        """The line saying which weights the export holds."""
        if self.weights is None:
            return f"untrained network of {genotype_source} (--untrained): freshly initialized weights"
        return f"weights: {self.weights}" + (f" (found beside {genotype_source})" if self.weights_found else "")

    def line(self) -> str:
        """``exported FILE (onnx, N params): max |diff| vs PyTorch 3.1e-07 on a batch of 8: ok``."""
        return (f"exported {self.path} ({self.format}, {self.params:,} params): max |diff| vs PyTorch "
                f"{self.max_diff:.1e} on a batch of {self.batch}: {'ok' if self.ok else 'MISMATCH'}")


# ------------------------------------------------------------------------------------------------
# Weights: written by a training, found and read by export


def write_weights(files: RunDir, model: nn.Module) -> Path:
    """``weights.pt`` in ``files``: ``model``'s state dict as CPU tensors, written atomically."""
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return files.write_bytes(WEIGHTS_FILE, buf.getvalue())


def find_weights(weights: str | Path | None, genotype_path: Path | None) -> Weights | None:
    """The weights ``--weights`` names, or without it those beside ``genotype_path`` (``weights.pt``
    in its folder, or in its folder's ``eval/``: a training's or a search's run directory), or None."""
    if weights is not None:
        return read_weights(Path(weights))
    if genotype_path is None:
        return None
    folder = Path(genotype_path).parent
    for candidate in (folder / WEIGHTS_FILE, folder / EVAL_DIR / WEIGHTS_FILE):
        if candidate.is_file():
            found = read_weights(candidate)
            found.found = True
            return found
    return None


def read_weights(path: Path) -> Weights:
    """What ``--weights`` names: a ``weights.pt``, a training checkpoint (its ``"model"``), or a
    run directory (its ``weights.pt``, its ``eval/weights.pt``, else a training's
    ``checkpoint.pt``). Anything else is one :class:`CheckpointError` line naming the path."""
    if path.is_dir():
        for candidate in (path / WEIGHTS_FILE, path / EVAL_DIR / WEIGHTS_FILE):
            if candidate.is_file():
                return read_weights(candidate)
        if (path / CHECKPOINT_FILE).is_file() and not (path / "summary.json").exists():
            return read_weights(path / CHECKPOINT_FILE)  # a training stopped before its end
        raise CheckpointError(f"--weights {path}: no {WEIGHTS_FILE} (nor {EVAL_DIR}/{WEIGHTS_FILE}) in this "
                              "directory: pass a training's run directory, its weights.pt or its checkpoint.pt")
    if not path.is_file():
        raise CheckpointError(f"--weights {path}: no such file or directory")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unpickling failure: a damaged or foreign file
        raise CheckpointError(f"{path}: not a weights file or checkpoint nasreg can read (damaged, or holding "
                              "more than tensors and plain data)") from None
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        return _from_checkpoint(path, state)
    if isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        return Weights(state=dict(state), path=path, run_dir=path.parent if _is_run_dir(path.parent) else None)
    raise CheckpointError(f"{path}: not a state dict (a mapping of names to tensors) nor a nasreg training checkpoint")


def _from_checkpoint(path: Path, state: dict[str, Any]) -> Weights:
    kind = state.get("kind", "search")
    if kind != "train":
        raise CheckpointError(f"{path}: a {kind!r} checkpoint holds the search's supernet, not an evaluation "
                              f"network: pass the evaluation's {EVAL_DIR}/{WEIGHTS_FILE} (or {EVAL_DIR}/{CHECKPOINT_FILE})")
    model = state.get("model")
    if not (isinstance(model, dict) and all(isinstance(v, torch.Tensor) for v in model.values())):
        raise CheckpointError(f"{path}: model: expected the network's state dict")
    digest = state.get("genotype_hash")
    return Weights(state=dict(model), path=path, run_dir=path.parent if _is_run_dir(path.parent) else None,
                   genotype_hash=digest if isinstance(digest, str) else None)


def _is_run_dir(folder: Path) -> bool:
    return (folder / "spec.toml").is_file()


def check_genotype(weights: Weights, genotype: Any, genotype_source: str, digest: str, registries: Any) -> None:
    """Refuse weights trained for another genotype: the checkpoint's ``genotype_hash``, or the
    ``genotype.json`` beside the weights, against ``genotype`` (``digest``: its digest)."""
    from .genotype import Genotype

    theirs, where = weights.genotype_hash, weights.path
    beside = weights.run_dir / GENOTYPE_FILE if weights.run_dir is not None else None
    if theirs is None and beside is not None and beside.is_file():
        from .evaluate import _genotype_digest

        try:
            theirs, where = _genotype_digest(Genotype.load(beside, registries)), beside
        except NasregError:  # an unreadable genotype beside the weights: the state dict still decides
            theirs = None
    if theirs is not None and theirs != digest:
        raise GenotypeError(f"{weights.path}: trained for another genotype ({where}), not {genotype_source}")


def load_into(net: nn.Module, weights: Weights, genotype_source: str) -> None:
    """``weights`` into ``net`` (strict); a state that does not fit is one line naming the file."""
    try:
        net.load_state_dict(weights.state)
    except RuntimeError as exc:
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        first = details[0] if details else str(exc).splitlines()[0]
        raise CheckpointError(f"{weights.path}: does not fit the network of {genotype_source} ({first[:300]}); "
                              "trained with other [evaluate] keys or another genotype? pass --spec/--set "
                              "as it was trained") from None


# ------------------------------------------------------------------------------------------------
# Output paths


def default_out(fmt: str, weights: Weights | None, genotype_path: Path | None) -> Path:
    """``model.onnx`` / ``model.torchscript.pt`` in the weights' folder; untrained, beside the
    genotype file (``GENOTYPE.untrained.onnx``), else in the working directory."""
    if weights is not None:
        return weights.path.parent / f"model{FORMATS[fmt]}"
    if genotype_path is not None:
        return Path(genotype_path).with_name(f"{Path(genotype_path).stem}.untrained{FORMATS[fmt]}")
    return Path(f"model.untrained{FORMATS[fmt]}")


def check_out(out: Path, force: bool) -> None:
    """An existing ``out`` is refused unless ``force`` (a directory always)."""
    if out.is_dir():
        raise RunDirError(f"--out {out}: is a directory; name the file to write")
    if out.exists() and not force:
        raise RunDirError(f"--out {out}: exists; pass --force to replace it")


def mismatch_path(out: Path) -> Path:
    """Where an export that failed its check is kept: ``NAME.mismatch.SUFFIX`` beside ``out``."""
    return out.with_name(f"{out.stem}.mismatch{out.suffix}")


# ------------------------------------------------------------------------------------------------
# Export and check


class LogitsOnly(nn.Module):
    """A network whose forward returns a tuple (logits first), made to return the logits only."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.network(images)
        return out[0] if isinstance(out, (tuple, list)) else out


def exportable(net: nn.Module, shape: tuple[int, int, int]) -> nn.Module:
    """``net`` in eval mode (no drop path, batch-norm running statistics), returning the logits
    only; on the CPU, float32."""
    net = net.to("cpu", torch.float32).eval()
    if hasattr(net, "drop_path_prob"):
        net.drop_path_prob = 0.0
    with torch.no_grad():
        out = net(torch.zeros(TRACE_BATCH, *shape))
    return LogitsOnly(net).eval() if isinstance(out, (tuple, list)) else net


def require_onnx() -> Any:
    """onnxruntime (with onnx and onnxscript present, as the exporter needs them), or one line
    saying what to install."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        raise PluginError(ONNX_INSTALL) from None
    return onnxruntime


def export_module(net: nn.Module, fmt: str, out: Path, shape: tuple[int, int, int], *, params: int,
                  weights: Weights | None, tolerance: float = TOLERANCE, seed: int = 0) -> ExportResult:
    """Export ``net`` (see :func:`exportable`) as ``fmt`` to ``out``, check it against PyTorch on a
    random batch of :data:`CHECK_BATCH` images (seeded by ``seed``) and write it atomically: to
    ``out`` when within ``tolerance``, else to :func:`mismatch_path` and raise :class:`ExportMismatch`."""
    if fmt not in FORMATS:
        raise NasregError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    runtime = require_onnx() if fmt == "onnx" else None
    module = exportable(net, shape)
    example = torch.zeros(TRACE_BATCH, *shape)
    batch = torch.randn(CHECK_BATCH, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = module(batch)
    if fmt == "onnx":
        data = _onnx_bytes(module, example)
        got = _onnx_run(runtime, data, batch)
    else:
        data = _torchscript_bytes(module, example)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = torch.jit.load(io.BytesIO(data), map_location="cpu")(batch)
    max_diff = float((got.float() - expected).abs().max()) if got.shape == expected.shape else math.inf
    if not math.isfinite(max_diff):
        max_diff = math.inf
    result = ExportResult(path=out, format=fmt, params=params, max_diff=max_diff, batch=CHECK_BATCH,
                          tolerance=tolerance, weights=weights.path if weights else None,
                          weights_found=bool(weights and weights.found))
    target = out if result.ok else mismatch_path(out)
    _write(target, data)
    if not result.ok:
        shown = "a different output shape" if got.shape != expected.shape else f"max |diff| {max_diff:.1e}"
        raise ExportMismatch(f"{out}: the exported {fmt} model's output differs from PyTorch's ({shown} on a batch "
                             f"of {CHECK_BATCH}, tolerance {tolerance:.0e}); not written; kept as {target} for inspection")
    return result


def _onnx_bytes(module: nn.Module, example: torch.Tensor) -> bytes:
    """The ONNX model (torch.export-based exporter, a dynamic batch axis, one file) as bytes."""
    batch = torch.export.Dim("batch")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), None, dynamo=True, verbose=False,
                                        input_names=["images"], output_names=["logits"],
                                        dynamic_shapes=({0: batch},), optimize=True)
        return program.model_proto.SerializeToString()
    except Exception as exc:  # noqa: BLE001 - the exporter's own failures are many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NasregError(f"ONNX export failed: {type(exc).__name__}: {first[:300]}") from None


def _onnx_run(runtime: Any, data: bytes, batch: torch.Tensor) -> torch.Tensor:
    options = runtime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    session = runtime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"images": batch.numpy()})
    return torch.from_numpy(out)


def _torchscript_bytes(module: nn.Module, example: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings on shape-dependent Python branches
            traced = torch.jit.trace(module, example)
            torch.jit.save(traced, buf)
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NasregError(f"TorchScript export failed: {type(exc).__name__}: {first[:300]}") from None
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    """``data`` to ``path`` atomically (temporary file beside it, fsync, rename)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"{path.parent}: cannot create: {exc.strerror or exc}") from None
    return RunDir(path.parent).write_bytes(path.name, data)


def shape_from_results(weights: Weights | None) -> tuple[tuple[int, int, int], int] | None:
    """``(input_shape, num_classes)`` from the ``results.json`` beside the weights, or None."""
    if weights is None or weights.run_dir is None or not (weights.run_dir / "results.json").is_file():
        return None
    try:
        results = RunDir(weights.run_dir).read_json("results.json", expect=dict)
        c, h, w = (int(v) for v in results["input_shape"])
        return (c, h, w), int(results["num_classes"])
    except (NasregError, KeyError, TypeError, ValueError):
        return None

