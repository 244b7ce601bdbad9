"""The quickstart's search with the old and the new thread default, on a quiet machine and under a
competing load; prints a table of search seconds and their ratio to the quiet old default.

    python benchmarks/threads_under_load.py [--epochs 2] [--load 2]

* old default: ``[run] threads = 2`` and OpenMP's own wait policy (threads spin a while for
  work before they sleep);
* new default: ``[run] threads = 0`` (the free cores when the run starts) and idle OpenMP
  threads that sleep (``OMP_WAIT_POLICY=PASSIVE``, what ``nasreg`` sets unless told otherwise).

The competing load is ``--load`` busy Python processes (started a minute before the loaded runs,
so that the one-minute load average the new default reads has seen them). Each run is
``nasreg run specs/quickstart.toml`` with ``--epochs`` epochs per stage (one warm-up) and a
one-epoch ``[evaluate]``; the figure is the search's ``wall_seconds`` from ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NASREG = Path(sys.executable).with_name("nasreg")

CONFIGS = {
    "old (threads = 2, OpenMP default wait)": (["--set", "run.threads=2"], {"OMP_WAIT_POLICY": ""}),
    "new (threads = 0, passive wait)": (["--set", "run.threads=0"], {}),
}


def _busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _run(args: list[str], env: dict[str, str], epochs: int, out: Path) -> float:
    full_env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    full_env.update(env)
    cmd = [str(NASREG), "run", str(ROOT / "specs" / "quickstart.toml"), "--out", str(out), "-q", "--no-preflight",
           "--set", f"search.epochs={epochs}", "--set", "search.warmup_epochs=1", "--set", "evaluate.epochs=1", *args]
    subprocess.run(cmd, env=full_env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return float(summary["wall_seconds"])  # the search (the evaluation writes eval/results.json)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs per stage (the quickstart has 6)")
    ap.add_argument("--load", type=int, default=2, help="busy processes of the competing load")
    opts = ap.parse_args()
    rows: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (args, env) in CONFIGS.items():
            rows[label, "quiet"] = _run(args, env, opts.epochs, Path(tmp) / f"q{len(rows)}")
        procs = _busy(opts.load)
        try:
            time.sleep(65)  # the one-minute load average sees the load
            for label, (args, env) in CONFIGS.items():
                rows[label, "loaded"] = _run(args, env, opts.epochs, Path(tmp) / f"l{len(rows)}")
        finally:
            for p in procs:
                p.kill()
    base = rows[next(iter(CONFIGS)), "quiet"]
    print(f"quickstart search, {opts.epochs} epochs per stage, {os.cpu_count()} cores, load = {opts.load} busy processes")
    print(f"{'default':42} {'quiet s':>9} {'ratio':>6} {'loaded s':>9} {'ratio':>6}")
    for label in CONFIGS:
        q, l = rows[label, "quiet"], rows[label, "loaded"]
        print(f"{label:42} {q:9.1f} {q / base:6.2f} {l:9.1f} {l / base:6.2f}")


if __name__ == "__main__":
    main()
