"""The DARTS cell search space (``[search_space] name = "darts-cell"``) and its supernet.

A cell is a DAG over ``nodes + 2`` nodes: nodes 0 and 1 are its inputs (the outputs of the two
previous cells, after a 1x1 ReLUConvBN, or a FactorizedReduce when the cell two back has twice
the spatial size), nodes 2 .. nodes+1 are intermediate nodes, each the sum of one mixed op per
earlier node. The cell's output concatenates the intermediate nodes. There are two cell types,
``normal`` and ``reduce``; a reduction cell doubles the channels and applies stride 2 on the
edges leaving its input nodes. All cells of one type share one alpha per edge.

The supernet is the DARTS search network: a 3x3 stem conv to ``stem_multiplier * channels``
channels with BatchNorm, the cells, global average pooling, a linear classifier. Every spatial
reduction rounds up (``ceil(H/2)``), so any input size H, W >= 1 works.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

import nasreg
from nasreg import rank_sample_rows as sample_rows

from .cellspace import CELL_TYPES, DartsCellSpace  # noqa: F401 - the space (torch-free), re-exported


#: On CPU the supernet runs channels-last for inputs of at least this many pixels (H * W).
CHANNELS_LAST_MIN_PIXELS = 16 * 16


class DropPathMixedOp(nasreg.MixedOp):
    """:class:`nasreg.MixedOp` with drop path on its op outputs while training.

    With probability ``drop_prob``, independently per sample and per op, an op's output is
    replaced by zeros; kept outputs are scaled by ``1 / (1 - drop_prob)`` (DARTS's ``drop_path``).
    Ops built as ``nn.Identity`` (``skip_connect`` at stride 1) are never dropped -- the rule of
    DARTS's evaluation network; zero ops have no module and nothing to drop. In eval mode, or
    with ``drop_prob == 0``, this is exactly :class:`nasreg.MixedOp` (same parameter names).
    """

    def __init__(self, candidates: list[str], C: int, stride: int, ops: nasreg.Registry,
                 affine: bool = False, drop_prob: float = 0.0):
        super().__init__(candidates, C, stride, ops, affine)
        self.drop_prob = float(drop_prob)
        # (position of the op in the candidate list, may it be dropped, module): public attributes only
        self._plan = [(self.candidates.index(name), not isinstance(module, nn.Identity), module)
                      for name, module in self.ops.items()]

    def forward(self, x: torch.Tensor, weights: torch.Tensor, *, out: torch.Tensor | None = None,
                x_relu: torch.Tensor | None = None, active: list[int] | None = None) -> torch.Tensor:
        p = self.drop_prob
        if not self.training or p <= 0.0 or not self._plan:
            return super().forward(x, weights, out=out, x_relu=x_relu, active=active)
        plan = self._plan if active is None else [t for t in self._plan if t[0] in set(active)]
        needs_relu = self.relu_input if active is None else any(getattr(m, "relu_input", False) for *_, m in plan)
        if x_relu is None and needs_relu:
            x_relu = torch.relu(x)
        keep = 1.0 - p
        for i, droppable, module in plan:
            if droppable:
                # weight / keep goes into the op (e.g. its BN), the 0/1 sample mask multiplies after
                y = self.op_term(module, x, weights[i] / keep, x_relu)
                # Masks for the whole global batch, this rank's rows kept (torchrun = one process).
                n, rows = sample_rows(y.shape[0])
                mask = torch.empty(n, *([1] * (y.dim() - 1)), device=y.device, dtype=y.dtype).bernoulli_(keep)
                y = y * mask[rows]
            else:
                y = self.op_term(module, x, weights[i], x_relu)
            out = y if out is None else out.add_(y)
        if out is None:  # only zero ops active on this edge
            return nasreg.MixedOp.forward(self, x, weights, active=[])
        return out


class PartialChannelMixedOp(DropPathMixedOp):
    """PC-DARTS's partial channel connection (Xu et al., ICLR 2020) around a mixed op.

    The first ``C / k`` channels of the edge input go through the mixed op (its ops are built with
    ``C / k`` channels); the other channels bypass it (a 2x2 max pool, ``ceil_mode``, on stride-2
    edges); the two parts are concatenated and the channels shuffled with ``k`` groups, as
    PC-DARTS's ``channel_shuffle(cat([mixed, bypass]), k)`` (one copy here). ``edge_scale`` (the
    PC-DARTS edge weight ``softmax(beta)``) multiplies the whole edge output, bypass included.
    Parameter names are those of :class:`DropPathMixedOp` (``ops.<name>....``).
    """

    def __init__(self, candidates: list[str], C: int, stride: int, ops: nasreg.Registry,
                 affine: bool = False, drop_prob: float = 0.0, k: int = 1):
        if k < 1 or C % k:
            raise ValueError(f"partial_channels: {C} channels are not divisible by {k}")
        super().__init__(candidates, C // k, stride, ops, affine, drop_prob)
        self.k = int(k)
        self.C = int(C)
        self.bypass_pool = nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 else None

    def forward(self, x: torch.Tensor, weights: torch.Tensor, *, out: torch.Tensor | None = None,
                x_relu: torch.Tensor | None = None, edge_scale: torch.Tensor | None = None,
                active: list[int] | None = None) -> torch.Tensor:
        c = self.C // self.k
        if edge_scale is not None:
            weights = weights * edge_scale
        y = super().forward(x[:, :c], weights, x_relu=None if x_relu is None else x_relu[:, :c], active=active)
        rest = x[:, c:]
        if self.bypass_pool is not None:
            rest = self.bypass_pool(rest)
        if edge_scale is not None:
            rest = rest * edge_scale
        y = shuffle_concat(y, rest, self.k)
        return y if out is None else out.add_(y)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS's (and ShuffleNet's) channel shuffle: channel ``g * C/groups + j`` goes to
    ``j * groups + g``."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def shuffle_concat(y: torch.Tensor, rest: torch.Tensor, groups: int) -> torch.Tensor:
    """``channel_shuffle(torch.cat([y, rest], 1), groups)`` with one copy, where ``y`` has
    ``C / groups`` channels and ``rest`` the other ``C - C / groups``; channels-last inputs give a
    channels-last output."""
    n, c, h, w = y.shape
    if groups == 1:
        return y
    if y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
        # (N, H, W, c, 1) and (N, H, W, c, groups - 1) -> (N, H, W, c, groups) -> (N, H, W, C)
        yl = y.permute(0, 2, 3, 1).unsqueeze(4)
        rl = rest.permute(0, 2, 3, 1).reshape(n, h, w, groups - 1, c).transpose(3, 4)
        return torch.cat([yl, rl], dim=4).reshape(n, h, w, c * groups).permute(0, 3, 1, 2)
    rl = rest.reshape(n, groups - 1, c, h, w).transpose(1, 2)
    return torch.cat([y.unsqueeze(2), rl], dim=2).reshape(n, c * groups, h, w)


class SearchCell(nn.Module):
    """One cell of the search supernet: preprocessing, a mixed op per edge, concat of the nodes."""

    def __init__(self, cell_type: str, edges: list[tuple[int, int]], candidates: list[list[str]],
                 C_prev_prev: int, C_prev: int, C: int, reduction_prev: bool, *,
                 ops: nasreg.Registry, affine: bool, drop_prob: float, partial_channels: int = 1,
                 batched: bool = True):
        super().__init__()
        #: Run the edges in waves, each op kind once per wave (:mod:`nasreg_darts.batched`), when no
        #: edge has an ``active`` set; False: every edge's mixed op on its own (the per-edge path).
        self.batched = bool(batched)
        self._groups = None  # the batched plan, built at the first batched forward
        self.cell_type = cell_type
        self.reduction = cell_type == "reduce"
        self.preprocess0, self.preprocess1 = nasreg.cell_inputs(C_prev_prev, C_prev, C, reduction_prev, affine)
        self.edges = nn.ModuleList()
        self.partial = partial_channels > 1
        # node -> [(edge index, input node)] in edge order
        self._inputs: dict[int, list[tuple[int, int]]] = {}
        for idx, ((src, dst), cands) in enumerate(zip(edges, candidates)):
            stride = 2 if self.reduction and src < 2 else 1
            if self.partial:
                edge: nn.Module = PartialChannelMixedOp(cands, C, stride, ops, affine, drop_prob, partial_channels)
            else:
                edge = DropPathMixedOp(cands, C, stride, ops, affine, drop_prob)
            self.edges.append(edge)
            self._inputs.setdefault(dst, []).append((idx, src))
        self._nodes = sorted(self._inputs)
        self._offsets = [sum(len(c) for c in candidates[:i]) for i in range(len(candidates))]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: list[torch.Tensor],
                edge_scales: list[torch.Tensor] | None = None,
                active: list[list[int] | None] | None = None) -> torch.Tensor:
        """``weights[e]``: edge ``e``'s op weights; ``edge_scales[e]`` (optional): a 0-d weight of
        the whole edge output (PC-DARTS edge normalization); ``active[e]`` (optional): the
        candidate indices edge ``e`` computes (:meth:`nasreg.Supernet.edge_mixing`; an empty list:
        the edge is skipped, as if absent)."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        if self.batched and (active is None or all(a is None for a in active)):
            from .batched import forward_cell

            return forward_cell(self, states, weights, edge_scales)
        relus: dict[int, torch.Tensor] = {}  # relu(node) once per node, shared by all its edges' ops
        for node in self._nodes:
            total = None
            for idx, src in self._inputs[node]:
                edge = self.edges[idx]
                x_relu = None
                act = None if active is None else active[idx]
                if act is not None and not act:  # no op active: the edge adds nothing (PC bypass included)
                    continue
                if edge.relu_input and act is None:
                    x_relu = relus.get(src)
                    if x_relu is None:
                        x_relu = relus[src] = torch.relu(states[src])
                if self.partial:
                    total = edge(states[src], weights[idx], out=total, x_relu=x_relu,
                                 edge_scale=None if edge_scales is None else edge_scales[idx], active=act)
                else:
                    w = weights[idx] if edge_scales is None else weights[idx] * edge_scales[idx]
                    total = edge(states[src], w, out=total, x_relu=x_relu, active=act)
            if total is None:  # no edge of the node active: zeros of the node's shape
                idx, src = self._inputs[node][0]
                total = nasreg.MixedOp.forward(self.edges[idx], states[src], weights[idx], active=[])
            states.append(total)
        return torch.cat(states[2:], dim=1)


