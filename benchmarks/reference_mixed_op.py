"""A faithful, naive re-implementation of the reference DARTS search network and search step.

Used only as the in-run baseline of ``benchmarks/search_speed.py``; never imported by nasreg or its
tests. It follows the structure of the original DARTS code (Liu et al., ``cnn/operations.py``,
``cnn/model_search.py``, ``cnn/architect.py``) as the paper and that code describe it:

* every candidate op is computed on every edge, the zero op included (``x.mul(0.)``, strided by
  slicing at stride 2);
* a mixed op is the Python ``sum(w * op(x) for w, op in zip(weights, self._ops))``, a node is the
  Python ``sum`` of its mixed ops;
* pools are followed by ``BatchNorm2d(C, affine=False)``; every other op is built with
  ``affine=False``; ReLUs are out of place;
* alphas are one (edges, ops) tensor per cell type, softmaxed per cell in the forward pass;
* the architecture step calls ``loss.backward()`` (gradients of every weight are computed and
  thrown away), the weight step calls ``loss.backward()`` (alpha gradients computed too);
* second order builds a fresh copy of the network for the unrolled model on every step
  (``model.new()`` + ``load_state_dict``), as ``architect.py`` does, flattens weights and
  gradients into one vector, and takes the finite-difference Hessian-vector product with two more
  forward/backward passes.

Per-edge candidate sets (DG-DARTS stage 1) are supported the naive way too: an edge's mixed op
holds the ops of its set and its alpha is its own vector (softmaxed per edge).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


class ReLUConvBN(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding,
                      dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, groups=C_in,
                      bias=False),
            nn.Conv2d(C_in, C_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.)
        return x[:, :, ::self.stride, ::self.stride].mul(0.)


class FactorizedReduce(nn.Module):
    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        assert C_out % 2 == 0
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
        return self.bn(out)


OPS = {
    "none": lambda C, stride, affine: Zero(stride),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
}


class MixedOp(nn.Module):
    def __init__(self, C, stride, primitives=PRIMITIVES):
        super().__init__()
        self._ops = nn.ModuleList()
        for primitive in primitives:
            op = OPS[primitive](C, stride, False)
            if "pool" in primitive:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class Cell(nn.Module):
    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, edge_primitives):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        self._ops = nn.ModuleList()
        k = 0
        for i in range(self._steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(MixedOp(C, stride, edge_primitives[k]))
                k += 1

    def forward(self, s0, s1, weights):
        s0 = self.preprocess0(s0)
        s1 = self.preprocess1(s1)
        states = [s0, s1]
        offset = 0
        for i in range(self._steps):
            s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


class Network(nn.Module):
    """The DARTS search network (``model_search.Network``).

    ``candidates`` (optional) is nasreg's ``{"normal": [[op, ...] per edge], "reduce": ...}``; by
    default every edge has the eight DARTS primitives and the alphas are two (14, 8) tensors.
    """

    def __init__(self, C=16, num_classes=10, layers=8, steps=4, multiplier=4, stem_multiplier=3,
                 candidates=None, in_channels=3):
        super().__init__()
        self._C, self._num_classes, self._layers = C, num_classes, layers
        self._steps, self._multiplier, self._stem_multiplier = steps, multiplier, stem_multiplier
        self._in_channels = in_channels
        k = sum(2 + i for i in range(steps))
        if candidates is None:
            candidates = {ct: [list(PRIMITIVES) for _ in range(k)] for ct in ("normal", "reduce")}
        self._candidates = candidates

        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            if i in [layers // 3, 2 * layers // 3]:
                C_curr *= 2
                reduction = True
            else:
                reduction = False
            cell = Cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                        candidates["reduce" if reduction else "normal"])
            reduction_prev = reduction
            self.cells += [cell]
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self._initialize_alphas()

    def _initialize_alphas(self):
        # Not registered as parameters (as in the original): model.parameters() are the weights.
        def make(ct):
            sizes = {len(c) for c in self._candidates[ct]}
            if sizes == {len(PRIMITIVES)}:
                return (1e-3 * torch.randn(len(self._candidates[ct]), len(PRIMITIVES))).requires_grad_()
            return [(1e-3 * torch.randn(len(c))).requires_grad_() for c in self._candidates[ct]]

        self.alphas_normal = make("normal")
        self.alphas_reduce = make("reduce")

    def arch_parameters(self):
        out = []
        for a in (self.alphas_normal, self.alphas_reduce):
            out.extend(a if isinstance(a, list) else [a])
        return out

    def _weights(self, alphas):
        if isinstance(alphas, list):
            return [F.softmax(a, dim=-1) for a in alphas]
        return F.softmax(alphas, dim=-1)

    def to(self, *args, **kwargs):  # keep the (unregistered) alphas on the model's device
        super().to(*args, **kwargs)
        device = next(self.parameters()).device
        moved = [a.detach().to(device).requires_grad_() for a in self.arch_parameters()]
        n = 1 if not isinstance(self.alphas_normal, list) else len(self.alphas_normal)
        normal, reduce = moved[:n], moved[n:]
        self.alphas_normal = normal[0] if not isinstance(self.alphas_normal, list) else normal
        self.alphas_reduce = reduce[0] if not isinstance(self.alphas_reduce, list) else reduce
        return self

    def new(self):
        model_new = Network(self._C, self._num_classes, self._layers, self._steps, self._multiplier,
                            self._stem_multiplier, self._candidates, self._in_channels)
        model_new = model_new.to(next(self.parameters()).device)
        for x, y in zip(model_new.arch_parameters(), self.arch_parameters()):
            x.data.copy_(y.data)
        return model_new

    def forward(self, input):
        s0 = s1 = self.stem(input)
        for cell in self.cells:
            weights = self._weights(self.alphas_reduce if cell.reduction else self.alphas_normal)
            s0, s1 = s1, cell(s0, s1, weights)
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1))

    def _loss(self, input, target):
        return F.cross_entropy(self(input), target)


def _concat(xs):
    return torch.cat([x.view(-1) for x in xs])


class Architect:
    """``architect.py``: Adam on the alphas, first order or unrolled (second order)."""

    def __init__(self, model, momentum=0.9, weight_decay=3e-4, arch_lr=3e-4, arch_weight_decay=1e-3):
        self.network_momentum = momentum
        self.network_weight_decay = weight_decay
        self.model = model
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999),
                                          weight_decay=arch_weight_decay)

    def _compute_unrolled_model(self, input, target, eta, network_optimizer):
        loss = self.model._loss(input, target)
        theta = _concat(self.model.parameters()).data
        try:
            moment = _concat(network_optimizer.state[v]["momentum_buffer"]
                             for v in self.model.parameters()).mul_(self.network_momentum)
        except (KeyError, TypeError):
            moment = torch.zeros_like(theta)
        dtheta = _concat(torch.autograd.grad(loss, self.model.parameters())).data \
            + self.network_weight_decay * theta
        return self._construct_model_from_theta(theta - eta * (moment + dtheta))

    def step(self, input_train, target_train, input_valid, target_valid, eta, network_optimizer, unrolled):
        self.optimizer.zero_grad()
        if unrolled:
            self._backward_step_unrolled(input_train, target_train, input_valid, target_valid, eta,
                                         network_optimizer)
        else:
            self.model._loss(input_valid, target_valid).backward()
        self.optimizer.step()

    def _backward_step_unrolled(self, input_train, target_train, input_valid, target_valid, eta,
                                network_optimizer):
        unrolled_model = self._compute_unrolled_model(input_train, target_train, eta, network_optimizer)
        unrolled_loss = unrolled_model._loss(input_valid, target_valid)
        unrolled_loss.backward()
        dalpha = [v.grad for v in unrolled_model.arch_parameters()]
        vector = [v.grad.data for v in unrolled_model.parameters()]
        implicit_grads = self._hessian_vector_product(vector, input_train, target_train)
        for g, ig in zip(dalpha, implicit_grads):
            g.data.sub_(ig.data, alpha=eta)
        for v, g in zip(self.model.arch_parameters(), dalpha):
            if v.grad is None:
                v.grad = g.data.clone()
            else:
                v.grad.data.copy_(g.data)

    def _construct_model_from_theta(self, theta):
        model_new = self.model.new()
        model_dict = self.model.state_dict()
        params, offset = {}, 0
        for k, v in self.model.named_parameters():
            v_length = v.numel()
            params[k] = theta[offset: offset + v_length].view(v.size())
            offset += v_length
        assert offset == len(theta)
        model_dict.update(params)
        model_new.load_state_dict(model_dict)
        return model_new

    def _hessian_vector_product(self, vector, input, target, r=1e-2):
        R = r / _concat(vector).norm()
        for p, v in zip(self.model.parameters(), vector):
            p.data.add_(v, alpha=R)
        loss = self.model._loss(input, target)
        grads_p = torch.autograd.grad(loss, self.model.arch_parameters())
        for p, v in zip(self.model.parameters(), vector):
            p.data.sub_(v, alpha=2 * R)
        loss = self.model._loss(input, target)
        grads_n = torch.autograd.grad(loss, self.model.arch_parameters())
        for p, v in zip(self.model.parameters(), vector):
            p.data.add_(v, alpha=R)
        return [(x - y).div_(2 * R) for x, y in zip(grads_p, grads_n)]


class ReferenceSearch:
    """One search step of ``train_search.py``: the architect's step, then the weight step."""

    def __init__(self, model, order=1, lr=0.025, momentum=0.9, weight_decay=3e-4, grad_clip=5.0):
        self.model = model
        self.order = order
        self.grad_clip = grad_clip
        self.lr = lr
        self.optimizer = torch.optim.SGD(model.parameters(), lr, momentum=momentum, weight_decay=weight_decay)
        self.architect = Architect(model, momentum, weight_decay)

    def step(self, train_batch, val_batch):
        (input, target), (input_search, target_search) = train_batch, val_batch
        self.model.train()
        self.architect.step(input, target, input_search, target_search, self.lr, self.optimizer,
                            unrolled=self.order == 2)
        self.optimizer.zero_grad()
        logits = self.model(input)
        loss = F.cross_entropy(logits, target)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        return loss.detach()
