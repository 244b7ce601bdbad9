"""What a study's report reads of a run directory: one trial record per run, from its files only.

The record is the same whether the run finished in one go, was resumed, or was made by hand and
handed to ``nasreg compare``: everything in it comes from ``summary.json``, ``eval/results.json``
and the genotype, never from what a process remembered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import NasregError
from .rundir import RESULTS_FILE, SPEC_FILE, SUMMARY_FILE, RunDir

__all__ = ["run_status", "trial_record"]


def run_status(run_dir: Path, needs_evaluation: bool | None = None) -> tuple[str, str | None]:
    """``(status, error)`` of a run directory: ``finished`` (its search, and its ``[evaluate]``
    when the spec has one), ``failed`` (``summary.json`` says so, with the reason),
    ``interrupted`` (begun: ``spec.toml`` is there) or ``pending`` (nothing of it). A damaged
    file is ``failed`` with the one-line reason."""
    files = RunDir(run_dir)
    if not files.exists(SPEC_FILE):
        return "pending", None
    try:
        if not files.exists(SUMMARY_FILE):
            return "interrupted", None
        summary = files.read_json(SUMMARY_FILE)
        if summary.get("status") == "failed":
            return "failed", str(summary.get("error") or "the search failed")
        if needs_evaluation is None:
            needs_evaluation = "evaluate" in files.read_toml(SPEC_FILE)
        if needs_evaluation and not files.eval.exists(RESULTS_FILE):
            return "interrupted", None
    except NasregError as exc:
        return "failed", str(exc)
    return "finished", None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def trial_record(run_dir: Path, arm: str, seed: int, rel: str, *, error: str | None = None,
                 describe: Any = None) -> dict[str, Any]:
    """The report's record of one trial (see :mod:`nasreg._core.study_report`). ``error``: a
    failure recorded outside the run directory (a trial refused before it made one).
    ``describe(genotype_dict, run_dir) -> {"params", "flops"}``: the found network's size where
    the run has no evaluation (None: unknown)."""
    record: dict[str, Any] = {"arm": arm, "seed": int(seed), "run_dir": rel, "status": "pending", "error": None,
                              "search_val_acc": None, "test_acc": None, "params": None, "flops": None,
                              "search_seconds": None, "eval_seconds": None, "device": None, "gpus": 0,
                              "stages": [], "genotype": None}
    status, reason = run_status(run_dir)
    record["status"], record["error"] = status, reason
    if status == "pending" and error:
        record["status"], record["error"] = "failed", error
    if status != "finished":
        return record
    files = RunDir(run_dir)
    try:
        summary = files.read_json(SUMMARY_FILE)
        record["search_val_acc"] = _number(summary.get("final_val_acc"))
        record["search_seconds"] = _number(summary.get("wall_seconds"))
        device = str(summary.get("device") or "cpu")
        record["device"] = device
        record["gpus"] = int(summary.get("world_size") or 1) if device.startswith("cuda") else 0
        record["stages"] = [{"stage": int(s.get("stage", i)), "num_candidate_ops": s.get("num_candidate_ops"),
                             "epochs": s.get("epochs")} for i, s in enumerate(summary.get("stages") or ())
                            if isinstance(s, dict)]
        genotype = summary.get("genotype")
        record["genotype"] = genotype if isinstance(genotype, dict) else None
        if files.eval.exists(RESULTS_FILE):
            results = files.eval.read_json(RESULTS_FILE)
            record["test_acc"] = _number(results.get("test_acc"))
            record["eval_seconds"] = _number(results.get("wall_seconds"))
            record["params"] = results.get("params")
            record["flops"] = results.get("flops")
        elif describe is not None and record["genotype"] is not None:
            size = describe(record["genotype"], run_dir)
            if size:
                record["params"], record["flops"] = size.get("params"), size.get("flops")
    except NasregError as exc:
        record["status"], record["error"] = "failed", str(exc)
    return record
