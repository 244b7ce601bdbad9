"""The collapse monitor of a supernet search: curvature of the validation loss in the architecture.

Zela, Elsken, Saikia, Marrakchi, Brox, Hutter, "Understanding and Robustifying Differentiable
Architecture Search" (ICLR 2020; reference code github.com/automl/RobustDARTS) show that DARTS
collapses (parameter-free ops, skip connections above all, take over the derived cell) while the
dominant eigenvalue of the Hessian of the validation loss w.r.t. the architecture parameters,
``nabla^2_alpha L_val``, grows. With ``[search] monitor = true`` the engine measures, after every
epoch of every stage:

* ``hessian_max_eig``: that eigenvalue, the one largest in magnitude, with its sign, by power
  iteration on Hessian-vector products (:func:`dominant_eigenvalue`; the Hessian is never formed);
* ``skip_connects``: per cell type, how many edges of the cell the space's derivation rule would
  keep NOW (:meth:`nasreg.SearchSpace.derive` over the current alphas) carry an op whose registry
  metadata says ``kind = "identity"`` (:func:`identity_edges`).

**The early stop (DARTS-ES).** The paper stops the search at epoch ``i`` when
``mean_lambda(i - k) / mean_lambda(i) < 0.75`` with ``k = 5`` (local averages of the dominant
eigenvalue) and returns the architecture of epoch ``i - k``. The reference code
(``src/utils.py`` ``EVLocalAvg.early_stop``, ``src/search/args.py``) measures the eigenvalue every
2 epochs (``--report_freq_hessian 2`` in ``scripts/DARTS-ADA_search.sh``), averages ``--window 5``
measurements centred on an epoch, compares the newest average with the one ``--delta 4`` averages
before (8 epochs), stops when their ratio exceeds ``--factor 1.3`` (1 / 1.3 = 0.77, the paper's
0.75 rounded) once the stop epoch is at least ``--es_start_epoch 10``, and returns the genotype of
the stop epoch. nasreg measures every epoch and uses trailing windows: :func:`early_stop_fires`
fires at joint epoch ``i`` when the mean over the last ``monitor_window`` (5) joint epochs'
eigenvalues exceeds ``monitor_ratio`` (1.3) times the mean over the ``monitor_window`` epochs
before them (so never before ``2 * window`` joint epochs, which plays ``es_start_epoch``'s part);
the stage then ends and its result carries the alphas recorded ``window`` epochs before (the last
epoch of the earlier window). A non-positive earlier mean never fires (the ratio means nothing).

**What the measurement touches: nothing.** The validation batch is fixed per stage and drawn by a
generator of its own (:func:`fixed_batch`), never from the loaders' RNG; the torch RNG states are
forked around the measurement; every module's training flag and every buffer (BatchNorm running
statistics and ``num_batches_tracked``) is saved and restored; ``torch.autograd.grad`` fills no
``.grad``. A run with the monitor on therefore trains exactly as one without it. The model is
measured in the mode the per-epoch validation uses (``[search] eval_batch_norm``): eval mode,
with BatchNorm normalizing by the batch's statistics (``"batch"``) or by its running averages
(``"running"``). Under torchrun every rank measures the same batch on the same weights with its
BatchNorms local (:func:`nasreg._core.distributed.local_batch_norm`: no collective inside the double
backward), and rank 0's figures are broadcast, so every rank takes the same early-stop decision.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as ddp
from .errors import SpecError

__all__ = ["CollapseMonitor", "dominant_eigenvalue", "early_stop_fires", "fixed_batch", "hessian_vector_product",
           "identity_edges", "measurement_mode"]

#: The registry metadata value of ``kind`` that counts as a skip connection.
IDENTITY_KIND = "identity"


# --- the linear algebra ---------------------------------------------------------------------------

def hessian_vector_product(grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                           vector: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``H v`` for the Hessian of the loss whose gradient ``grads`` (w.r.t. ``params``, computed
    with ``create_graph=True``) is: the gradient of ``grads . v`` (double backward)."""
    dot = sum((g * v).sum() for g, v in zip(grads, vector) if g.requires_grad)
    hv = torch.autograd.grad(dot, list(params), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(hv, params)]


def dominant_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], *,
                        iterations: int = 20, tol: float = 1e-3, seed: int = 0) -> tuple[float, int]:
    """The eigenvalue of ``nabla^2 loss_fn()`` w.r.t. ``params`` largest in magnitude, with its sign,
    and the power iterations it took: ``(value, iterations)``.

    One forward and one backward pass build the gradient graph; each iteration is one Hessian-vector
    product, ``v <- H v / |H v|`` from a normal start vector drawn by a generator seeded with
    ``seed`` (not the global RNG). The estimate is the Rayleigh quotient ``v . H v`` of the unit
    ``v``; the iteration stops when it changes by at most ``tol`` relative (or after
    ``iterations``)."""
    params = list(params)
    loss = loss_fn()
    # An unused parameter (a cell type the network never builds) has a zero row and column.
    used = [(i, g) for i, g in enumerate(torch.autograd.grad(loss, params, create_graph=True, allow_unused=True))
            if g is not None and g.requires_grad]
    if not used:
        return 0.0, 0
    grads = [torch.zeros_like(p) for p in params]
    for i, g in used:
        grads[i] = g
    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) for p in params]
    v = _normalized(v)
    value, done = 0.0, 0
    for done in range(1, iterations + 1):
        hv = hessian_vector_product(grads, params, v)
        new = float(sum((a * b).sum() for a, b in zip(v, hv)))
        norm = math.sqrt(float(sum((h * h).sum() for h in hv)))
        if norm == 0.0:  # H v = 0: v is in the null space (a zero Hessian: 0 is the answer)
            value = new
            break
        converged = done > 1 and abs(new - value) <= tol * max(abs(new), 1e-12)
        value = new
        if converged:
            break
        v = [h / norm for h in hv]
    return value, done


