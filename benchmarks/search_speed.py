"""nasreg's search step against a naive re-implementation of the reference DARTS code, same run.

For every configuration (implementation x order x batch x stage x threads) one fresh subprocess
builds the search supernet of a spec's ``[search_space]`` (default ``specs/darts.toml``: 8 cells,
16 channels, the 8 DARTS ops) for random CIFAR-shaped data (3x32x32, 10 classes; no dataset is
needed), times ``--steps`` search steps (architecture step + weight step) after ``--warmup``
untimed ones, and reports:

* s/step (median and min), images/s (batch / median);
* peak memory: the subprocess's peak RSS on CPU (so it belongs to that configuration alone; it
  includes the interpreter and torch, about 300-400 MB), ``torch.cuda.max_memory_allocated`` on
  CUDA;
* the FLOPs of one supernet forward of the batch (``torch.utils.flop_counter.FlopCounterMode``:
  convolutions and matmuls), the nominal FLOPs of a step (forward x 3 for forward + backward, x 2
  passes first order, x 5 second order, as in REFERENCE.md), the machine's measured rate on a large
  fp32 3x3 convolution in the same subprocess (GFLOP/s) and the fraction of it the step achieves;
* ``nasreg / baseline``: the ratio of the medians of the two implementations for the same
  (order, batch, stage, threads), measured back to back in this run; ``cpu ratio`` the same for
  the process CPU time per step (user + system, all threads), which other processes competing
  for the cores do not inflate the way they inflate wall time (at 1 thread it is the better
  figure on a shared machine; with more threads it also counts threads spinning at barriers).

``baseline`` is ``benchmarks/reference_mixed_op.py``: the original DARTS code's structure (every op
computed, the zero op as ``x.mul(0.)``, Python ``sum`` of weighted outputs, full ``backward()`` in
both steps, a fresh unrolled model per second-order step). With ``--stages-from RUN_DIR`` the later
stages use the per-edge candidate sets that run recorded in ``stages.json`` (DG-DARTS stage 1), for
both implementations. ``--set`` overrides keys of the spec (e.g.
``--set search_space.partial_channels=4``; they apply to nasreg only).

    python benchmarks/search_speed.py --order 1 --order 2 --batch 16 --batch 64 --threads 1 --json out.json
    python benchmarks/search_speed.py --stages-from runs/dgdarts --order 1 --batch 96 --impl nasreg

A configuration that fails (e.g. killed for memory) is reported as failed; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMAGE = (3, 32, 32)
CLASSES = 10
PASSES = {1: 2, 2: 5}  # forward+backward passes per step: first order 2, second order 5


# ----------------------------------------------------------------------------- worker side

def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def conv_rate_gflops(device, reps: int = 5) -> float:
    """fp32 3x3 convolution, 128 -> 128 channels, 32x32, batch 32 (9.7 GFLOP): best of ``reps``."""
    import torch
    import torch.nn.functional as F

    n = 32 if device.type == "cpu" else 256
    x = torch.randn(n, 128, 32, 32, device=device)
    w = torch.randn(128, 128, 3, 3, device=device)
    flops = 2 * n * 128 * 32 * 32 * 128 * 9
    best = float("inf")
    with torch.no_grad():
        for i in range(reps + 1):
            _sync(device)
            t0 = time.perf_counter()
            F.conv2d(x, w, padding=1)
            _sync(device)
            if i:
                best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_flops(model, x) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def _candidates(cfg: dict, space):
    if cfg["stage"] == 0:
        return space.full_candidates()
    stages = json.loads((Path(cfg["stages_from"]) / "stages.json").read_text())
    return stages[cfg["stage"]]["candidates"]


def measure(cfg: dict) -> dict:
    import torch

    from nasreg._core import spec as spec_mod
    from nasreg._core.search import pick_device

    torch.set_num_threads(cfg["threads"])
    device = pick_device(cfg["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    overrides = [f"strategy.order={cfg['order']}", *(cfg["set"] if cfg["impl"] == "nasreg" else [])]
    spec, plugins = spec_mod.load(cfg["spec"], overrides)
    space = spec.search_space.build()
    candidates = _candidates(cfg, space)
    torch.manual_seed(0)

    if cfg["impl"] == "nasreg":
        model = space.build_supernet(candidates, ops=plugins.registries.operations,
                                     in_channels=IMAGE[0], num_classes=CLASSES).to(device)
        strategy = spec.strategy.build()
        strategy.setup(model, epochs=1, steps_per_epoch=cfg["steps"] + cfg["warmup"])
        num_weights = model.num_weights()

        def step(train, val):
            strategy.step(train, val, update_alpha=True)
    else:
        sys.path.insert(0, str(HERE))
        from reference_mixed_op import Network, ReferenceSearch

        if space.reductions != sorted({space.cells // 3, 2 * space.cells // 3}):
            raise SystemExit("the baseline supports the DARTS reduction rule only")
        model = Network(C=space.channels, num_classes=CLASSES, layers=space.cells, steps=space.nodes,
                        multiplier=space.nodes, stem_multiplier=space.stem_multiplier,
                        candidates=candidates, in_channels=IMAGE[0]).to(device)
        ref = ReferenceSearch(model, order=cfg["order"])
        num_weights = sum(p.numel() for p in model.parameters())

        def step(train, val):
            ref.step(train, val)

    g = torch.Generator().manual_seed(1)
    b = cfg["batch"]
    batches = [((torch.randn(b, *IMAGE, generator=g).to(device), torch.randint(0, CLASSES, (b,), generator=g).to(device)),
                (torch.randn(b, *IMAGE, generator=g).to(device), torch.randint(0, CLASSES, (b,), generator=g).to(device)))
               for _ in range(2)]
    rate = conv_rate_gflops(device)
    rss_before = _rss_now_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu_times = [], []
    for i in range(cfg["warmup"] + cfg["steps"]):
        train, val = batches[i % len(batches)]
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        step(train, val)
        _sync(device)
        if i >= cfg["warmup"]:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mb())
    flops = forward_flops(model, batches[0][0][0])
    median = statistics.median(times)
    step_flops = 3 * PASSES[cfg["order"]] * flops
    return {**{k: cfg[k] for k in ("impl", "order", "batch", "stage", "threads")}, "device": str(device),
            "num_weights": num_weights,
            "num_candidate_ops": sum(len(c) for e in candidates.values() for c in e),
            "s_per_step": median, "s_per_step_min": min(times), "s_per_step_all": times,
            "cpu_s_per_step": statistics.median(cpu_times), "cpu_s_per_step_min": min(cpu_times),
            "images_per_s": b / median, "peak_memory_mb": peak,
            "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS",
            "rss_before_steps_mb": rss_before if device.type == "cpu" else None,
            "forward_gflop": flops / 1e9, "forward_gflop_per_image": flops / b / 1e9,
            "step_gflop": step_flops / 1e9, "conv_gflops": rate,
            "achieved_fraction": step_flops / median / (rate * 1e9)}


# ----------------------------------------------------------------------------- driver side

def run_one(cfg: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]), MKL_NUM_THREADS=str(cfg["threads"]))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg)], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    if out.returncode != 0:
        why = f"exit status {out.returncode}" + (" (killed: out of memory?)" if out.returncode < 0 else "")
        tail = out.stderr.strip().splitlines()[-1:] or [""]
        return {**{k: cfg[k] for k in ("impl", "order", "batch", "stage", "threads")},
                "failed": f"{why}: {tail[0]}", "wall_s": time.perf_counter() - t0}
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["wall_s"] = time.perf_counter() - t0
    return row


def key(r: dict) -> tuple:
    return (r["order"], r["batch"], r["stage"], r["threads"])


def print_table(rows: list[dict], title: str) -> None:
    cols = ["impl", "order", "batch", "stage", "thr", "cand", "weights", "GFLOP/img", "s/step med",
            "s/step min", "cpu s/step", "img/s", "peak MB", "conv GF/s", "achieved", "nasreg/base", "cpu ratio"]
    lines = []
    for r in rows:
        if "failed" in r:
            lines.append([r["impl"], r["order"], r["batch"], r["stage"], r["threads"], "", "", "", "FAILED",
                          r["failed"][:40], "", "", "", "", "", "", ""])
            continue
        ratio = cpu_ratio = ""
        if r["impl"] == "nasreg":
            base = next((b for b in rows if b["impl"] == "baseline" and key(b) == key(r) and "failed" not in b),
                        None)
            if base is not None:
                ratio = f"{r['s_per_step'] / base['s_per_step']:.3f}"
                if "cpu_s_per_step" in r and "cpu_s_per_step" in base:
                    cpu_ratio = f"{r['cpu_s_per_step'] / base['cpu_s_per_step']:.3f}"
        cpu = f"{r['cpu_s_per_step']:.3f}" if "cpu_s_per_step" in r else ""
        lines.append([r["impl"], r["order"], r["batch"], r["stage"], r["threads"], r["num_candidate_ops"],
                      f"{r['num_weights']:,}", f"{r['forward_gflop_per_image']:.3f}", f"{r['s_per_step']:.3f}",
                      f"{r['s_per_step_min']:.3f}", cpu, f"{r['images_per_s']:.1f}", f"{r['peak_memory_mb']:.0f}",
                      f"{r['conv_gflops']:.0f}", f"{100 * r['achieved_fraction']:.1f}%", ratio, cpu_ratio])
    widths = [max(len(str(c)), *(len(str(l[i])) for l in lines)) for i, c in enumerate(cols)]
    print(title)
    print("  ".join(str(c).rjust(w) for c, w in zip(cols, widths)))
    for l in lines:
        print("  ".join(str(v).rjust(w) for v, w in zip(l, widths)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(ROOT / "specs" / "darts.toml"),
                   help="spec whose [search_space] and [strategy] are used (default specs/darts.toml)")
    p.add_argument("--order", type=int, action="append", choices=[1, 2], help="default: 1 2")
    p.add_argument("--batch", type=int, action="append", help="default: 16 64 96")
    p.add_argument("--threads", type=int, action="append", help="default: 1 2")
    p.add_argument("--impl", action="append", choices=["nasreg", "baseline"], help="default: both")
    p.add_argument("--stages-from", help="run directory whose stages.json gives later stages' candidates")
    p.add_argument("--steps", type=int, default=3, help="timed steps (median and min reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="spec override (nasreg only)")
    p.add_argument("--json", help="write the rows here as JSON")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="only print the table of earlier --json files")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(Path(f).read_text())["rows"]]
        dev = next((r["device"] for r in rows if "device" in r), "?")
        print_table(rows, f"search step, random 3x32x32 / 10 classes ({dev}; from {', '.join(args.merge)})")
        if args.json:
            Path(args.json).write_text(json.dumps({"merged": args.merge, "rows": rows}, indent=2) + "\n")
        return

    stages = [0]
    if args.stages_from:
        stages = list(range(len(json.loads((Path(args.stages_from) / "stages.json").read_text()))))
    impls = args.impl or ["nasreg", "baseline"]
    rows = []
    for threads in args.threads or [1, 2]:
        for order in args.order or [1, 2]:
            for batch in args.batch or [16, 64, 96]:
                for stage in stages:
                    for impl in impls:  # back to back: the ratio sees the same machine load
                        cfg = {"impl": impl, "order": order, "batch": batch, "stage": stage, "threads": threads,
                               "steps": args.steps, "warmup": args.warmup, "device": args.device,
                               "spec": args.spec, "set": args.set,
                               "stages_from": str(Path(args.stages_from).resolve()) if args.stages_from else None}
                        row = run_one(cfg)
                        rows.append(row)
                        print(json.dumps({k: v for k, v in row.items() if k != "s_per_step_all"}), file=sys.stderr,
                              flush=True)
    dev = next((r["device"] for r in rows if "device" in r), args.device)
    print_table(rows, f"search step, random 3x32x32 / 10 classes, {Path(args.spec).name} {' '.join(args.set)} "
                      f"({dev}; median and min of {args.steps} steps after {args.warmup} warm-up)")
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