class DartsSupernet(nasreg.Supernet):
    """The DARTS search network over per-edge candidate sets."""

    def __init__(self, space: DartsCellSpace, candidates: nasreg.Candidates, *, ops: nasreg.Registry,
                 in_channels: int, num_classes: int):
        super().__init__(candidates, alpha_init_std=space.alpha_init_std)
        edges = space.edges()
        self.edge_normalization = space.edge_normalization
        if space.edge_normalization:
            # PC-DARTS's beta: one per edge, softmax over the edges entering each node
            for ct, cell_edges in edges.items():
                self.extra_arch[f"betas_{ct}"] = nn.Parameter(space.alpha_init_std * torch.randn(len(cell_edges)))
            self._node_groups = {ct: _node_groups(cell_edges) for ct, cell_edges in edges.items()}
        C = space.channels
        C_curr = space.stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),  # affine, as in the DARTS search network
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        reduction_prev = False
        self.cells = nn.ModuleList()
        reductions = set(space.reductions)
        for i in range(space.cells):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            ct = "reduce" if reduction else "normal"
            self.cells.append(SearchCell(ct, edges[ct], self.candidates[ct], C_prev_prev, C_prev, C_curr,
                                         reduction_prev, ops=ops, affine=space.affine,
                                         drop_prob=space.drop_path, partial_channels=space.partial_channels,
                                         batched=getattr(space, "batched_edges", True)))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, space.nodes * C_curr
        self._used_types = sorted({cell.cell_type for cell in self.cells})
        self._skip_dropout = _SkipDropout(space, self.cells, ops)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self._relayout()

    def _relayout(self) -> None:
        """Batched edges: each batched op kind's BN statistics as views of one tensor."""
        from .batched import relayout_cell

        for cell in self.cells:
            if cell.batched:
                relayout_cell(cell)

    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), ...: buffers replaced, lay them out again
        out = super()._apply(fn, *args, **kwargs)
        self._relayout()
        return out

    def start_epoch(self, epoch: int, epochs: int, warmup: int = 0) -> None:
        """Set the epoch's skip dropout rate (``skip_dropout``, decayed by ``skip_dropout_decay``)."""
        self._skip_dropout.start_epoch(epoch, epochs, warmup)

    @property
    def skip_dropout_rate(self) -> float:
        """The skip dropout rate the supernet trains with now (0 without ``skip_dropout``)."""
        return self._skip_dropout.p

    @property
    def drop_prob(self) -> float:
        """The drop-path probability of every mixed op (set it to change it during a search)."""
        return next((m.drop_prob for m in self.modules() if isinstance(m, DropPathMixedOp)), 0.0)

    @drop_prob.setter
    def drop_prob(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {p}")
        for m in self.modules():
            if isinstance(m, DropPathMixedOp):
                m.drop_prob = float(p)

    def edge_scales(self, cell_type: str) -> list[torch.Tensor] | None:
        """PC-DARTS edge normalization: per edge, softmax(beta) over the edges entering its node
        (``None`` without ``edge_normalization``)."""
        if not self.edge_normalization:
            return None
        betas = self.extra_arch[f"betas_{cell_type}"]
        out: list[torch.Tensor] = [None] * betas.numel()  # type: ignore[list-item]
        for group in self._node_groups[cell_type]:
            contiguous = group == list(range(group[0], group[-1] + 1))  # DARTS order: a slice, no index tensor
            soft = torch.softmax(betas[group[0]:group[-1] + 1] if contiguous else betas[group], dim=-1)
            for j, e in enumerate(group):
                out[e] = soft[j]
        return out

    @torch.no_grad()
    def alpha_softmax(self) -> dict[str, list[list[float]]]:
        """softmax(alpha) per edge; with ``edge_normalization`` each edge's values are multiplied
        by its edge weight softmax(beta), the weight of each op in its node's sum. The DARTS
        derivation then ranks edges by (strongest op weight x edge weight), as PC-DARTS does, and
        the recorded metrics show these products."""
        out = super().alpha_softmax()
        if self.edge_normalization:
            for ct in out:
                scales = self.edge_scales(ct)
                out[ct] = [[v * float(scales[e]) for v in ops] for e, ops in enumerate(out[ct])]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dim() == 4 and x.shape[-2] * x.shape[-1] >= CHANNELS_LAST_MIN_PIXELS:
            # oneDNN's convolutions and pools are 1.5-10x faster channels-last on images of 16x16
            # and more (a search step on 3x32x32 CIFAR: 1.5x); every activation downstream
            # inherits the format. On 8x8 images (digits) plain NCHW is faster (1.15x).
            # Other devices: [strategy] channels_last.
            x = x.contiguous(memory_format=torch.channels_last)
        mixing = {ct: self.edge_mixing(ct) for ct in self._used_types}  # one softmax (or sample) per forward
        scales = {ct: self.edge_scales(ct) for ct in self._used_types}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            weights, active = mixing[cell.cell_type]
            s0, s1 = s1, cell(s0, s1, weights, scales[cell.cell_type], active)
        return self.classifier(self.global_pooling(s1).flatten(1))


class _SkipDropout:
    """P-DARTS's dropout after skip connections: a forward hook on every identity-kind op
    (registry metadata ``kind == "identity"``) of a stride-1 edge, dropping elements of its
    output at rate :attr:`p` while training (``F.dropout``: kept ones scaled by 1 / (1 - p)),
    before the op's mixing weight multiplies it. Without ``skip_dropout`` no hook is attached."""

    def __init__(self, space: DartsCellSpace, cells: nn.ModuleList, ops: nasreg.Registry):
        self.rate, self.decay = space.skip_dropout, space.skip_dropout_decay
        self.p = self.rate
        self.hooked: list[nn.Module] = []
        if self.rate <= 0:
            return
        for cell in cells:
            for edge in cell.edges:
                if edge.stride != 1:  # a stride-2 skip is a FactorizedReduce, not an identity
                    continue
                for name, module in edge.ops.items():
                    if ops.get(name).get("kind") == "identity":
                        module.register_forward_hook(self)
                        self.hooked.append(module)

    def start_epoch(self, epoch: int, epochs: int, warmup: int) -> None:
        from .cellspace import skip_dropout_rate

        self.p = skip_dropout_rate(self.rate, self.decay, epoch, epochs, warmup)

    def __call__(self, module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if module.training and self.p > 0:
            return torch.nn.functional.dropout(output, self.p, training=True)
        return None


def _node_groups(edges: list[tuple[int, int]]) -> list[list[int]]:
    """Edge indices grouped by their output node."""
    groups: dict[int, list[int]] = {}
    for idx, (_, dst) in enumerate(edges):
        groups.setdefault(dst, []).append(idx)
    return [groups[n] for n in sorted(groups)]
