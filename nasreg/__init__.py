"""nasreg: plugin-based, declarative neural architecture search for PyTorch.

The public API for plugin authors::

    from nasreg import hookimpl            # the marker for hook implementations
    from nasreg import Range, Ref          # annotations that make factory params checked spec keys
    from nasreg import SearchSpace, Supernet, MixedOp, SearchStrategy, Selector, StageResult
    from nasreg import Genotype, DatasetBundle, MemoryView, NasregError
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("nasreg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from .data import DatasetBundle, MemoryView
from .errors import (DataError, GenotypeError, NasregError, PluginError, RegistryError, RunDirError,
                     SpecError)
from .genotype import CellGenotype, Genotype, GenotypeEdge, derive_topk
from .hookspecs import hookimpl
from .params import Component, Range, Ref
from .registry import Entry, Registry
from .selector import Selector, StageResult
from .strategy import SamplingStrategy, SearchStrategy
from .supernet import Candidates, MixedOp, SearchSpace, Supernet

__all__ = [
    "__version__", "hookimpl", "Range", "Ref", "Component", "Entry", "Registry",
    "SearchSpace", "Supernet", "MixedOp", "Candidates", "SearchStrategy", "SamplingStrategy", "Selector", "StageResult",
    "Genotype", "CellGenotype", "GenotypeEdge", "derive_topk", "DatasetBundle", "MemoryView",
    "NasregError", "SpecError", "RegistryError", "PluginError", "GenotypeError", "RunDirError", "DataError",
]
