"""The run context: what one search knows about itself, handed to strategies, selectors and hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .plugins import Plugins
    from .registry import Registries
    from .space import SearchSpace
    from .spec import Spec


class RunBase:
    """What every run context offers: the registries, the hook relay and the seed (from
    ``self.plugins`` and ``self.spec.run``)."""

    plugins: "Plugins"
    spec: Any

    @property
    def registries(self) -> "Registries":
        """The filled registries (``registries.operations``, ``.selectors``, ...)."""
        return self.plugins.registries

    @property
    def seed(self) -> int:
        """``[run] seed``."""
        return self.spec.run.seed

    @property
    def hook(self) -> Any:
        """pluggy's hook relay (call another hook: ``run.hook.on_something(...)``)."""
        return self.plugins.hook


@dataclass
class RunContext(RunBase):
    """One search, as plugins see it (public as ``nasreg.RunContext``).

    The search engine makes one per run and passes it as ``run`` to the lifecycle hooks
    (``on_run_start``, ``on_epoch_end``, ``on_stage_end``, ``on_run_end``), to
    ``Selector.next_candidates``/``derive`` and to a sampling strategy's ``search``.

    Attributes:
        spec: the validated :class:`nasreg.Spec` (``spec.run.seed``, ``spec.data``,
            ``spec.search``, ``spec.strategy.params``, ``spec.resolved()``, ``spec.digest()``: the
            spec's hash, recorded in genotypes).
        plugins: the loaded plugins (``plugins.registries``, ``plugins.hook``).
        run_dir: the run directory (a :class:`pathlib.Path`; write artifacts there with
            ``nasreg.RunDir(run.run_dir)`` or ``nasreg.write_json``).
        device: the ``torch.device`` the search trains on.
        space: the built :class:`~nasreg.SearchSpace` (``space.edges()``, ``space.full_candidates()``,
            ``space.derive(result, zero_ops)``, ``space.inputs_per_node``, ...).
        extras: a free-form store for plugins that observe the run (key it by plugin name).
    """

    spec: "Spec"
    plugins: "Plugins"
    run_dir: Path
    device: "torch.device"
    space: "SearchSpace"
    extras: dict[str, Any] = field(default_factory=dict)

    def zero_ops(self) -> set[str]:
        """Names (bare and qualified) of the registered ops that declare ``is_zero``."""
        return {n for e in self.registries.operations if e.get("is_zero", False) for n in (e.name, e.qualified)}


#: The name the engine used before it was public.
Run = RunContext
