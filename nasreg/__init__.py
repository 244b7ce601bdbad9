"""nasreg: plugin-based, declarative neural architecture search for PyTorch.

Everything a user script or a plugin may rely on is exported here, and only here: the names in
``__all__`` are the public, documented and stable surface. The modules behind them are internal
(a plugin that imports ``nasreg.something`` directly is broken by any refactor; a test keeps the
built-in plugins honest about this).

``import nasreg`` does not import torch: the names that need it are loaded on first use, so the
command line (``nasreg --help``, ``validate``, ``list-plugins``) starts fast.

For scripts (see the README's "Python API")::

    import nasreg
    spec = nasreg.load_spec("specs/quickstart.toml", overrides=["search.epochs=1"])
    result = nasreg.search(spec)                  # a SearchResult: genotype, summary, run_dir
    net = nasreg.build_network(result.genotype, spec=spec)

For plugin authors (see CONTRIBUTING.md)::

    from nasreg import hookimpl            # the marker for hook implementations
    from nasreg import Range, Ref          # annotations that make factory params checked spec keys
    from nasreg import SearchSpace, Supernet, MixedOp, SearchStrategy, Selector, StageResult
    from nasreg import Genotype, DatasetBundle, MemoryView, RunContext, NasregError
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version as _version
from typing import TYPE_CHECKING, Any

try:
    __version__ = _version("nasreg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

# Torch-free names, imported at once (cheap).
from ._core.errors import (DataError, DivergenceError, GenotypeError, Interrupted, NasregError, PluginError,
                           RegistryError, RunDirError, SpecError)
from ._core.genotype import CellGenotype, Genotype, GenotypeEdge
from .hookspecs import hookimpl
from ._core.params import Component, Range, Ref
from ._core.registry import Entry, Registry
from ._core.executor import Executor, LocalExecutor, Outcome, Resources, free_cores, split_cores
# plugin contracts (torch is imported by their methods only)
from ._core.data import DatasetBundle, MemoryView
from ._core.selector import Selector, StageResult
from ._core.space import Candidates, OperationTable, SearchSpace, operation_names
from ._core.strategy import SamplingStrategy, SearchStrategy
# the Python API (see nasreg.api) and the reporter protocol
from .api import (SearchResult, TrainResult, build_network, compare_runs, describe_network, export_network,
                  load_genotype,
                  load_plugins, load_spec, resume, resume_study, run_study, search, study_report, train, validate,
                  validate_study)
from ._core.progress import PlainReporter, QuietReporter, Reporter, RichReporter
from ._core.run import RunContext
from ._core.spec import Spec

#: Names loaded on first access (their modules import torch), by internal module.
_LAZY_BY_MODULE: dict[str, tuple[str, ...]] = {
    # plugin contracts: the supernet, the base both strategy kinds share and what its
    # run_search receives
    "supernet": ("Supernet", "MixedOp", "EdgeWeighting"),
    "strategy": ("Strategy",),
    "search": ("SearchJob",),
    # SDK helpers: distributed training, genotypes, components, artifacts (see CONTRIBUTING)
    "distributed": ("average_across_ranks_", "rank_sample_rows"),
    "genotype": ("genotype_from_edges",),
    "params": ("component",),
    "schema": ("entry_keys",),  # the spec keys a registry entry takes (nasreg describe)
    "rundir": ("RunDir", "CheckpointError", "write_json"),
    # the training engine, seeding and data splits, workers, figures
    "trainer": ("Trainer", "TrainRecipe", "TrainCallback", "EpochStats", "FitResult", "seed_everything"),
    "evaluate": ("TrainRun",),
    "data": ("split_train_val",),
    "worker": ("SpecSnapshot",),
    # studies: many seeds and arms through an executor, and their report
    "study": ("StudyResult", "StudyReporter"),
    # export: an evaluation network with its weights to ONNX / TorchScript, checked
    "export": ("ExportResult", "ExportMismatch"),
    "figures": ("new_figure", "draw_guarded", "warn", "op_color", "edge_label", "edge_grids", "EdgeGrid",
                "legend_outside", "page_paths"),
    # cell-network building blocks (evaluation networks of cell spaces)
    "cellnet": ("AuxiliaryHead", "CellBase", "CellNetwork", "FactorizedReduce", "ReLUConvBN", "batch_norm_scaled",
                "build_op", "cell_inputs", "check_cell", "check_cell_ops", "default_reductions", "drop_path"),
}
#: name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {name: (f"._core.{module}", name)
                                     for module, names in _LAZY_BY_MODULE.items() for name in names}

__all__ = [
    "__version__",
    "load_spec", "validate", "search", "resume", "train", "build_network", "describe_network", "export_network",
    "load_genotype", "load_plugins", "run_study", "resume_study", "study_report", "validate_study", "compare_runs",
    "SearchResult", "TrainResult", "Reporter", "RichReporter", "QuietReporter", "PlainReporter", "RunContext", "Spec", "hookimpl", "Range", "Ref", "Component", "Entry", "Registry",
    "Genotype", "CellGenotype", "GenotypeEdge",
    "SearchSpace", "Candidates", "OperationTable", "operation_names", "SearchStrategy", "SamplingStrategy", "Selector", "StageResult",
    "DatasetBundle", "MemoryView",
    "NasregError", "SpecError", "RegistryError", "PluginError", "GenotypeError", "RunDirError", "DataError",
    "DivergenceError", "Interrupted",
    "Executor", "LocalExecutor", "Outcome", "Resources", "free_cores", "split_cores",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'nasreg' has no attribute {name!r}") from None
    value = getattr(import_module(module, __name__), attr)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from ._core.cellnet import (AuxiliaryHead, CellBase, CellNetwork, FactorizedReduce, ReLUConvBN,
                                batch_norm_scaled, build_op, cell_inputs, check_cell, check_cell_ops,
                                default_reductions, drop_path)
    from ._core.data import split_train_val
    from ._core.distributed import average_across_ranks_, rank_sample_rows
    from ._core.evaluate import TrainRun
    from ._core.figures import (EdgeGrid, draw_guarded, edge_grids, edge_label, legend_outside, new_figure,
                                op_color, page_paths, warn)
    from ._core.genotype import genotype_from_edges
    from ._core.params import component
    from ._core.schema import entry_keys
    from ._core.rundir import CheckpointError, RunDir, write_json
    from ._core.search import SearchJob
    from ._core.strategy import Strategy
    from ._core.supernet import EdgeWeighting, MixedOp, Supernet
    from ._core.trainer import EpochStats, FitResult, TrainCallback, Trainer, TrainRecipe, seed_everything
    from ._core.worker import SpecSnapshot
    from ._core.study import StudyReporter, StudyResult
    from ._core.export import ExportMismatch, ExportResult
