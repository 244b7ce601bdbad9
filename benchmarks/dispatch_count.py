"""Count the aten operator calls of one search step of a spec's supernet (and time the step).

Builds the spec's supernet and strategy the way a search does (``[search_space]`` and
``[strategy]`` of SPEC, random CIFAR-shaped data: 3x32x32, 10 classes; no dataset needed), runs
``--warmup`` untimed steps (architecture step + weight step), then counts every aten operator
call of one full step with a ``TorchDispatchMode`` (forward, backward, optimizers: everything
that reaches the dispatcher below autograd, each call of an overload counted once), and times
``--steps`` more steps without the counter (median s/step, ``--threads`` intra-op threads).

Prints the calls by operator (top 15), s/step and, last, ``aten calls per step: N``.

``--stage 1`` gives each edge a DG-DARTS-style stage-1 candidate set: 3 to 5 of the space's ops,
different per edge, drawn with a fixed seed (``--stage-seed``). ``--path per-edge`` sets
``[search_space] batched_edges = false`` (the per-edge mixed ops), ``batched`` (the default) the
batched edges.

    python benchmarks/dispatch_count.py specs/darts.toml --order 1 --batch 16 --path per-edge
    python benchmarks/dispatch_count.py specs/darts.toml --order 2 --stage 1
    python benchmarks/dispatch_count.py specs/darts.toml --compare   # both paths, one table

``--compare`` builds both paths (same seed, same weights), counts each, times their steps
interleaved (so that a busy machine slows both alike) and prints a table with the batched path's
ratio to the per-edge one; the last line is the batched path's count.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter

IMAGE = (3, 32, 32)
CLASSES = 10


def stage1_candidates(space, seed: int) -> dict[str, list[list[str]]]:
    """Per edge 3 to 5 of the space's ops (fixed seed), as DG-DARTS's stage 1 keeps per edge."""
    rng = random.Random(seed)
    ops = list(space.operations)
    out = {}
    for ct, edges in space.edges().items():
        out[ct] = []
        for _ in edges:
            k = rng.randint(3, min(5, len(ops)))
            chosen = set(rng.sample(ops, k))
            out[ct].append([o for o in ops if o in chosen])  # the space's order
    return out


def build(args: argparse.Namespace, path: str | None = None):
    import torch

    import nasreg

    path = args.path if path is None else path
    overrides = [f"strategy.order={args.order}", f"data.batch_size={args.batch}", *args.set]
    if path is not None:
        overrides.append(f"search_space.batched_edges={'true' if path == 'batched' else 'false'}")
    spec = nasreg.load_spec(args.spec, overrides=overrides)
    space = spec.search_space.build()
    candidates = space.full_candidates() if args.stage == 0 else stage1_candidates(space, args.stage_seed)
    torch.manual_seed(0)
    model = space.build_supernet(candidates, ops=spec.plugins.registries.operations,
                                 in_channels=IMAGE[0], num_classes=CLASSES)
    strategy = spec.strategy.build()
    strategy.setup(model, epochs=1, steps_per_epoch=args.warmup + args.steps + 1)
    return model, strategy, candidates


def count_calls(fn) -> Counter:
    """aten operator calls (by overload packet name) made while ``fn()`` runs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls: Counter = Counter()

    class _Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls[str(func.overloadpacket.__name__)] += 1
            return func(*args, **(kwargs or {}))

    with _Count():
        fn()
    return calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec")
    p.add_argument("--order", type=int, default=1, choices=(1, 2))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--stage", type=int, default=0, choices=(0, 1))
    p.add_argument("--stage-seed", type=int, default=0)
    p.add_argument("--path", choices=("per-edge", "batched"), default=None,
                   help="force the per-edge or the batched edges (default: the spec's)")
    p.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--compare", action="store_true", help="per-edge and batched in one run, one table")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.compare:
        compare(args)
        return
    model, strategy, candidates = build(args)
    g = torch.Generator().manual_seed(1)
    b = args.batch
    batches = [((torch.randn(b, *IMAGE, generator=g), torch.randint(0, CLASSES, (b,), generator=g)),
                (torch.randn(b, *IMAGE, generator=g), torch.randint(0, CLASSES, (b,), generator=g)))
               for _ in range(2)]

    def step(i: int) -> None:
        train, val = batches[i % 2]
        strategy.step(train, val, update_alpha=True)

    for i in range(args.warmup):
        step(i)
    calls = count_calls(lambda: step(args.warmup))
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        step(args.warmup + 1 + i)
        times.append(time.perf_counter() - t0)

    total = sum(calls.values())
    n_ops = sum(len(c) for e in candidates.values() for c in e)
    path = args.path or "spec default"
    print(f"{args.spec}: order {args.order}, batch {b}, stage {args.stage} ({n_ops} candidate ops), "
          f"path {path}, {args.threads} thread(s)")
    print(f"{'aten op':<40} {'calls':>8} {'share':>7}")
    for name, n in calls.most_common(args.top):
        print(f"{name:<40} {n:>8} {n / total:>7.1%}")
    rest = total - sum(n for _, n in calls.most_common(args.top))
    print(f"{'(other ' + str(max(len(calls) - args.top, 0)) + ' ops)':<40} {rest:>8} {rest / total:>7.1%}")
    print(f"s/step: {statistics.median(times):.4f} (median of {len(times)}, min {min(times):.4f})")
    print(f"aten calls per step: {total}")


def compare(args: argparse.Namespace) -> None:
    """Both paths: counts, interleaved timed steps, one table."""
    import torch

    g = torch.Generator().manual_seed(1)
    b = args.batch
    batches = [((torch.randn(b, *IMAGE, generator=g), torch.randint(0, CLASSES, (b,), generator=g)),
                (torch.randn(b, *IMAGE, generator=g), torch.randint(0, CLASSES, (b,), generator=g)))
               for _ in range(2)]
    paths = ("per-edge", "batched")
    runs = {}
    for path in paths:
        model, strategy, candidates = build(args, path)
        for i in range(args.warmup):
            strategy.step(*batches[i % 2], update_alpha=True)
        calls = count_calls(lambda s=strategy: s.step(*batches[args.warmup % 2], update_alpha=True))
        runs[path] = (strategy, sum(calls.values()), [])
    n_ops = sum(len(c) for e in candidates.values() for c in e)
    for i in range(args.steps):
        for path in (paths if i % 2 == 0 else paths[::-1]):
            strategy, _, times = runs[path]
            t0 = time.perf_counter()
            strategy.step(*batches[i % 2], update_alpha=True)
            times.append(time.perf_counter() - t0)
    print(f"{args.spec}: order {args.order}, batch {b}, stage {args.stage} ({n_ops} candidate ops), "
          f"{args.threads} thread(s), median of {args.steps} interleaved steps")
    print(f"{'path':<10} {'aten calls':>11} {'ratio':>6} {'s/step':>8} {'ratio':>6}")
    base_calls, base_t = runs["per-edge"][1], statistics.median(runs["per-edge"][2])
    for path in paths:
        _, n, times = runs[path]
        t = statistics.median(times)
        print(f"{path:<10} {n:>11} {n / base_calls:>6.2f} {t:>8.4f} {t / base_t:>6.2f}")
    print(f"aten calls per step: {runs['batched'][1]}")


if __name__ == "__main__":
    main()
