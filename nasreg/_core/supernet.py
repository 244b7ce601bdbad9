"""The torch side of the search space: the mixed op and the supernet base.

Nothing here knows an operation by name. Ops are built through their registry factories and
described by their metadata (``is_zero``), so a third-party op works like a built-in one.

The space contract and the ``Candidates`` mapping (cell type -> one list of op names per edge) are
in :mod:`nasreg._core.space`, which does not import torch. Every stage of a staged search builds a fresh
supernet from its own candidates: stage 1 of DG-DARTS is this same code over smaller per-edge sets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable, Iterator, Protocol

import torch
from torch import nn

from .registry import Registry
from .space import Candidates, Edge, SearchSpace  # noqa: F401 - SearchSpace: core modules import it from here


def is_zero_op(ops: Registry, name: str) -> bool:
    return bool(ops.get(name).get("is_zero", False))


class MixedOp(nn.Module):
    """softmax(alpha)-weighted sum of the candidate ops of one edge.

    Ops are kept in a ``ModuleDict`` keyed by op name, so a parameter's name does not depend on
    the candidate order (weights can be carried from one stage's supernet to the next). Zero ops
    get no module and no compute: their weight only takes part in the softmax.

    **Fast path (optional, per op).** An op module may define
    ``fused_forward(x, scale, x_relu) -> scale * module(x)``: ``scale`` is the op's 0-d mixing
    weight (or ``None`` for 1) and ``x_relu`` is ``relu(x)`` or ``None``. An op whose computation
    starts with ``relu(x)`` sets the class attribute ``relu_input = True`` and uses ``x_relu``
    when given: the mixed op (or its caller, once per cell node) computes the ReLU once for all
    such ops instead of once per op, and autograd saves it once. An op can fold ``scale`` into
    its last layer (e.g. a BatchNorm's affine weight) instead of a separate multiply, which also
    spares the op output that ``w * op(x)`` keeps for backward. ``fused_forward`` must return a
    new tensor that its own backward does not need: the sum is accumulated into it in place.
    Ops without it are computed as ``module(x) * w`` (third-party ops need not know about this).
    """

    def __init__(self, candidates: list[str], C: int, stride: int, ops: Registry, affine: bool = False):
        super().__init__()
        self.candidates = list(candidates)
        self.stride = stride
        self.ops = nn.ModuleDict()
        self._active: list[int] = []
        for i, name in enumerate(self.candidates):
            if is_zero_op(ops, name):
                continue
            module = ops.get(name).factory(C, stride, affine)
            if not isinstance(module, nn.Module):
                raise TypeError(f"operation {name!r} factory returned {type(module).__name__}, not an nn.Module")
            self.ops[name] = module
            self._active.append(i)
        #: Some op takes a shared relu(x) (see the class docstring): callers may pass ``x_relu``.
        self.relu_input = any(getattr(m, "relu_input", False) and hasattr(m, "fused_forward")
                              for m in self.ops.values())

    def plan(self, active: list[int] | None = None) -> list[tuple[int, nn.Module]]:
        """(candidate index, module) of every op to compute: every non-zero op, or those of them
        whose index is in ``active``."""
        pairs = list(zip(self._active, self.ops.values()))
        if active is None:
            return pairs
        wanted = set(active)
        return [(i, m) for i, m in pairs if i in wanted]

    @staticmethod
    def op_term(module: nn.Module, x: torch.Tensor, scale: torch.Tensor | None,
                x_relu: torch.Tensor | None) -> torch.Tensor:
        """``scale * module(x)`` as a new tensor, through ``fused_forward`` when the op has it."""
        fused = getattr(module, "fused_forward", None)
        if fused is not None:
            return fused(x, scale, x_relu if getattr(module, "relu_input", False) else None)
        y = module(x)
        return y if scale is None else y * scale

    def forward(self, x: torch.Tensor, weights: torch.Tensor, *, out: torch.Tensor | None = None,
                x_relu: torch.Tensor | None = None, active: list[int] | None = None) -> torch.Tensor:
        """``sum_i weights[i] * op_i(x)``; with ``out`` (a tensor this edge's caller owns, e.g. the
        partial sum of a cell node) the sum is added to ``out`` in place and ``out`` returned.
        ``x_relu`` is ``relu(x)`` when the caller has it (computed here when some op needs it).
        ``active`` (candidate indices, see :meth:`Supernet.edge_mixing`) limits the sum to those
        ops: the others are not computed at all (their weights are taken as zero)."""
        plan = self.plan(active)
        needs_relu = self.relu_input if active is None else any(getattr(m, "relu_input", False) for _i, m in plan)
        if x_relu is None and needs_relu:
            x_relu = torch.relu(x)
        for i, module in plan:
            term = self.op_term(module, x, weights[i], x_relu)
            out = term if out is None else out.add_(term)
        if out is None:  # only zero ops on this edge
            n, c, h, w = x.shape
            s = self.stride
            return x.new_zeros(n, c, (h + s - 1) // s, (w + s - 1) // s)
        return out


class EdgeWeighting(Protocol):
    """How a supernet's edges weight their ops, set by a strategy as :attr:`Supernet.weighting`
    (not an ``nn.Module``: it holds no weights and is not saved with the model).

    Called once per forward pass and cell type with the cell type, its per-edge alphas and
    whether the model is training; returns per edge the op weights (a tensor over the edge's
    candidates, differentiable in the alphas) and the candidate indices to compute (``None`` for
    all; the list itself may be ``None``)."""

    def __call__(self, cell_type: str, alphas: list[torch.Tensor], training: bool
                 ) -> tuple[list[torch.Tensor], list[list[int] | None] | None]: ...


class Supernet(nn.Module, ABC):
    """A network whose edges are mixed ops, with one architecture parameter vector per edge.

    Subclasses (a search space's network) call ``super().__init__(candidates)`` and use
    :meth:`edge_weights` in their forward pass. The architecture parameters live in
    ``self.alphas[cell_type][edge]``; everything else is a weight.
    """

    def __init__(self, candidates: Candidates, alpha_init_std: float = 1e-3):
        super().__init__()
        self.candidates: Candidates = {ct: [list(c) for c in edges] for ct, edges in candidates.items()}
        self.alphas = nn.ModuleDict({
            ct: nn.ParameterList([nn.Parameter(alpha_init_std * torch.randn(len(c))) for c in edges])
            for ct, edges in self.candidates.items()
        })
        #: Architecture parameters other than the per-edge op alphas (e.g. PC-DARTS's per-edge
        #: betas), added by subclasses. The strategy optimizes them with the alphas
        #: (:meth:`arch_parameters` lists them after the alphas); :meth:`alpha_softmax`,
        #: :meth:`alpha_grads` and the recorded gradient statistics are about the alphas only.
        self.extra_arch = nn.ParameterDict()
        #: How edges mix their ops (see :meth:`edge_mixing`); None: the softmax of every op.
        self.weighting: EdgeWeighting | None = None

    def alpha_parameters(self) -> list[nn.Parameter]:
        """The per-edge op alphas, cell type by cell type, edge by edge."""
        return [p for ct in self.alphas.values() for p in ct]

    def arch_parameters(self) -> list[nn.Parameter]:
        """Every architecture parameter: the alphas, then :attr:`extra_arch`."""
        return self.alpha_parameters() + list(self.extra_arch.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def named_weight_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        arch = {id(p) for p in self.arch_parameters()}
        return ((n, p) for n, p in self.named_parameters() if id(p) not in arch)

    def edge_weights(self, cell_type: str) -> list[torch.Tensor]:
        """softmax(alpha) for every edge of ``cell_type``."""
        return [torch.softmax(a, dim=-1) for a in self.alphas[cell_type]]

    def edge_mixing(self, cell_type: str) -> tuple[list[torch.Tensor], list[list[int] | None] | None]:
        """What the forward pass of ``cell_type``'s edges uses: per edge, the op weights, and the
        candidate indices of the ops to compute (``None``: all of them; a per-edge ``None``: all
        of that edge's).

        By default the weights are :meth:`edge_weights` (softmax) and every op runs. A strategy
        that samples ops (GDAS: a hard Gumbel-softmax sample, one op per edge) sets
        :attr:`weighting` to an :class:`EdgeWeighting`; a space's network calls this once per
        forward pass and cell type, and hands each edge its weights and ``active`` indices
        (:meth:`MixedOp.forward`). Recorded alphas (:meth:`alpha_softmax`) stay the softmax."""
        if self.weighting is None:
            return self.edge_weights(cell_type), None
        return self.weighting(cell_type, list(self.alphas[cell_type]), self.training)

    @torch.no_grad()
    def alpha_softmax(self) -> dict[str, list[list[float]]]:
        return {ct: [w.tolist() for w in self.edge_weights(ct)] for ct in self.alphas}

    def alpha_grads(self) -> dict[str, list[list[float]]]:
        """The current ``.grad`` of every architecture parameter (zeros where there is none)."""
        return {ct: [(a.grad.detach().cpu().tolist() if a.grad is not None else [0.0] * a.numel())
                     for a in params] for ct, params in self.alphas.items()}

    def num_weights(self) -> int:
        return sum(p.numel() for p in self.weight_parameters())

    def start_epoch(self, epoch: int, epochs: int, warmup: int = 0) -> None:
        """Called by the search engine before every epoch of a stage (again for the epoch a
        resumed run continues): ``epoch`` from 0, the stage's ``epochs`` and its ``warmup``
        epochs. A supernet with a per-epoch schedule of its own (the darts-cell space's skip
        dropout) sets it here; it must depend on these arguments only. Default: nothing."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""


def count_parameters(params: Iterable[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)
