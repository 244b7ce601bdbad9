"""Time whole search epochs of a spec: one epoch of every stage, per configuration.

Runs ``nasreg run SPEC`` once per configuration (a fresh process each), with every stage cut to
one joint epoch (``search.epochs = 1``, no warm-up: the architecture is updated at every step, the
dearer kind of epoch), and reads the run directory: per stage the epoch time (train steps and the
validation pass), the median step time, images/s, the supernet's weights and candidate ops, and
the peak memory (``torch.cuda.max_memory_allocated`` on CUDA, peak RSS on CPU). Prints a table and
writes JSON. The default spec is the paper's DG-DARTS (``specs/dgdarts.toml``: batch 96, 8 cells,
16 channels, 2 stages) on ``fake_cifar10`` (``benchmarks/fake_cifar.py``: CIFAR-10-shaped random
data, so no download is needed; timings are those of CIFAR-10).

    python benchmarks/search_epoch.py --config fp32 --config bf16-cl --json epoch.json
    python benchmarks/search_epoch.py --config bf16-cl --set data.limit=5000   # a shorter epoch

Configurations (``--config``; the default runs ``fp32`` and ``bf16-cl``):
  fp32        amp off, NCHW, the device loader (``[data] loader = "auto"`` on CUDA)
  bf16        bf16 autocast
  bf16-cl     bf16 autocast + channels-last
  bf16-cl-compile  the same + ``torch.compile`` of the supernet
  dataloader  bf16 + channels-last with a PyTorch DataLoader (8 worker processes) instead
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CONFIGS = {
    "fp32": ["strategy.amp=off"],
    "bf16": ["strategy.amp=bf16"],
    "bf16-cl": ["strategy.amp=bf16", "strategy.channels_last=true"],
    "bf16-cl-compile": ["strategy.amp=bf16", "strategy.channels_last=true", "strategy.compile=true"],
    "dataloader": ["strategy.amp=bf16", "strategy.channels_last=true", "data.loader=dataloader",
                   "data.num_workers=8"],
}


def run_config(name: str, spec: Path, extra: list[str], device: str, stages: int, timeout: float) -> dict:
    sets = ["data.dataset=fake_cifar10", f"run.device={device}", f"search.epochs={[1] * stages}",
            f"search.warmup_epochs={[0] * stages}", *CONFIGS[name], *extra]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "nasreg", "run", str(spec), "--plugin", str(HERE / "fake_cifar.py"),
               "--out", str(out), "-q", "--no-preflight"]
        for s in sets:
            cmd += ["--set", s]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"config": name, "failed": f"timed out after {timeout:.0f} s"}
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"config": name, "failed": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
        stages_info = json.loads((out / "stages.json").read_text())
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((out / "summary.json").read_text())
        resolved = (out / "spec.toml").read_text()
    batch = next((int(line.split("=")[1]) for line in resolved.splitlines()
                  if line.strip().startswith("batch_size")), None)
    rows = []
    for info, m in zip(stages_info, metrics):
        rows.append({"stage": info["stage"], "epoch_seconds": info["epoch_seconds"][0],
                     "step_seconds": info["step_seconds"],
                     "images_per_second": (batch / info["step_seconds"]) if batch and info["step_seconds"] else None,
                     "num_weights": info["num_weights"], "num_candidate_ops": info["num_candidate_ops"],
                     "peak_memory_mb": m["peak_memory_mb"], "val_acc": m["val_acc"]})
    return {"config": name, "sets": sets, "batch_size": batch, "wall_seconds": wall, "stages": rows,
            "loader": summary.get("loader"), "device": summary.get("device")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", type=Path, default=ROOT / "specs" / "dgdarts.toml")
    ap.add_argument("--config", action="append", choices=sorted(CONFIGS))
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--stages", type=int, default=2, help="stages of the spec's selector (dg-darts: 2)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = []
    for name in args.config or ["fp32", "bf16-cl"]:
        r = run_config(name, args.spec, args.extra, args.device, args.stages, args.timeout)
        results.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    header = f"{'config':<16} {'stage':>5} {'ops':>4} {'weights':>9} {'s/epoch':>8} {'s/step':>7} {'img/s':>7} {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        if "failed" in r:
            print(f"{r['config']:<16} failed: {r['failed']}")
            continue
        for s in r["stages"]:
            print(f"{r['config']:<16} {s['stage']:>5} {s['num_candidate_ops']:>4} {s['num_weights']:>9,} "
                  f"{s['epoch_seconds']:>8.1f} {s['step_seconds']:>7.3f} {s['images_per_second'] or 0:>7.0f} "
                  f"{s['peak_memory_mb']:>8.0f}")
    if args.json:
        args.json.write_text(json.dumps({"spec": str(args.spec), "results": results}, indent=2))


if __name__ == "__main__":
    main()
