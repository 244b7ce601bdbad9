"""The GDAS search strategy (Dong and Yang, CVPR 2019): a Gumbel-softmax sampled sub-graph per step.

Per training forward pass and cell type, every edge samples one op
(:class:`GumbelSampler`, the supernet's :attr:`nasreg.Supernet.weighting`)::

    g      = -log(Exponential(1))                   (Gumbel noise, one per candidate)
    probs  = softmax((log_softmax(alpha) + g) / tau)
    index  = argmax(probs)
    weight = one_hot(index) - probs.detach() + probs (straight-through)

The forward value of ``weight`` is the one-hot vector (1 for the sampled op, 0 elsewhere; up to
float rounding), and only the sampled op is computed (the space's cell honours the ``active``
indices, see :meth:`nasreg.Supernet.edge_mixing`); its backward is the soft ``probs``'s, so the
gradient reaches every alpha of the edge through the sampled op's weight. A sample whose noise
or probabilities are not finite is drawn again, as the reference code does (at most
:data:`MAX_RESAMPLES` times; non-finite alphas then surface as the engine's divergence error).
Every cell of a type shares its type's sample, as in the reference code (one alpha matrix per
cell type). In eval mode (the engine's validation after each epoch) edges mix all their ops with
plain softmax(alpha) weights, as DARTS does; the recorded alphas (``alpha_softmax``) are the
softmax too, and the ``argmax`` selector derives the genotype from them.

The temperature falls linearly per epoch from ``tau_max`` (first epoch) to ``tau_min`` (last
epoch): ``tau(e) = tau_max - (tau_max - tau_min) * e / (epochs - 1)`` over the stage's epochs
(warm-up epochs included), the reference code's schedule (``exps/NAS-Bench-201-algos/GDAS.py``).

One :meth:`GdasStrategy.step` follows the reference code's ``search_func``: first the weight
step on the train batch (SGD with Nesterov momentum, gradient norm clipped to ``grad_clip``,
cosine learning rate from ``w_lr`` to ``w_lr_min`` per epoch), then, when ``update_alpha``, the
architecture step on the validation batch (Adam), each through a sampled network of its own.
The weights of ops not sampled get no gradient and so no update (no weight decay, no momentum
step), as with the reference's ``zero_grad`` (gradients set to ``None``). Differences from the
reference code, kept small: the clipping covers the weights only (the reference clips every
parameter's gradient, the alphas' stale ones included), and the architecture step computes
gradients for the alphas only.

Defaults are the reference code's CIFAR-10 NASNet-space search
(``scripts-search/NASNet-space-search-by-GDAS.sh`` with ``configs/search-opts/GDAS-NASNet-CIFAR.config``):
SGD lr 0.025 cosine to 0.001, momentum 0.9, Nesterov, weight decay 5e-4, gradient norm clip 5;
Adam lr 3e-4, betas (0.5, 0.999), weight decay 1e-3; tau 10 to 0.1.

Resume is exact: :meth:`~GdasStrategy.state_dict` holds the optimizers, the learning-rate
schedule, the temperature schedule's position (the epoch) and the state of the sampler's own
random generator (seeded in :meth:`~GdasStrategy.setup` from torch's global generator, so from
``[run] seed``; the sampling draws nothing from the global generators).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from nasreg import Range, SearchStrategy

if TYPE_CHECKING:  # pragma: no cover - annotations only: torch is imported by the methods that use it
    import torch
    from torch import nn

    from nasreg import Supernet

    Batch = tuple[torch.Tensor, torch.Tensor]

__all__ = ["GdasStrategy", "GumbelSampler", "tau_at"]

#: Resamples of one Gumbel draw whose noise or probabilities are not finite, before giving up.
MAX_RESAMPLES = 100


def tau_at(epoch: int, epochs: int, tau_max: float, tau_min: float) -> float:
    """The temperature of ``epoch`` (from 0) of ``epochs``: linear from ``tau_max`` at the first
    epoch to ``tau_min`` at the last (``tau_max`` when there is one epoch; ``tau_min`` after the last)."""
    if epochs <= 1:
        return float(tau_max)
    e = min(max(epoch, 0), epochs - 1)
    return float(tau_max - (tau_max - tau_min) * e / (epochs - 1))


class GumbelSampler:
    """A :class:`nasreg.EdgeWeighting`: hard Gumbel-softmax samples while training (one op per
    edge, straight-through weights), softmax over every op in eval mode.

    ``tau`` is the current temperature (the strategy sets it each epoch); ``generator`` the
    :class:`torch.Generator` the noise is drawn from (on the alphas' device). ``samples`` counts
    the draws, ``resamples`` the draws repeated because they were not finite."""

    def __init__(self, generator: torch.Generator, tau: float):
        self.generator = generator
        self.tau = float(tau)
        self.samples = 0
        self.resamples = 0

    def __call__(self, cell_type: str, alphas: list[torch.Tensor], training: bool
                 ) -> tuple[list[torch.Tensor], list[list[int] | None] | None]:
        import torch

        if not training:
            return [torch.softmax(a, dim=-1) for a in alphas], None
        sizes = {a.numel() for a in alphas}
        if len(sizes) == 1:  # every edge has as many candidates: one draw for the whole cell type
            weights, index = self.sample(torch.stack(list(alphas)))
            return list(weights.unbind(0)), [[i] for i in index]
        weights, active = [], []
        for a in alphas:
            w, index = self.sample(a.unsqueeze(0))
            weights.append(w[0])
            active.append(index)
        return weights, active

    def sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Straight-through hard Gumbel-softmax weights of each row of ``logits`` (edges x
        candidates), and each row's sampled index (one host transfer per draw)."""
        import torch

        for _ in range(MAX_RESAMPLES):
            self.samples += 1
            noise = torch.empty_like(logits, memory_format=torch.contiguous_format)
            gumbels = -noise.exponential_(generator=self.generator).log()
            probs = torch.softmax((torch.log_softmax(logits, dim=-1) + gumbels) / self.tau, dim=-1)
            index = probs.detach().argmax(dim=-1)
            finite = torch.isfinite(gumbels).all() & torch.isfinite(probs.detach()).all()
            values = torch.cat([index, finite.long().view(1)]).tolist()
            if values[-1]:
                break
            self.resamples += 1
        hard = torch.zeros_like(probs).scatter_(-1, index.unsqueeze(-1), 1.0)
        return hard - probs.detach() + probs, values[:-1]


class GdasStrategy(SearchStrategy):
    """GDAS: per edge one Gumbel-softmax sampled op, straight-through gradients, tau annealed."""

    def __init__(
        self,
        tau_max: Annotated[float, Range(gt=0)] = 10.0,
        tau_min: Annotated[float, Range(gt=0)] = 0.1,
        w_lr: Annotated[float, Range(gt=0)] = 0.025,
        w_lr_min: Annotated[float, Range(ge=0)] = 0.001,
        w_momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9,
        w_nesterov: bool = True,
        w_weight_decay: Annotated[float, Range(ge=0)] = 5e-4,
        alpha_lr: Annotated[float, Range(gt=0)] = 3e-4,
        alpha_betas: list[Annotated[float, Range(ge=0, lt=1)]] = [0.5, 0.999],  # noqa: B006 - never mutated
        alpha_weight_decay: Annotated[float, Range(ge=0)] = 1e-3,
        grad_clip: Annotated[float, Range(gt=0)] | None = 5.0,
    ):
        """Defaults: the reference code's CIFAR-10 search (see the module docstring).

        Args:
            tau_max: Gumbel-softmax temperature of the first epoch (reference: 10).
            tau_min: temperature of the last epoch, reached linearly (reference: 0.1).
            w_lr: weights' SGD learning rate at the start (reference: 0.025).
            w_lr_min: the learning rate the cosine schedule ends at (reference: 0.001).
            w_momentum: weights' SGD momentum (reference: 0.9).
            w_nesterov: Nesterov momentum (reference: on); needs w_momentum > 0.
            w_weight_decay: weights' L2 weight decay (reference: 5e-4).
            alpha_lr: alphas' Adam learning rate (reference: 3e-4).
            alpha_betas: alphas' Adam betas (reference: [0.5, 0.999]).
            alpha_weight_decay: alphas' Adam weight decay (reference: 1e-3).
            grad_clip: bound on the weights' gradient norm; unset: no clipping (reference: 5).
        """
        # The spec checker has already enforced the annotations for spec-built strategies; these
        # checks cover direct construction and the combinations an annotation cannot express.
        for name, value, open_ in (("tau_max", tau_max, True), ("tau_min", tau_min, True),
                                   ("w_lr", w_lr, True), ("alpha_lr", alpha_lr, True),
                                   ("w_lr_min", w_lr_min, False), ("w_weight_decay", w_weight_decay, False),
                                   ("alpha_weight_decay", alpha_weight_decay, False)):
            if isinstance(value, bool) or not (value > 0 if open_ else value >= 0) or value == float("inf"):
                raise ValueError(f"{name} must be {'> 0' if open_ else '>= 0'} and finite, got {value!r}")
        if tau_min > tau_max:
            raise ValueError(f"tau_min ({tau_min:g}) must not exceed tau_max ({tau_max:g})")
        if w_lr_min > w_lr:
            raise ValueError(f"w_lr_min ({w_lr_min:g}) must not exceed w_lr ({w_lr:g})")
        if not 0 <= w_momentum < 1:
            raise ValueError(f"w_momentum must be in [0, 1), got {w_momentum!r}")
        if w_nesterov and w_momentum == 0:
            raise ValueError("w_nesterov = true needs w_momentum > 0 (Nesterov momentum without momentum)")
        if grad_clip is not None and not (grad_clip > 0 and grad_clip != float("inf")):
            raise ValueError(f"grad_clip must be > 0 and finite (or unset for no clipping), got {grad_clip!r}")
        betas = list(alpha_betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"alpha_betas must be two numbers in [0, 1), got {alpha_betas!r}")

        self.tau_max, self.tau_min = float(tau_max), float(tau_min)
        self.w_lr, self.w_lr_min = float(w_lr), float(w_lr_min)
        self.w_momentum, self.w_nesterov = float(w_momentum), bool(w_nesterov)
        self.w_weight_decay = float(w_weight_decay)
        self.alpha_lr = float(alpha_lr)
        self.alpha_betas = (float(betas[0]), float(betas[1]))
        self.alpha_weight_decay = float(alpha_weight_decay)
        self.grad_clip = None if grad_clip is None else float(grad_clip)

        self.model: Supernet | None = None
        self.sampler: GumbelSampler | None = None
        self.epochs = 1
        self.epoch = 0  # the temperature schedule's position: epochs ended in this stage
        self.w_optimizer: torch.optim.SGD | None = None
        self.w_scheduler: torch.optim.lr_scheduler.CosineAnnealingLR | None = None
        self.alpha_optimizer: torch.optim.Adam | None = None
        self._weights: list[nn.Parameter] = []
        self._alphas: list[nn.Parameter] = []
        self._device: torch.device | None = None

    #: A step is a weight step and an architecture step, each one forward and backward pass of
    #: the sampled network (the pre-flight FLOP estimate counts the whole supernet: an upper bound).
    passes_per_step = 2
    #: Weights, their gradients, the momentum buffer.
    weight_copies = 3

    def divergence_hint(self) -> str | None:
        return "try a lower [strategy] w_lr or alpha_lr, or a higher tau_min"

    @property
    def tau(self) -> float:
        """The temperature the current epoch samples with."""
        return tau_at(self.epoch, self.epochs, self.tau_max, self.tau_min)

    # ------------------------------------------------------------------ setup and schedules

    def setup(self, model: Supernet, *, epochs: int, steps_per_epoch: int) -> None:
        import torch

        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.model, self.epochs, self.epoch = model, int(epochs), 0
        self._alphas = [p for p in model.arch_parameters() if p.requires_grad]
        self._weights = [p for p in model.weight_parameters() if p.requires_grad]
        if not self._weights:
            raise ValueError("the supernet has no trainable weights")
        self._device = self._weights[0].device
        alpha_device = model.alpha_parameters()[0].device if model.alpha_parameters() else self._device

        generator = torch.Generator(device=alpha_device)
        generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))  # from [run] seed, via torch's generator
        self.sampler = GumbelSampler(generator, self.tau)
        model.weighting = self.sampler

        self._foreach = True if self._weights[0].device.type in ("cpu", "cuda") else None  # one call per operation
        self.w_optimizer = torch.optim.SGD(self._weights, lr=self.w_lr, momentum=self.w_momentum,
                                           weight_decay=self.w_weight_decay, nesterov=self.w_nesterov,
                                           foreach=self._foreach)
        self.w_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optimizer, T_max=epochs,
                                                                      eta_min=self.w_lr_min)
        self.alpha_optimizer = torch.optim.Adam(self._alphas, lr=self.alpha_lr, betas=self.alpha_betas,
                                                weight_decay=self.alpha_weight_decay,
                                                foreach=self._foreach) if self._alphas else None

    def end_epoch(self) -> None:
        self._require_setup()
        self.w_scheduler.step()
        self.epoch += 1
        self.sampler.tau = self.tau

    def current_lr(self) -> float | None:
        return None if self.w_optimizer is None else float(self.w_optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        self._require_setup()
        return {
            "w_optimizer": self.w_optimizer.state_dict(),
            "w_scheduler": self.w_scheduler.state_dict(),
            "alpha_optimizer": None if self.alpha_optimizer is None else self.alpha_optimizer.state_dict(),
            "epoch": self.epoch,
            "generator": self.sampler.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore optimizers, schedules and the sampler's generator; call after :meth:`setup`."""
        self._require_setup()
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.w_scheduler.load_state_dict(state["w_scheduler"])
        if self.alpha_optimizer is not None and state.get("alpha_optimizer") is not None:
            self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.epoch = int(state["epoch"])
        self.sampler.tau = self.tau
        self.sampler.generator.set_state(state["generator"])

    # ------------------------------------------------------------------ the search step

    def step(self, train_batch: Batch, val_batch: Batch, *, update_alpha: bool) -> dict[str, float]:
        import torch

        self._require_setup()
        xt, yt = (t.to(self._device, non_blocking=True) for t in train_batch)
        train_loss, correct = self._weight_step(xt, yt)
        val_loss = None
        if update_alpha and self._alphas:
            xv, yv = (t.to(self._device, non_blocking=True) for t in val_batch)
            val_loss = self._arch_step(xv, yv)
        parts = [train_loss, correct] + ([val_loss] if val_loss is not None else [])
        dtype = torch.float32 if self._device.type == "mps" else torch.float64
        values = torch.stack([t.detach().to(dtype) for t in parts]).tolist()  # one host transfer
        out: dict[str, Any] = {"train_loss": values[0], "train_correct": int(values[1]),
                               "train_count": int(yt.shape[0])}
        if val_loss is not None:
            out["val_loss"] = values[2]
        return out

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SGD on the train batch through a sampled network; the ops not sampled get no gradient
        (``None``: SGD leaves them and their momentum alone). Alpha gradients are not touched."""
        import torch
        import torch.nn.functional as F
        from torch import nn

        from nasreg import average_across_ranks_ as average_

        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, self._weights, allow_unused=True)
        average_(grads)
        for p, g in zip(self._weights, grads):
            p.grad = g
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self._weights, self.grad_clip, foreach=self._foreach)
        self.w_optimizer.step()
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == y).sum()
        return loss.detach(), correct

    def _arch_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adam on grad_alpha L_val through a sampled network (straight-through gradients); every
        alpha's ``.grad`` is left holding the gradient used."""
        import torch
        import torch.nn.functional as F

        from nasreg import average_across_ranks_ as average_

        loss = F.cross_entropy(self.model(x), y)
        grads = torch.autograd.grad(loss, self._alphas, materialize_grads=True)
        average_(grads)
        for p, g in zip(self._alphas, grads):
            p.grad = g.detach()
        self.alpha_optimizer.step()
        return loss.detach()

    def _require_setup(self) -> None:
        if self.model is None:
            raise RuntimeError("GdasStrategy.setup() has not been called")
