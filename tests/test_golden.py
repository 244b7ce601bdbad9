"""The shipped specs, shrunk, give with their seed what they gave before the Python-API refactor
(issue 12): the same genotypes, the same per-epoch metrics, the same RL children and the same
final-evaluation metrics. ``tests/golden/specs.json`` was written by ``tests/golden/record.py``
from the code before the refactor.

Two fixes changed results on purpose, and the comparison accounts for exactly those:

* ``metrics.jsonl``'s ``lr`` is the rate the epoch trained at (it used to be the next epoch's):
  epoch ``e``'s new value is the old record's value of epoch ``e - 1``, and epoch 0's is the
  strategy's initial rate;
* a node's edges in a derived genotype are listed strongest first (as in the reference DARTS
  code), not by input index: the cells are compared as sets of edges per node, and the final
  evaluation's metrics (whose initial weights follow the edge order) only where the order is the
  same.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "golden"))
import record  # noqa: E402

GOLDEN = json.loads((Path(__file__).parent / "golden" / "specs.json").read_text())
REL = 1e-6  # a different CPU may round differently; same machine: equal
#: Second order's finite-difference Hessian-vector product amplifies rounding: with the packages a
#: fresh install resolved on 2026-12-02 (same torch), the pre-change commit bb663a9 already differs
#: from the recording (2.4e-6 relative in an alpha, 3.2e-5 in a train loss), so the code is not the cause.
#: The quickstart: with the packages of the 2026-12-02 evening install (the optional extras added),
#: the commit before that session's work (a2e1543) already gives 2.5e-4 relative in a validation
#: loss at epoch 1 (same edges, same genotype), so the environment, not the code, moved it.
REL_BY_CASE = {"darts-2nd": 1e-4, "quickstart": 1e-3}


def _close(a, b, where, rel=REL):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _close(a[k], b[k], f"{where}.{k}", rel)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]", rel)
    elif isinstance(a, float) and isinstance(b, (int, float)):
        assert math.isclose(a, b, rel_tol=rel, abs_tol=1e-9), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _edge_sets(cells):
    return {name: (sorted((e["node"], e["input"], e["op"]) for e in cell["edges"]), cell.get("concat"))
            for name, cell in cells.items()} if "edges" in next(iter(cells.values()), {}) else cells


def _shift_lr(old: list[dict], new: list[dict]) -> list[dict]:
    """The old records with each epoch's lr replaced by the rate it trained at."""
    out = []
    for i, rec in enumerate(old):
        rec = dict(rec)
        if "lr" in rec and rec["lr"] is not None:
            same_stage_before = i > 0 and old[i - 1].get("stage") == rec.get("stage")
            rec["lr"] = old[i - 1]["lr"] if same_stage_before else new[i]["lr"]
        out.append(rec)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_shipped_spec_gives_what_it_gave_before_the_refactor(case, tmp_path, one_thread):
    got = record.run_case(case, tmp_path / case)
    want = GOLDEN[case]
    assert _edge_sets(got["cells"]) == _edge_sets(want["cells"])
    _close(got["metrics"], _shift_lr(want["metrics"], got["metrics"]), f"{case}: metrics",
           REL_BY_CASE.get(case, REL))
    # Each child's record has carried the spec's hash since the resume checks (issue 13): not in the old records.
    children = [{k: v for k, v in c.items() if k != "spec_hash"} if isinstance(c, dict) else c
                for c in got["children"]]
    _close(children, want["children"], f"{case}: children")
    if got["cells"] == want["cells"]:  # same edge order: the same evaluation network
        _close(got["eval_metrics"], want["eval_metrics"], f"{case}: eval metrics")
    starts = [m["lr"] for m in got["metrics"] if m["epoch"] == 0]  # every stage starts its schedule
    assert len(set(starts)) <= 1


def test_epoch_zero_records_the_rate_it_trained_at(tmp_path, one_thread):
    """The defect: ``lr`` of epoch 0 was the rate after the first scheduler step (0.0467 for the
    quickstart, which trains epoch 0 at 0.05)."""
    got = record.run_case("darts-2nd", tmp_path / "d")
    spec_lr = 0.025  # specs/darts.toml: w_lr (DARTS: 0.025), cosine over 2 epochs to w_lr_min
    lrs = [m["lr"] for m in got["metrics"]]
    assert lrs[0] == pytest.approx(spec_lr, rel=1e-12)
    assert lrs[1] < lrs[0]
