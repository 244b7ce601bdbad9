"""Record what the shipped specs give, shrunk, with their seed: genotype cells, per-epoch metrics
(no timings) and, with [evaluate], the evaluation's per-epoch metrics.

    python tests/golden/record.py OUT.json

``tests/test_golden.py`` runs the same cases and compares them with ``tests/golden/specs.json``,
written by this script from the code before the Python-API refactor (issue 12): a refactor must
not change what a seed gives, except where a fix changes it on purpose (the test says where).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.dataset=digits", "data.limit=160", "data.batch_size=32", "data.num_workers=0",
        "search_space.cells=3", "search_space.channels=4", "run.threads=1"]
TINY_EVAL = ["evaluate.epochs=2", "evaluate.cells=2", "evaluate.channels=4", "evaluate.limit=64",
             "evaluate.batch_size=32"]
TINY_RL = ["data.limit=120", "run.threads=1", "strategy.updates=2", "strategy.children_per_update=2",
           "strategy.child_epochs=1", "strategy.workers=1"]
TINY_CELLS = ["search_space.cells=2", "search_space.channels=4", "search_space.blocks=2"]
#: name -> (spec file, overrides)
CASES: dict[str, tuple[str, list[str]]] = {
    "quickstart": ("quickstart.toml", [*TINY, "search.epochs=2", "search.warmup_epochs=1", *TINY_EVAL]),
    "dgdarts": ("dgdarts.toml", [*TINY, "search.epochs=3", "search.warmup_epochs=1"]),
    "darts-2nd": ("darts.toml", [*TINY, "search.epochs=2", "strategy.order=2"]),
    "nasnet": ("nasnet.toml", [*TINY_RL, *TINY_CELLS, *TINY_EVAL]),
    "random": ("random.toml", [*TINY_RL, *TINY_CELLS, *TINY_EVAL]),
    "nas-rl": ("nas-rl.toml", [*TINY_RL, "search_space.layers=2", "search_space.filters=[24]",
                               *TINY_EVAL[:1], *TINY_EVAL[3:]]),
}
VOLATILE = ("seconds", "memory", "run_dir")


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if not any(w in k for w in VOLATILE)}


def _jsonl(path: Path) -> list[dict]:
    return [_strip(json.loads(line)) for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []


def run_case(name: str, out: Path) -> dict:
    from click.testing import CliRunner

    from nasreg.cli import main

    spec, overrides = CASES[name]
    args = ["run", str(ROOT / "specs" / spec), "--out", str(out), "-q", "--no-preflight"]
    for o in overrides:
        args += ["--set", o]
    result = CliRunner().invoke(main, args)
    if result.exit_code != 0:
        raise RuntimeError(f"{name}: exit {result.exit_code}: {result.output}")
    genotype = json.loads((out / "genotype.json").read_text())
    return {"cells": genotype["cells"], "metrics": _jsonl(out / "metrics.jsonl"),
            "children": _jsonl(out / "children.jsonl"), "eval_metrics": _jsonl(out / "eval" / "metrics.jsonl")}


def main(argv: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    names = argv[1:] or list(CASES)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out[name] = run_case(name, Path(tmp) / name)
    Path(argv[0]).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
