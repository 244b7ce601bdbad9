"""Time a search step of DARTS (first order) and of GDAS on the same supernet, in one run.

The supernet is specs/quickstart.toml's darts-cell space (8 ops, 4 nodes, 3 cells, 8 channels)
on digits-shaped input (1 x 8 x 8, the default) or CIFAR-shaped input (--shape cifar: 3 x 32 x 32),
random images with random labels of 10 classes (the time of a step does not depend on the data).
Each strategy gets a freshly seeded supernet and the same batches; steps alternate between the
two strategies (D, G, D, G, ...) so that a change of machine load hits both alike; the first
--warmup steps of each are not timed. Prints median and minimum seconds per step and the ratio
GDAS / DARTS.

    python benchmarks/gdas_step.py                      # digits shape, batch 64, 2 threads
    python benchmarks/gdas_step.py --shape cifar --batch 32 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import time

SPACE = {  # specs/quickstart.toml's [search_space]
    "name": "darts-cell",
    "operations": ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                   "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"],
    "nodes": 4, "cells": 3, "channels": 8, "stem_multiplier": 3,
}
SHAPES = {"digits": (1, 8, 8), "cifar": (3, 32, 32)}


def build(strategy: dict, in_channels: int, device: str):
    import torch

    import nasreg

    spec = nasreg.load_spec({"run": {"name": "bench", "device": device}, "data": {"dataset": "digits"},
                             "search_space": SPACE, "strategy": strategy, "selector": {"name": "argmax"}})
    space = spec.search_space.build()
    torch.manual_seed(0)
    model = space.build_supernet(space.full_candidates(), ops=spec.plugins.registries.operations,
                                 in_channels=in_channels, num_classes=10).to(device)
    s = spec.strategy.build()
    return model, s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="digits")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps per strategy (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per strategy first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: idle OpenMP threads sleep on a busy machine
    import torch

    torch.set_num_threads(args.threads)
    shape = SHAPES[args.shape]
    n = args.steps + args.warmup
    g = torch.Generator().manual_seed(1)
    batches = [tuple((torch.randn(args.batch, *shape, generator=g).to(args.device),
                      torch.randint(0, 10, (args.batch,), generator=g).to(args.device)) for _ in range(2))
               for _ in range(n)]
    arms = {
        "darts (order 1)": build({"name": "darts", "order": 1}, shape[0], args.device),
        "gdas": build({"name": "gdas"}, shape[0], args.device),
    }
    for model, strategy in arms.values():
        strategy.setup(model, epochs=1, steps_per_epoch=n)
        model.train()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for i, (train, val) in enumerate(batches):
        for name, (_model, strategy) in arms.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            strategy.step(train, val, update_alpha=True)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"search step, {args.shape}-shaped input {shape}, batch {args.batch}, {args.device}, "
          f"{args.threads} threads, {args.steps} timed steps after {args.warmup}, load average {load:.2f}")
    print(f"{'strategy':<18}{'s/step median':>15}{'s/step min':>12}{'vs darts':>10}")
    base = statistics.median(times["darts (order 1)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<18}{med:>15.4f}{min(ts):>12.4f}{med / base:>9.2f}x")


if __name__ == "__main__":
    main()
