"""The DARTS search strategy: bilevel optimization of weights (SGD) and architecture (Adam).

One :meth:`DartsStrategy.step` is an architecture step on the validation batch (when asked),
then a weight step on the train batch, as in Liu et al. (ICLR 2019):

* **weights**: SGD (momentum, weight decay) on the train loss, gradients clipped to
  ``w_grad_clip``, learning rate annealed by a cosine from ``w_lr`` to ``w_lr_min`` over the
  stage's epochs (stepped once per epoch, in :meth:`~DartsStrategy.end_epoch`).
* **architecture, first order** (``order = 1``): Adam on ``grad_alpha L_val(w, alpha)``.
* **architecture, second order** (``order = 2``): Adam on the unrolled gradient
  ``grad_alpha L_val(w', alpha) - xi * H`` where ``w' = w - xi * (momentum * buf + grad_w
  L_train(w, alpha) + weight_decay * w)`` is the virtual SGD step of the DARTS code (``buf`` the
  SGD momentum buffer, ``xi`` = ``unrolled_lr`` or the current weight lr) and ``H`` approximates
  ``grad^2_{alpha,w} L_train(w, alpha) . grad_w' L_val(w', alpha)`` by central differences:
  ``(grad_alpha L_train(w + eps dw') - grad_alpha L_train(w - eps dw')) / (2 eps)`` with
  ``eps = finite_diff_eps / ||dw'||``.

State rules:

* The architecture step leaves the model exactly as it found it, apart from the alphas: the
  weights are restored bit for bit after the virtual step and the finite-difference probes, and
  the buffers (BatchNorm running statistics) are restored after the step's forward passes, so only
  the weight step's train batch moves running statistics (for both orders).
* After an architecture step every alpha's ``.grad`` holds the (unscaled) gradient Adam used; the
  weight step computes gradients for the weights only (``torch.autograd.grad``), so it neither
  spends work on alpha gradients nor touches the recorded ones. With ``update_alpha=False`` the
  alphas and their ``.grad`` are left alone.

Mixed precision (``amp``), decided in :meth:`~DartsStrategy.setup` from the model's device:

* CUDA: ``"bf16"`` / ``"fp16"`` run every forward pass under ``torch.autocast``; ``"fp16"`` also
  scales losses with a ``GradScaler`` (one for the weight step, one for the architecture step;
  a step whose gradients overflow is skipped, as usual for ``GradScaler``).
* CPU: ``"bf16"`` uses CPU autocast; ``"fp16"`` is ignored (fp32, with a warning): half
  precision on CPU is slower than fp32 and would need loss scaling for no gain.
* other devices: ``amp`` is ignored with a warning.
* The second-order finite-difference probes (the two ``grad_alpha L_train(w +- eps dw')``) always
  run in full precision: the perturbation ``eps dw'`` (total norm ``finite_diff_eps``) is below
  the resolution of half-precision weights, and the difference quotient would be rounding noise.

``Under ``torchrun`` every gradient the step computes is averaged over the ranks right after it is
computed (:func:`nasreg.average_across_ranks_`), so each rank applies the global batch's update.

``compile = true`` runs the supernet's passes through ``torch.compile`` (compiled once per stage
and batch shape, on the first steps; the validation pass between epochs runs uncompiled). The
supernet's steps are dominated by per-op overhead (thousands of small kernels), which is what
compilation removes, but compiling a whole supernet takes minutes: on an H100 machine (torch 2.11)
a 5-cell bf16 search with ``compile = true`` had not finished its first 15 steps after 4 minutes.
It is off by default and its speed-up is unmeasured; the results equal the eager ones (tested).

``channels_last = true`` converts the model's 4-d weights and every 4-d input batch to the
channels-last memory format (faster convolutions on recent GPUs and with oneDNN on CPU).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Annotated, Any, Literal

from nasreg import Range, SearchStrategy

if TYPE_CHECKING:  # pragma: no cover - annotations only: torch is imported by the methods that use it
    import torch
    from torch import nn

    from nasreg import Supernet

    Batch = tuple[torch.Tensor, torch.Tensor]

__all__ = ["DartsStrategy"]

#: The largest float32: what torch turns a larger Python number into when it meets float32 tensors
#: (it raises "value cannot be converted to type float without overflow" instead).
FLOAT32_MAX = 3.4028234663852886e38


def _float32(value: float) -> float:
    """``value`` as a float, at most :data:`FLOAT32_MAX` (the optimizers' numbers meet float32 weights)."""
    return min(float(value), FLOAT32_MAX)


class DartsStrategy(SearchStrategy):
    """DARTS bilevel search: SGD (cosine lr) on weights, Adam on alphas, first or second order."""

    def __init__(
        self,
        order: Literal[1, 2] = 1,
        w_lr: Annotated[float, Range(gt=0)] = 0.025,
        w_lr_min: Annotated[float, Range(ge=0)] = 0.001,
        w_momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9,
        w_weight_decay: Annotated[float, Range(ge=0)] = 3e-4,
        w_grad_clip: Annotated[float, Range(gt=0)] | None = 5.0,
        alpha_lr: Annotated[float, Range(gt=0)] = 3e-4,
        alpha_betas: list[Annotated[float, Range(ge=0, lt=1)]] = [0.5, 0.999],  # noqa: B006 - never mutated
        alpha_weight_decay: Annotated[float, Range(ge=0)] = 1e-3,
        unrolled_lr: Annotated[float, Range(gt=0)] | None = None,
        finite_diff_eps: Annotated[float, Range(gt=0)] = 0.01,
        amp: Literal["off", "bf16", "fp16"] = "off",
        channels_last: bool = False,
        compile: bool = False,  # noqa: A002 - the spec key's name
    ):
        # The spec checker has already enforced the annotations for spec-built strategies; these
        # checks cover direct construction and the combinations an annotation cannot express.
        if order not in (1, 2) or isinstance(order, bool):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        for name, value, lo_open in (("w_lr", w_lr, True), ("alpha_lr", alpha_lr, True),
                                     ("finite_diff_eps", finite_diff_eps, True),
                                     ("w_lr_min", w_lr_min, False), ("w_weight_decay", w_weight_decay, False),
                                     ("alpha_weight_decay", alpha_weight_decay, False)):
            if not (value > 0 if lo_open else value >= 0) or value != value or value == float("inf"):
                raise ValueError(f"{name} must be {'> 0' if lo_open else '>= 0'} and finite, got {value!r}")
        if not 0 <= w_momentum < 1:
            raise ValueError(f"w_momentum must be in [0, 1), got {w_momentum!r}")
        if w_grad_clip is not None and not w_grad_clip > 0:
            raise ValueError(f"w_grad_clip must be > 0 (or unset for no clipping), got {w_grad_clip!r}")
        if unrolled_lr is not None and not unrolled_lr > 0:
            raise ValueError(f"unrolled_lr must be > 0 (or unset to use the current weight lr), got {unrolled_lr!r}")
        if w_lr_min > w_lr:
            raise ValueError(f"w_lr_min ({w_lr_min:g}) must not exceed w_lr ({w_lr:g})")
        betas = list(alpha_betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"alpha_betas must be two numbers in [0, 1), got {alpha_betas!r}")
        if amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"amp must be 'off', 'bf16' or 'fp16', got {amp!r}")

        self.order = int(order)
        # Rates and decays beyond float32 (the weights' precision) act as float32's largest number: an
        # lr of 1e300 diverges on its first step (the divergence message), not in torch's conversion.
        self.w_lr = _float32(w_lr)
        self.w_lr_min = _float32(w_lr_min)
        self.w_momentum = float(w_momentum)
        self.w_weight_decay = _float32(w_weight_decay)
        self.w_grad_clip = None if w_grad_clip is None else float(w_grad_clip)
        self.alpha_betas = (float(betas[0]), float(betas[1]))
        # Adam's first step is alpha_lr / (1 - beta1) (its bias correction): that must fit too.
        self.alpha_lr = min(_float32(alpha_lr), FLOAT32_MAX * (1.0 - self.alpha_betas[0]) / 2)
        self.alpha_weight_decay = _float32(alpha_weight_decay)
        self.unrolled_lr = None if unrolled_lr is None else _float32(unrolled_lr)
        self.finite_diff_eps = _float32(finite_diff_eps)
        self.amp = amp
        self.channels_last = bool(channels_last)
        self.compile = bool(compile)
        self._net: Any = None  # the module the passes call: the supernet, or its torch.compile'd wrapper

        self.model: Supernet | None = None
        self.w_optimizer: torch.optim.SGD | None = None
        self.w_scheduler: torch.optim.lr_scheduler.CosineAnnealingLR | None = None
        self.alpha_optimizer: torch.optim.Adam | None = None
        self.w_scaler: torch.amp.GradScaler | None = None
        self.alpha_scaler: torch.amp.GradScaler | None = None
        self._weights: list[nn.Parameter] = []
        self._alphas: list[nn.Parameter] = []
        self._device: torch.device | None = None  # set by setup()
        self._amp_dtype: torch.dtype | None = None

    @property
    def passes_per_step(self) -> int:
        """Forward + backward passes of one step with an architecture update (first order: the
        alpha step and the weight step; second order: virtual step, validation at w', two
        finite-difference probes, weight step). The pre-flight FLOP estimate uses it."""
        return 2 if self.order == 1 else 5

    @property
    def weight_copies(self) -> int:
        """Weight-sized tensors one step holds: weights, gradients and momentum (3); second order
        also the snapshot, the virtual step and the finite-difference copies (6). The pre-flight
        memory estimate uses it."""
        return 3 if self.order == 1 else 6

    def memory_knobs(self) -> list[str]:
        """Second order holds twice the weight state: first order is the setting that shrinks it."""
        return ["[strategy] order = 1"] if self.order == 2 else []

    def divergence_hint(self) -> str | None:
        return "try a lower [strategy] w_lr or alpha_lr"

    # ------------------------------------------------------------------ setup and schedules

    def setup(self, model: Supernet, *, epochs: int, steps_per_epoch: int) -> None:
        import torch

        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # in place: the Parameter objects are kept
        self.model = model
        # torch.compile'd forward (the Parameters stay the model's, so the optimizers, the in-place
        # weight perturbations of the second-order step and the checkpoints see the same tensors).
        self._net = torch.compile(model, dynamic=False) if self.compile else model
        self._alphas = [p for p in model.arch_parameters() if p.requires_grad]
        self._weights = [p for p in model.weight_parameters() if p.requires_grad]
        if not self._weights:
            raise ValueError("the supernet has no trainable weights")
        self._device = self._weights[0].device

        # foreach: a few calls for all weights (CPU included: same arithmetic as the per-tensor
        # loop, but one dispatch per operation instead of one per weight)
        self._foreach = True if self._device.type in ("cpu", "cuda") else None
        self.w_optimizer = torch.optim.SGD(self._weights, lr=self.w_lr, momentum=self.w_momentum,
                                           weight_decay=self.w_weight_decay, foreach=self._foreach)
        self.w_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optimizer, T_max=epochs,
                                                                      eta_min=self.w_lr_min)
        self.alpha_optimizer = torch.optim.Adam(self._alphas, lr=self.alpha_lr, betas=self.alpha_betas,
                                                weight_decay=self.alpha_weight_decay,
                                                foreach=self._foreach) if self._alphas else None
        self._buffer_snapshot = _Snapshot()  # BN statistics around the architecture step
        self._weight_snapshot = _Snapshot()  # w around the second-order step's virtual step

        self._amp_dtype = None
        self.w_scaler = self.alpha_scaler = None
        kind = self._device.type
        if self.amp == "bf16" and kind in ("cuda", "cpu"):
            self._amp_dtype = torch.bfloat16
        elif self.amp == "fp16" and kind == "cuda":
            self._amp_dtype = torch.float16
            self.w_scaler = torch.amp.GradScaler("cuda")
            self.alpha_scaler = torch.amp.GradScaler("cuda")
        elif self.amp != "off":
            warnings.warn(f"[strategy] amp = {self.amp!r} is not used on device {kind!r}: "
                          "running in full precision", RuntimeWarning, stacklevel=2)

    def end_epoch(self) -> None:
        self._require_setup()
        self.w_scheduler.step()

    def current_lr(self) -> float | None:
        return None if self.w_optimizer is None else float(self.w_optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        self._require_setup()
        state: dict[str, Any] = {
            "w_optimizer": self.w_optimizer.state_dict(),
            "w_scheduler": self.w_scheduler.state_dict(),
            "alpha_optimizer": None if self.alpha_optimizer is None else self.alpha_optimizer.state_dict(),
        }
        if self.w_scaler is not None:
            state["w_scaler"] = self.w_scaler.state_dict()
            state["alpha_scaler"] = self.alpha_scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore optimizers, schedule and loss scalers; call after :meth:`setup`."""
        self._require_setup()
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.w_scheduler.load_state_dict(state["w_scheduler"])
        if self.alpha_optimizer is not None and state.get("alpha_optimizer") is not None:
            self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        if self.w_scaler is not None and "w_scaler" in state:
            self.w_scaler.load_state_dict(state["w_scaler"])
            self.alpha_scaler.load_state_dict(state["alpha_scaler"])

    # ------------------------------------------------------------------ the search step

    def step(self, train_batch: Batch, val_batch: Batch, *, update_alpha: bool) -> dict[str, float]:
        import torch

        self._require_setup()
        xt, yt = self._prepare(train_batch)
        val_loss = None
        if update_alpha and self._alphas:
            xv, yv = self._prepare(val_batch)
            if self.order == 1:
                val_loss = self._arch_step_first_order(xv, yv)
            else:
                val_loss = self._arch_step_second_order(xt, yt, xv, yv)
        train_loss, correct = self._weight_step(xt, yt)

        # One device-to-host transfer for everything the step reports.
        parts = [train_loss, correct, val_loss] if val_loss is not None else [train_loss, correct]
        dtype = torch.float32 if self._device.type == "mps" else torch.float64
        values = torch.stack([t.detach().to(dtype) for t in parts]).tolist()
        out: dict[str, Any] = {"train_loss": values[0], "train_correct": int(values[1]),
                               "train_count": int(yt.shape[0])}
        if val_loss is not None:
            out["val_loss"] = values[2]
        return out

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SGD on the train batch; gradients for the weights only (alpha grads stay as recorded)."""
        import torch
        import torch.nn.functional as F
        from torch import nn

        from nasreg import average_across_ranks_ as average_

        with self._autocast():
            logits = self._net(x)
            loss = F.cross_entropy(logits, y)
        scaler = self.w_scaler
        grads = torch.autograd.grad(scaler.scale(loss) if scaler is not None else loss, self._weights,
                                    allow_unused=True)
        average_(grads)  # under torchrun: the global batch's gradient
        for p, g in zip(self._weights, grads):
            p.grad = g
        if scaler is not None:
            scaler.unscale_(self.w_optimizer)
        if self.w_grad_clip is not None:
            nn.utils.clip_grad_norm_(self._weights, self.w_grad_clip, foreach=self._foreach)
        if scaler is not None:
            scaler.step(self.w_optimizer)
            scaler.update()
        else:
            self.w_optimizer.step()
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == y).sum()
        return loss.detach(), correct

    def _arch_step_first_order(self, xv: torch.Tensor, yv: torch.Tensor) -> torch.Tensor:
        """Adam on grad_alpha L_val(w, alpha): one forward, one backward restricted to the alphas."""
        import torch
        import torch.nn.functional as F

        from nasreg import average_across_ranks_ as average_

        buffers = self._buffer_snapshot.take(self.model.buffers())
        scaler = self.alpha_scaler
        with self._autocast():
            loss = F.cross_entropy(self._net(xv), yv)
        grads = torch.autograd.grad(scaler.scale(loss) if scaler is not None else loss, self._alphas,
                                    materialize_grads=True)
        average_(grads)
        buffers.restore()
        self._alpha_update(grads, scaled=scaler is not None)
        return loss.detach()

    def _arch_step_second_order(self, xt: torch.Tensor, yt: torch.Tensor,
                                xv: torch.Tensor, yv: torch.Tensor) -> torch.Tensor:
        """Adam on the DARTS unrolled gradient (see the module docstring)."""
        import torch
        import torch.nn.functional as F

        from nasreg import average_across_ranks_ as average_

        model, W, A = self._net, self._weights, self._alphas
        xi = self.unrolled_lr if self.unrolled_lr is not None else float(self.w_optimizer.param_groups[0]["lr"])
        scaler = self.alpha_scaler
        inv_scale = None
        if scaler is not None:  # the current scale as a tensor, without a host sync
            inv_scale = scaler.scale(torch.ones((), device=self._device)).reciprocal()

        def scaled(loss: torch.Tensor) -> torch.Tensor:
            return scaler.scale(loss) if scaler is not None else loss

        buffers = self._buffer_snapshot.take(self.model.buffers())
        w0 = self._weight_snapshot.take(W)

        # Virtual step w' = w - xi * (momentum * buf + grad_w L_train + wd * w), as in DARTS.
        with self._autocast():
            loss_t = F.cross_entropy(model(xt), yt)
        g = torch.autograd.grad(scaled(loss_t), W, materialize_grads=True)
        average_(g)
        del loss_t
        with torch.no_grad():
            d = list(g) if inv_scale is None else torch._foreach_mul(g, inv_scale)
            del g
            if self.w_weight_decay:
                torch._foreach_add_(d, W, alpha=self.w_weight_decay)
            if self.w_momentum:
                state = self.w_optimizer.state
                pairs = [(di, state[p]["momentum_buffer"]) for di, p in zip(d, W)
                         if p in state and state[p].get("momentum_buffer") is not None]
                if pairs:
                    torch._foreach_add_([a for a, _ in pairs], [b for _, b in pairs], alpha=self.w_momentum)
            torch._foreach_add_(W, d, alpha=-xi)
            del d

        # Gradients of L_val at w' for alphas and weights: one backward.
        with self._autocast():
            loss_v = F.cross_entropy(model(xv), yv)
        grads = torch.autograd.grad(scaled(loss_v), A + W, materialize_grads=True)
        average_(grads)
        loss_v = loss_v.detach()
        with torch.no_grad():
            dalpha, dw = list(grads[:len(A)]), list(grads[len(A):])
            del grads
            if inv_scale is not None:
                dalpha = torch._foreach_mul(dalpha, inv_scale)
                dw = torch._foreach_mul(dw, inv_scale)
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(dw)))
            eps = self.finite_diff_eps / norm.clamp_min(1e-12)  # a tensor: no host sync
            torch._foreach_mul_(dw, eps)  # dw now holds eps * dw'

        # Central differences at w +- eps dw' (full precision), then restore w exactly.
        probes = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                torch._foreach_copy_(W, w0.copies)
                torch._foreach_add_(W, dw, alpha=sign)
            loss_p = F.cross_entropy(model(xt), yt)
            probes.append(torch.autograd.grad(loss_p, A, materialize_grads=True))
            average_(probes[-1])
            del loss_p
        with torch.no_grad():
            w0.restore()
            buffers.restore()
            del dw
            # grad = dalpha - xi * (g+ - g-) / (2 eps)
            hessian = torch._foreach_sub(probes[0], probes[1])
            torch._foreach_div_(hessian, 2 * eps)
            torch._foreach_add_(dalpha, hessian, alpha=-xi)
            if scaler is not None:  # hand the scaler scaled grads so that it can check and unscale them
                torch._foreach_div_(dalpha, inv_scale)
        self._alpha_update(dalpha, scaled=scaler is not None)
        return loss_v

    def _alpha_update(self, grads: Any, *, scaled: bool) -> None:
        """Set every alpha's ``.grad`` (replacing the last step's) and take the Adam step."""
        for p, g in zip(self._alphas, grads):
            p.grad = g.detach()
        if scaled:
            self.alpha_scaler.unscale_(self.alpha_optimizer)  # .grad now holds the true gradient
            self.alpha_scaler.step(self.alpha_optimizer)
            self.alpha_scaler.update()
        else:
            self.alpha_optimizer.step()

    # ------------------------------------------------------------------ helpers

    def _require_setup(self) -> None:
        if self.model is None:
            raise RuntimeError("DartsStrategy.setup() has not been called")

    def _prepare(self, batch: Batch) -> Batch:
        import torch

        x, y = batch
        x = x.to(self._device, non_blocking=True)
        y = y.to(self._device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self._device.type, dtype=self._amp_dtype)


class _Snapshot:
    """An exact copy of many tensors (weights, BN buffers) in storage kept between steps: taking it
    again of the same tensors is one foreach copy, restoring it another (a few thousand BN buffers
    would otherwise cost a few thousand calls per step). ``copies[i]`` is the saved value of
    ``tensors[i]``; new storage is made when the tensors are others or have changed shape, dtype
    or device (``.to()`` replaces a module's tensors' data)."""

    def __init__(self) -> None:
        self.tensors: list[Any] = []
        self.copies: list[Any] = []

    def take(self, tensors: Any) -> "_Snapshot":
        import torch

        tensors = list(tensors)
        same = len(tensors) == len(self.tensors) and all(
            a is b and a.shape == c.shape and a.dtype == c.dtype and a.device == c.device
            for a, b, c in zip(tensors, self.tensors, self.copies))
        with torch.no_grad():
            if same:
                if tensors:
                    torch._foreach_copy_(self.copies, tensors)
            else:
                self.tensors = tensors
                self.copies = [t.detach().clone() for t in tensors]
        return self

    def restore(self) -> None:
        import torch

        if self.tensors:
            with torch.no_grad():
                torch._foreach_copy_(self.tensors, self.copies)
