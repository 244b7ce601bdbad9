"""Batched edges: the ops of the edges that leave cell nodes available together, run together.

A cell's edges fall into *waves*: the edges leaving its two input nodes (available when the cell
starts, with the same shape and stride), then the edges leaving each intermediate node (available
once that node is summed). A wave's edge inputs are stacked along the channels, ``(N, E * C, H, W)``
with channels ``[e * C, (e + 1) * C)`` the input of its edge ``e`` (one ``cat``, whose backward is
one sum per source node), and every op kind of the wave runs once over all its edges.

**The op protocol (optional).** An op module may implement

``batch_key() -> Hashable | None``
    Modules of the same class with equal keys (same shapes and settings) can run as one batched
    call; ``None``: this module cannot (it runs per edge).
``batched_forward(modules, x, scales, x_relu) -> Tensor`` (a classmethod)
    ``x``: the inputs of the E ``modules`` (one per edge, same key) stacked along the channels,
    (N, E * C, H, W); ``x_relu``: ``relu(x)`` or ``None`` (as in :class:`nasreg.MixedOp`'s
    ``fused_forward``); ``scales``: the mixing weights per channel, (E * C,), block ``e`` filled
    with the weight of ``modules[e]``. Returns (N, E * C, H', W') whose channel block ``e`` is
    ``scale_e * modules[e](x_e)``: a new tensor its own backward does not need (the wave sums into
    it in place). Running statistics of the modules (BatchNorm) must move exactly as
    ``modules[e](x_e)`` moves them.

The parameters stay the per-edge modules' own (names, state_dict, weight inheritance between
stages, checkpoints are those of the per-edge path); a batched call concatenates them
(:func:`cat_weights`: one ``cat`` per layer, whose backward is one ``split``). The BatchNorms of a
batched kind get their running statistics laid out as consecutive views of one tensor
(:func:`stacked_buffer`), so one ``batch_norm`` over E * C channels updates every edge's in place.

:func:`forward_cell` runs a :class:`~nasreg_darts.space.SearchCell` this way: per wave, per kind
(class and key), one ``batched_forward``; modules without the protocol run per edge
(``MixedOp.op_term``), and on CPU so do the kinds on only some of the wave's edges
(:data:`CPU_SUBSETS_PER_EDGE`); node sums add the wave outputs' blocks. Drop
path draws its masks in the per-edge path's order (same random numbers); PC-DARTS partial channels
stack the sliced inputs and shuffle per edge. The result equals the per-edge path up to float
rounding (``tests/test_batched_edges.py``, float64).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import nasreg
from nasreg import rank_sample_rows as sample_rows

__all__ = ["batch_norm_stacked", "cat_weights", "depthwise_stacked", "forward_cell", "has_protocol",
           "pointwise_stacked", "relayout_cell", "stack_inputs", "stacked_buffer"]


# --- helpers for ops implementing the protocol ----------------------------------------------------

def has_protocol(module: nn.Module) -> bool:
    """Does ``module`` implement the batched-op protocol (and say it can batch)?"""
    key = getattr(module, "batch_key", None)
    if module._forward_hooks or module._forward_pre_hooks:  # e.g. P-DARTS's skip dropout: its own forward
        return False
    return callable(key) and callable(getattr(type(module), "batched_forward", None)) and key() is not None


class _CatParams(torch.autograd.Function):
    """``cat(ts, 0)``; backward: one ``split`` (the autograd ``cat`` backward slices once per tensor)."""

    @staticmethod
    def forward(ctx, *ts: torch.Tensor) -> torch.Tensor:
        ctx.sizes = [t.shape[0] for t in ts]
        return torch.cat(ts, 0)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        size = ctx.sizes[0]
        return g.split(size, 0) if all(s == size for s in ctx.sizes) else g.split(ctx.sizes, 0)


def cat_weights(layers: list[nn.Module], name: str = "weight") -> torch.Tensor:
    """The ``name`` parameters of ``layers`` concatenated along dim 0."""
    ts = [getattr(m, name) for m in layers]
    return ts[0] if len(ts) == 1 else _CatParams.apply(*ts)


class _StackInputs(torch.autograd.Function):
    """``cat([xs[0]] * counts[0] + [xs[1]] * counts[1] + ..., 1)``; backward: per source the sum
    of its blocks (one view and one sum for all sources when the counts are equal)."""

    @staticmethod
    def forward(ctx, counts: tuple[int, ...], *xs: torch.Tensor) -> torch.Tensor:
        ctx.counts = counts
        return torch.cat([x for x, n in zip(xs, counts) for _ in range(n)], 1)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        counts = ctx.counts
        C = g.shape[1] // sum(counts)
        n = counts[0]
        if all(c == n for c in counts):
            if n == 1:
                return (None, *g.split(C, 1))
            return (None, *g.reshape(g.shape[0], len(counts), n, C, *g.shape[2:]).sum(2).unbind(1))
        parts = g.split([c * C for c in counts], 1)
        return (None, *(p if c == 1 else p.reshape(p.shape[0], c, C, *p.shape[2:]).sum(1)
                       for p, c in zip(parts, counts)))


def stack_inputs(xs: list[torch.Tensor], counts: list[int]) -> torch.Tensor:
    """The wave input: ``xs[i]`` repeated ``counts[i]`` times along the channels."""
    if len(xs) == 1 and counts[0] == 1:
        return xs[0]
    shape = xs[0].shape
    if any(x.shape != shape for x in xs):
        raise ValueError(f"batched edges: the inputs of one wave differ in shape: {[tuple(x.shape) for x in xs]}")
    return _StackInputs.apply(tuple(counts), *xs)


def depthwise_stacked(x: torch.Tensor, convs: list[nn.Conv2d]) -> torch.Tensor:
    """E depthwise convs of C channels (same settings) on E * C stacked channels: one grouped conv
    (on CPU a dilated one through the phase decomposition of :class:`nasreg_darts.ops.DepthwiseConv2d`)."""
    c = convs[0]
    d, s, p = c.dilation[0], c.stride[0], c.padding[0]
    if getattr(c, "_phase", False) and x.device.type == "cpu" and x.dim() == 4:
        from .ops import _phase_depthwise

        # phases stacked along the batch, channels-last inside: measured faster on CPU than the
        # phases side by side in the channels (pixel_unshuffle, a conv with 4 * E * C groups),
        # which would make fewer calls
        return _phase_depthwise(x, cat_weights(convs), None, s, d, p)
    return F.conv2d(x, cat_weights(convs), None, c.stride, c.padding, c.dilation, groups=x.shape[1])


def pointwise_stacked(x: torch.Tensor, convs: list[nn.Conv2d]) -> torch.Tensor:
    """E convs (same settings, ``groups == 1``, no bias) of E stacked inputs: one conv with ``groups = E``."""
    c = convs[0]
    return F.conv2d(x, cat_weights(convs), None, c.stride, c.padding, c.dilation, groups=len(convs))


def stacked_buffer(modules: list[nn.Module], name: str, relayout: bool = False) -> torch.Tensor | None:
    """The tensor whose consecutive slices are the ``name`` buffers of ``modules``, when they are
    laid out that way (then an in-place update of it updates every module's buffer); else ``None``,
    or with ``relayout`` the buffers are made views of a new such tensor (values kept).

    Lay buffers out only where nothing holds the old tensors (:meth:`DartsSupernet._apply` does it
    after ``.to()`` and at construction): a snapshot of ``model.buffers()`` taken before would
    restore into the replaced tensors."""
    ts = [getattr(m, name) for m in modules]
    if len(ts) == 1:
        return ts[0]
    base = ts[0]._base
    if base is not None and base.dim() == 1 and base.numel() == sum(t.numel() for t in ts):
        ptr, size = base.data_ptr(), base.element_size()
        off = 0
        ok = True
        for t in ts:
            if t._base is not base or t.data_ptr() != ptr + off * size or not t.is_contiguous():
                ok = False
                break
            off += t.numel()
        if ok:
            return base
    if not relayout:
        return None
    with torch.no_grad():
        base = torch.cat([t.detach().reshape(-1) for t in ts])
    for m, part in zip(modules, base.split([t.numel() for t in ts])):
        setattr(m, name, part.view(getattr(m, name).shape))  # a registered buffer stays registered
    return base


def relayout_cell(cell: nn.Module) -> None:
    """Lay out the BatchNorm statistics of every batched kind of ``cell`` as views of one tensor
    (see :func:`stacked_buffer`); the modules of one kind have the same structure."""
    for g in build_groups(cell):
        for kind in g.kinds:
            if not kind.batched or len(kind.modules) < 2:
                continue
            subs = [dict(m.named_modules()) for m in kind.modules]
            for sub_name, sub in subs[0].items():
                if type(sub) is nn.BatchNorm2d and sub.running_mean is not None:
                    bns = [d[sub_name] for d in subs]
                    stacked_buffer(bns, "running_mean", relayout=True)
                    stacked_buffer(bns, "running_var", relayout=True)
    cell._groups = None  # rebuilt at the next forward (hooks added meanwhile are seen)


def batch_norm_stacked(bns: list[nn.Module], x: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
    """``cat([scale_e * bns[e](x_e)])`` for E BatchNorms of C channels on E * C stacked channels
    (``scales``: per channel, as the protocol passes them), one ``batch_norm`` call; running
    statistics and ``num_batches_tracked`` move exactly as the E separate calls move them
    (``nasreg.batch_norm_scaled`` per edge when a BN is not a plain ``BatchNorm2d`` or has hooks)."""
    E = len(bns)
    C = x.shape[1] // E
    plain = all(type(b) is nn.BatchNorm2d and not b._forward_hooks and not b._forward_pre_hooks for b in bns)
    if not plain:
        parts = [nasreg.batch_norm_scaled(b, x.narrow(1, e * C, C), None if scales is None else scales[e * C])
                 for e, b in enumerate(bns)]
        return parts[0] if E == 1 else torch.cat(parts, dim=1)
    bn = bns[0]
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        if E == 1:
            bn.num_batches_tracked.add_(1)
        else:
            torch._foreach_add_([b.num_batches_tracked for b in bns], 1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep = (not bn.training or bn.track_running_stats) and bn.running_mean is not None
    mean = stacked_buffer(bns, "running_mean") if keep else None
    var = stacked_buffer(bns, "running_var") if keep else None
    write_back = keep and (mean is None or var is None)
    if write_back:  # not laid out as one tensor: update copies, then copy them back
        mean = torch.cat([b.running_mean for b in bns])
        var = torch.cat([b.running_var for b in bns])
    weight = None if bn.weight is None else cat_weights(bns, "weight")
    bias = None if bn.bias is None else cat_weights(bns, "bias")
    if scales is not None:
        weight = scales if weight is None else weight * scales
        bias = None if bias is None else bias * scales
    if x.device.type == "cpu" and (use_batch_stats or mean is not None):
        # what F.batch_norm calls on CPU, less its unused reserve tensor
        out = torch.native_batch_norm(x, weight, bias, mean, var, use_batch_stats, factor, bn.eps)[0]
    else:
        out = F.batch_norm(x, mean, var, weight, bias, use_batch_stats, factor, bn.eps)
    if write_back and bn.training:
        with torch.no_grad():
            torch._foreach_copy_([b.running_mean for b in bns] + [b.running_var for b in bns],
                                 list(mean.split(C)) + list(var.split(C)))
    return out


# --- the cell -------------------------------------------------------------------------------------

class _Kind:
    """Ops of one wave (same class and batch key, or one module without the protocol)."""

    __slots__ = ("batched", "modules", "positions", "cand", "edges", "droppable", "full", "relu_input",
                 "source_counts")

    def __init__(self, batched: bool):
        self.batched = batched
        self.modules: list[nn.Module] = []
        self.positions: list[int] = []  # position of the edge in its wave
        self.cand: list[int] = []  # candidate index of the op on its edge
        self.edges: list[int] = []  # cell edge index
        self.droppable = True
        self.full = False  # on every edge of the wave, in order (set by finish)
        self.relu_input = False  # some module takes relu(x)
        self.source_counts: list[tuple[int, int]] = []  # (source, edges) of its inputs, in order

    def weight_index(self, offsets: list[int], C: int) -> list[int]:
        """The flat mixing-weight index of every output channel."""
        return [offsets[e] + i for e, i in zip(self.edges, self.cand) for _ in range(C)]

    def finish(self, E: int, source_of: list[int]) -> None:
        """Set the derived fields once the kind has all its modules."""
        self.full = self.positions == list(range(E))
        self.relu_input = any(getattr(m, "relu_input", False) for m in self.modules)
        counts: dict[int, int] = {}
        for p in self.positions:  # positions ascend, so each source's edges are consecutive
            counts[source_of[p]] = counts.get(source_of[p], 0) + 1
        self.source_counts = list(counts.items())


class _Group:
    """A wave: the edges leaving ``sources`` (nodes available together: same shape and stride),
    ordered by source then edge index, and their op kinds."""

    def __init__(self, sources: list[int], by_src: dict[int, list[int]], cell: nn.Module):
        self.sources = sources
        self.edges: list[int] = []
        self.source_of: list[int] = []  # per position: index into ``sources``
        for k, s in enumerate(sources):
            self.edges += by_src[s]
            self.source_of += [k] * len(by_src[s])
        self.counts = [len(by_src[s]) for s in sources]
        self.kinds: list[_Kind] = []
        by_key: dict[Any, _Kind] = {}
        for pos, e in enumerate(self.edges):
            mixed = cell.edges[e]
            for i, module in mixed.plan():
                if has_protocol(module):
                    key = (type(module), module.batch_key())
                    kind = by_key.get(key)
                    if kind is None:
                        kind = by_key[key] = _Kind(True)
                        self.kinds.append(kind)
                else:
                    kind = _Kind(False)
                    self.kinds.append(kind)
                kind.modules.append(module)
                kind.positions.append(pos)
                kind.cand.append(i)
                kind.edges.append(e)
                kind.droppable = not isinstance(module, nn.Identity)
        for kind in self.kinds:
            kind.finish(len(self.edges), self.source_of)
        self._idx: dict[Any, tuple[torch.Tensor, list[int]]] = {}

    def scale_index(self, offsets: list[int], C: int, device: torch.device) -> tuple[torch.Tensor, list[int]]:
        """(the flat mixing-weight index of every output channel of every kind, the kinds' sizes):
        one ``index_select`` and one ``split`` give every kind its per-channel weights."""
        key = (device, C)
        got = self._idx.get(key)
        if got is None:
            parts = [kind.weight_index(offsets, C) for kind in self.kinds]
            got = self._idx[key] = (torch.tensor([i for p in parts for i in p], device=device, dtype=torch.long),
                                    [len(p) for p in parts])
        return got


def build_groups(cell: nn.Module) -> list[_Group]:
    """The waves of a cell: the edges leaving its input nodes (one wave when they have the same
    stride), then those leaving each intermediate node."""
    by_src: dict[int, list[int]] = {}
    for node in cell._nodes:
        for idx, src in cell._inputs[node]:
            by_src.setdefault(src, []).append(idx)
    for es in by_src.values():
        es.sort()
    srcs = sorted(by_src)
    inputs = [s for s in srcs if s < 2]
    waves = []
    if inputs:
        strides = {cell.edges[e].stride for s in inputs for e in by_src[s]}
        waves += [inputs] if len(strides) == 1 else [[s] for s in inputs]
    waves += [[s] for s in srcs if s >= 2]
    return [_Group(w, by_src, cell) for w in waves]


def _drop_masks(cell: nn.Module, x_dtype: torch.dtype, n_local: int, device: torch.device
                ) -> dict[tuple[int, int], torch.Tensor]:
    """Drop-path masks for every droppable op, drawn in the per-edge path's order (same numbers)."""
    masks: dict[tuple[int, int], torch.Tensor] = {}
    for node in cell._nodes:
        for idx, _src in cell._inputs[node]:
            mixed = cell.edges[idx]
            keep = 1.0 - mixed.drop_prob
            for i, droppable, _m in mixed._plan:
                if droppable:
                    n, rows = sample_rows(n_local)
                    mask = torch.empty(n, 1, 1, 1, device=device, dtype=x_dtype).bernoulli_(keep)
                    masks[(idx, i)] = mask[rows]
    return masks


def forward_cell(cell: nn.Module, states: list[torch.Tensor], weights: list[torch.Tensor],
                 edge_scales: list[torch.Tensor] | None) -> torch.Tensor:
    """The cell's nodes from its two preprocessed inputs ``states``, edges batched per wave
    (the same values as the per-edge path, up to float rounding)."""
    groups = cell._groups
    if groups is None:
        groups = cell._groups = build_groups(cell)
    partial = cell.partial
    first = cell.edges[0]
    drop = first.training and first.drop_prob > 0.0
    k = first.k if partial else 1
    mix = weights if edge_scales is None else [w * s for w, s in zip(weights, edge_scales)]
    flat = torch.cat(mix) if len(mix) > 1 else mix[0]
    offsets = cell._offsets
    masks = _drop_masks(cell, states[0].dtype, states[0].shape[0], states[0].device) if drop else None
    keep = 1.0 - first.drop_prob if drop else 1.0
    outputs: dict[int, torch.Tensor] = {}  # edge index -> its output
    done = [False] * len(groups)
    for node in cell._nodes:
        # every wave whose sources are ready and that has not run: run it now
        for gi, g in enumerate(groups):
            if not done[gi] and max(g.sources) < len(states):
                done[gi] = True
                for e, out in zip(g.edges, _run_group(cell, g, states, flat, offsets, masks, keep, partial,
                                                      k, edge_scales)):
                    outputs[e] = out
        total = None
        for idx, _src in cell._inputs[node]:
            term = outputs[idx]
            total = term if total is None else total + term
        states.append(total)
    return torch.cat(states[2:], dim=1)


#: On CPU, a kind on some of a wave's edges only (per-edge candidate sets, DG-DARTS stage 1) runs
#: per edge: batched, its stacked inputs and grouped convs measured 1.35x slower per step there
#: (``benchmarks/dispatch_count.py --stage 1 --compare``); on a GPU, where launches count, batched.
CPU_SUBSETS_PER_EDGE = True


def _run_group(cell, g: _Group, states: list[torch.Tensor], flat: torch.Tensor, offsets: list[int],
               masks: dict | None, keep: float, partial: bool, k: int,
               edge_scales: list[torch.Tensor] | None) -> list[torch.Tensor]:
    E = len(g.edges)
    full = [states[s] for s in g.sources]
    if partial:
        c = full[0].shape[1] // k
        ins = [t[:, :c] for t in full]
    else:
        ins = full
    C = ins[0].shape[1]
    relus: dict[int, torch.Tensor] = {}

    def relu_of(src: int) -> torch.Tensor:
        if src not in relus:
            relus[src] = torch.relu(ins[src])
        return relus[src]

    x = x_relu = None  # the whole wave's stacked input and its relu, made when a kind needs them
    acc = None  # the sum of the kinds on every edge
    terms: list[list[torch.Tensor]] = [[] for _ in range(E)]  # per edge, the other kinds' outputs
    widx, sizes = g.scale_index(offsets, C, ins[0].device)
    all_scales = flat.index_select(0, widx).split(sizes) if g.kinds else ()  # per output channel
    for kind, scales in zip(g.kinds, all_scales):
        if masks is not None and kind.droppable:
            scales = scales / keep
        if kind.batched and (kind.full or not CPU_SUBSETS_PER_EDGE or ins[0].device.type != "cpu"):
            if kind.full:
                if x is None:
                    x = stack_inputs(ins, g.counts)
                if kind.relu_input and x_relu is None:
                    x_relu = torch.relu(x)
                xin, xr = x, x_relu if kind.relu_input else None
            else:  # on some edges of the wave (per-edge candidate sets): its own stack of the sources
                xin = stack_inputs([ins[src] for src, _n in kind.source_counts], [n for _s, n in kind.source_counts])
                xr = None
                if kind.relu_input:
                    xr = stack_inputs([relu_of(src) for src, _n in kind.source_counts],
                                      [n for _s, n in kind.source_counts])
            y = type(kind.modules[0]).batched_forward(kind.modules, xin, scales, xr)
            if masks is not None and kind.droppable:
                m = torch.cat([masks[(e, i)] for e, i in zip(kind.edges, kind.cand)], dim=1)
                y = y * m.to(y.dtype).repeat_interleave(C, dim=1)
            if kind.full:
                acc = y if acc is None else acc.add_(y)
            else:
                blocks = y.split(C, dim=1) if len(kind.modules) > 1 else (y,)
                for pos, blk in zip(kind.positions, blocks):
                    terms[pos].append(blk)
        else:
            for j, (module, pos) in enumerate(zip(kind.modules, kind.positions)):
                src = g.source_of[pos]
                xr = relu_of(src) if getattr(module, "relu_input", False) else None
                y = nasreg.MixedOp.op_term(module, ins[src], scales[j * C], xr)
                if masks is not None and kind.droppable:
                    y = y * masks[(kind.edges[j], kind.cand[j])].to(y.dtype)
                terms[pos].append(y)
    # split, not narrow views: their backward is one cat that keeps the memory format (the sum of
    # zero-padded narrow gradients is NCHW, which sends a channels-last BN backward down a slow path)
    parts: list[torch.Tensor | None] = [None] * E
    if acc is not None:
        parts = list(acc.split(C, dim=1)) if E > 1 else [acc]
    for pos in range(E):
        for t in terms[pos]:
            parts[pos] = t if parts[pos] is None else parts[pos] + t
        if parts[pos] is None:  # only zero ops on this edge
            n, _, h, w = ins[0].shape
            s = cell.edges[g.edges[pos]].stride
            parts[pos] = ins[0].new_zeros(n, C, (h + s - 1) // s, (w + s - 1) // s)
    if not partial:
        return parts
    from .space import shuffle_concat

    pool = cell.edges[g.edges[0]].bypass_pool
    rests = [t[:, C:] if pool is None else pool(t[:, C:]) for t in full]
    outs = []
    for pos, e in enumerate(g.edges):
        r = rests[g.source_of[pos]]
        if edge_scales is not None:
            r = r * edge_scales[e]
        outs.append(shuffle_concat(parts[pos], r, k))
    return outs