def _normalized(v: list[torch.Tensor]) -> list[torch.Tensor]:
    norm = math.sqrt(float(sum((x * x).sum() for x in v))) or 1.0
    return [x / norm for x in v]


# --- the early-stop rule --------------------------------------------------------------------------

def early_stop_fires(eigenvalues: Sequence[float], window: int, ratio: float) -> bool:
    """DARTS-ES on trailing windows (see the module docstring): True when the mean of the last
    ``window`` values exceeds ``ratio`` times the mean of the ``window`` values before them (a
    non-positive earlier mean never fires; fewer than ``2 * window`` values never fire)."""
    if window < 1 or len(eigenvalues) < 2 * window:
        return False
    recent = sum(eigenvalues[-window:]) / window
    before = sum(eigenvalues[-2 * window:-window]) / window
    return before > 0 and recent / before > ratio


# --- what the derivation keeps --------------------------------------------------------------------

def identity_edges(space: Any, candidates: dict[str, list[list[str]]], alphas: dict[str, list[list[float]]],
                   operations: Any, zero_ops: set[str]) -> dict[str, int] | None:
    """Per cell type, the kept edges of the cell ``space.derive`` makes of ``alphas`` whose op's
    registry metadata has ``kind == "identity"``; None for a space without a derivation rule."""
    from .selector import StageResult

    result = StageResult(stage=0, candidates=candidates, edges=space.edges(), alphas=alphas)
    try:
        kept = space.derive(result, zero_ops)
    except (SpecError, NotImplementedError):
        return None
    return {ct: sum(1 for e in edges if operations.get(e.op).get("kind") == IDENTITY_KIND)
            for ct, edges in kept.items()}


# --- the measurement ------------------------------------------------------------------------------

def fixed_batch(dataset: Any, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` items of ``dataset`` (at most all of them) picked by a generator seeded with
    ``seed``, stacked: the same batch every time, without drawing from any other RNG."""
    n = len(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max(1, min(size, n))].tolist()
    items = [dataset[i] for i in order]
    xs = torch.stack([torch.as_tensor(x) for x, _y in items])
    ys = torch.as_tensor([int(y) for _x, y in items], dtype=torch.long)
    return xs, ys


@contextlib.contextmanager
def measurement_mode(model: nn.Module, batch_norm_stats: bool) -> Iterator[None]:
    """Put ``model`` in the per-epoch validation's mode (eval; BatchNorm on the batch's statistics
    with ``batch_norm_stats``) for the block, then restore every module's training flag, every
    buffer and the torch RNG states exactly (see the module docstring)."""
    flags = [(m, m.training) for m in model.modules()]
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    devices = sorted({b.device.index or 0 for b in [*model.parameters(), *model.buffers()]
                      if b.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), ddp.local_batch_norm(model):
        try:
            model.eval()
            if batch_norm_stats:
                for m in model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.train()
            yield
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():  # by name: a module may rebind a buffer
                    if name in buffers:
                        b.copy_(buffers[name])
            for m, training in flags:
                m.training = training


class CollapseMonitor:
    """One stage's monitor: its fixed validation batch and what it measures on the supernet."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], *, iterations: int, tol: float,
                 batch_norm_stats: bool, space: Any, operations: Any, zero_ops: set[str], seed: int = 0):
        self.batch, self.iterations, self.tol = batch, iterations, tol
        self.batch_norm_stats, self.space, self.operations, self.zero_ops = batch_norm_stats, space, operations, zero_ops
        self.seed = seed

    @staticmethod
    def check(model: Any, where: str) -> None:
        """Refuse a supernet without architecture parameters (no Hessian to take)."""
        params = model.arch_parameters() if hasattr(model, "arch_parameters") else []
        if not params:
            raise SpecError(f"{where}: the supernet ({type(model).__name__}) has no architecture parameters "
                            "(arch_parameters() is empty), so there is no curvature to monitor; set monitor = false")

    def measure(self, model: Any, device: torch.device) -> dict[str, Any]:
        """``{"hessian_max_eig", "monitor_iterations_run", "skip_connects"}`` of ``model`` now
        (rank 0's figures under torchrun)."""
        x, y = (t.to(device) for t in self.batch)
        params = list(model.arch_parameters())
        with measurement_mode(model, self.batch_norm_stats):
            def loss() -> torch.Tensor:
                out = model(x)
                return F.cross_entropy((out[0] if isinstance(out, tuple) else out).float(), y)

            value, done = dominant_eigenvalue(loss, params, iterations=self.iterations, tol=self.tol, seed=self.seed)
        skips = identity_edges(self.space, model.candidates, model.alpha_softmax(), self.operations, self.zero_ops)
        figures = {"hessian_max_eig": value, "monitor_iterations_run": done}
        if skips is not None:
            figures["skip_connects"] = skips
        return ddp.broadcast_object(figures)
