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
from .errors import (DataError, GenotypeError, NasregError, PluginError, RegistryError, RunDirError,
                     SpecError)
from .genotype import CellGenotype, Genotype, GenotypeEdge
from .hookspecs import hookimpl
from .params import Component, Range, Ref
from .registry import Entry, Registry
# plugin contracts (torch is imported by their methods only)
from .data import DatasetBundle, MemoryView
from .selector import Selector, StageResult
from .space import Candidates, OperationTable, SearchSpace, operation_names
from .strategy import SamplingStrategy, SearchStrategy
# the Python API (see nasreg.api) and the reporter protocol
from .api import (SearchResult, TrainResult, build_network, describe_network, load_genotype, load_plugins,
                  load_spec, resume, search, train, validate)
from .progress import Reporter
from .run import RunContext

#: Names loaded on first access (their modules import torch): name -> (module, attribute).
_LAZY: dict[str, tuple[str, str]] = {
    # plugin contracts
    "Supernet": (".supernet", "Supernet"),
    "MixedOp": (".supernet", "MixedOp"),
    "Strategy": (".strategy", "Strategy"),    # the base both strategy kinds share
    "SearchJob": (".search", "SearchJob"),    # what Strategy.run_search receives
    # errors raised while a run trains
    "DivergenceError": (".search", "DivergenceError"),
    "Interrupted": (".search", "Interrupted"),
    # SDK helpers
    "average_across_ranks_": (".distributed", "average_"),
    "rank_sample_rows": (".distributed", "sample_rows"),
    "genotype_from_edges": (".genotype", "genotype_from_edges"),
    "component": (".params", "component"),
    "write_json": (".rundir", "write_json"),
    # run directories, the training engine, seeding and data splits, workers (see CONTRIBUTING)
    "RunDir": (".rundir", "RunDir"),
    "CheckpointError": (".rundir", "CheckpointError"),
    **{name: (".trainer", name) for name in ("Trainer", "TrainRecipe", "TrainCallback", "EpochStats", "FitResult")},
    "TrainRun": (".evaluate", "TrainRun"),
    "seed_everything": (".trainer", "seed_everything"),
    "split_train_val": (".data", "split_train_val"),
    "SpecSnapshot": (".worker", "SpecSnapshot"),
    **{name: (".figures", name) for name in ("new_figure", "draw_guarded", "warn")},
    # cell-network building blocks (evaluation networks of cell spaces)
    **{name: (".cellnet", name) for name in (
        "AuxiliaryHead", "CellBase", "CellNetwork", "FactorizedReduce", "ReLUConvBN",
        "batch_norm_scaled", "build_op", "cell_inputs", "check_cell", "check_cell_ops", "default_reductions",
        "drop_path")},
}

__all__ = [
    "__version__",
    "load_spec", "validate", "search", "resume", "train", "build_network", "describe_network",
    "load_genotype", "load_plugins", "SearchResult", "TrainResult", "Reporter", "RunContext", "hookimpl", "Range", "Ref", "Component", "Entry", "Registry",
    "Genotype", "CellGenotype", "GenotypeEdge",
    "SearchSpace", "Candidates", "OperationTable", "operation_names", "SearchStrategy", "SamplingStrategy", "Selector", "StageResult",
    "DatasetBundle", "MemoryView",
    "NasregError", "SpecError", "RegistryError", "PluginError", "GenotypeError", "RunDirError", "DataError",
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
    from .cellnet import (AuxiliaryHead, CellBase, CellNetwork, FactorizedReduce, ReLUConvBN,
                          batch_norm_scaled, build_op, cell_inputs, check_cell, check_cell_ops,
                          default_reductions, drop_path)
    from .data import split_train_val
    from .evaluate import TrainRun
    from .genotype import genotype_from_edges
    from .rundir import CheckpointError, RunDir
    from .search import SearchJob
    from .strategy import Strategy
    from .trainer import EpochStats, FitResult, TrainCallback, Trainer, TrainRecipe, seed_everything
    from .figures import draw_guarded, new_figure, warn
    from .worker import SpecSnapshot
    from .supernet import MixedOp, Supernet
