"""The Run: everything one search knows about itself, handed to strategies, selectors and hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .plugins import Plugins
from .registry import Registries
from .spec import Spec
from .supernet import SearchSpace


@dataclass
class Run:
    spec: Spec
    plugins: Plugins
    run_dir: Path
    device: torch.device
    space: SearchSpace
    #: Free-form store for plugins that observe the run (keyed by plugin name).
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def registries(self) -> Registries:
        return self.plugins.registries

    @property
    def seed(self) -> int:
        return self.spec.run.seed

    @property
    def hook(self):
        return self.plugins.hook

    def zero_ops(self) -> set[str]:
        """Names (bare and qualified) of the registered ops that declare ``is_zero``."""
        return {n for e in self.registries.operations if e.get("is_zero", False) for n in (e.name, e.qualified)}
