"""Time one search step (architecture step + weight step) of a spec's supernet.

Prints a table of seconds per step (median), images per second and peak memory for every
combination of --order, --batch and stage, each measured in a fresh subprocess so that peak RSS
belongs to that configuration alone. Stage 0 is the full candidate set; with --stages-from RUN_DIR
the later stages use the per-edge candidate sets that run recorded in stages.json (e.g. DG-DARTS
stage 1), so stage 0 and stage 1 are compared in the same run of this script.

    python benchmarks/search_step.py specs/quickstart.toml --order 1 --order 2 --batch 16 --batch 64
    python benchmarks/search_step.py specs/quickstart.toml --stages-from runs/quickstart --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def measure(args: argparse.Namespace) -> dict:
    import torch

    from nasreg._core import spec as spec_mod
    from nasreg._core.search import make_loaders, peak_memory_mb, pick_device, seed_everything

    torch.set_num_threads(args.threads)
    overrides = [*args.set, f"data.batch_size={args.batch}", f"strategy.order={args.order}"]
    spec, plugins = spec_mod.load(args.spec, overrides)
    device = pick_device(args.device or spec.run.device)
    seed_everything(spec.run.seed)
    space = spec.search_space.build()
    candidates = space.full_candidates()
    if args.stage > 0:
        stages = json.loads((Path(args.stages_from) / "stages.json").read_text())
        candidates = stages[args.stage]["candidates"]
    bundle = spec.dataset.build()
    train_loader, val_loader = make_loaders(spec, bundle, device)
    model = space.build_supernet(candidates, ops=plugins.registries.operations,
                                 in_channels=bundle.in_channels, num_classes=bundle.num_classes).to(device)
    strategy = spec.strategy.build()
    strategy.setup(model, epochs=1, steps_per_epoch=args.steps + args.warmup)
    batches = []
    it_t, it_v = iter(train_loader), iter(val_loader)
    while len(batches) < args.steps + args.warmup:
        try:
            bt, bv = next(it_t), next(it_v)
        except StopIteration:
            it_t, it_v = iter(train_loader), iter(val_loader)
            continue
        if len(bt[1]) == args.batch and len(bv[1]) == args.batch:
            batches.append(([t.to(device) for t in bt], [t.to(device) for t in bv]))
    times = []
    for i, (bt, bv) in enumerate(batches):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        strategy.step(tuple(bt), tuple(bv), update_alpha=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"s_per_step_min": min(times),"order": args.order, "batch": args.batch, "stage": args.stage, "device": str(device),
            "threads": args.threads, "num_weights": model.num_weights(),
            "num_candidate_ops": sum(len(c) for e in candidates.values() for c in e),
            "image_shape": list(bundle.train[0][0].shape),
            "s_per_step": step, "images_per_s": args.batch / step,
            "peak_memory_mb": peak_memory_mb(device), "steps_timed": len(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec")
    p.add_argument("--order", type=int, action="append", help="1 and/or 2 (default: 1 2)")
    p.add_argument("--batch", type=int, action="append", help="batch sizes (default: 16 64)")
    p.add_argument("--stages-from", help="run directory whose stages.json gives later stages' candidates")
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", help="write the results here as JSON")
    p.add_argument("--stage", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        args.order, args.batch = args.order[0], args.batch[0]
        print(json.dumps(measure(args)))
        return

    orders = args.order or [1, 2]
    batches = args.batch or [16, 64]
    stages = [0]
    if args.stages_from:
        stages = list(range(len(json.loads((Path(args.stages_from) / "stages.json").read_text()))))
    rows = []
    for order in orders:
        for batch in batches:
            for stage in stages:
                cmd = [sys.executable, __file__, args.spec, "--one", "--order", str(order), "--batch", str(batch),
                       "--stage", str(stage), "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--threads", str(args.threads)]
                if args.stages_from:
                    cmd += ["--stages-from", args.stages_from]
                if args.device:
                    cmd += ["--device", args.device]
                for s in args.set:
                    cmd += ["--set", s]
                env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    sys.exit(f"benchmark failed for order {order} batch {batch} stage {stage}:\n{out.stderr}")
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"search step: {args.spec} ({rows[0]['device']}, {args.threads} threads)")
    for col in ("order", "batch", "stage", "cand. ops", "weights", "s/step (median)", "s/step (min)",
                "images/s", "peak MB", "vs stage 0"):
        table.add_column(col, justify="right")
    for r in rows:
        base = next(b for b in rows if b["order"] == r["order"] and b["batch"] == r["batch"] and b["stage"] == 0)
        table.add_row(str(r["order"]), str(r["batch"]), str(r["stage"]), str(r["num_candidate_ops"]),
                      f"{r['num_weights']:,}", f"{r['s_per_step']:.4f}", f"{r['s_per_step_min']:.4f}",
                      f"{r['images_per_s']:.1f}",
                      f"{r['peak_memory_mb']:.0f}", f"{r['s_per_step'] / base['s_per_step']:.2f}x")
    Console(width=160).print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
