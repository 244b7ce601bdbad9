"""CONTRIBUTING.md's walk-through is real: its plugin of every kind runs whole searches.

The per-kind code blocks of CONTRIBUTING.md are excerpts of ``tests/fixtures/walkthrough/
nasreg_walkthrough.py``; this file checks that they are, that the plugin imports only what
``nasreg`` exports, and runs with it a two-stage supernet search (its space, dataset, strategy,
selector and clusterer) and a sampling search, each with an ``[evaluate]``, on digits, in
seconds. The plugin's logger records every lifecycle hook, and the keys of the dicts it received
must be the ones CONTRIBUTING's table lists.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch

import nasreg
from nasreg import search

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "walkthrough" / "nasreg_walkthrough.py"
DOC = ROOT / "CONTRIBUTING.md"
OPS = ["wt_zero", "wt_skip", "wt_conv_3x3"]
#: What the sampling strategy returns beside the genotype (summary keys of its own).
SAMPLING_KEYS = ["best_val_acc", "best_child"]


def tiny_spec(**tables):
    spec = {
        "run": {"name": "wt", "seed": 0, "device": "cpu", "threads": 1},
        "data": {"dataset": "wt-digits", "limit": 100, "batch_size": 25},
        "search_space": {"name": "wt-cell", "operations": OPS, "nodes": 2, "cells": 1, "channels": 4},
        "evaluate": {"epochs": 1, "batch_size": 32, "cells": 1, "channels": 4, "limit": 64},
    }
    spec.update(tables)
    return spec


SUPERNET = {"search": {"epochs": 2, "warmup_epochs": 1}, "strategy": {"name": "wt-sgd"},
            "selector": {"name": "wt-prune", "min_ops": 1}}
SAMPLING = {"strategy": {"name": "wt-random", "samples": 2}}


def log(run_dir: Path) -> list[dict]:
    return nasreg.RunDir(run_dir).read_jsonl("walkthrough.jsonl")


@pytest.fixture(scope="module")
def supernet_run(tmp_path_factory):
    threads = torch.get_num_threads()
    try:
        yield search(tiny_spec(**SUPERNET), plugins=[str(FIXTURE)],
                            out=tmp_path_factory.mktemp("wt") / "supernet", preflight=False)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sampling_run(tmp_path_factory):
    threads = torch.get_num_threads()
    try:
        yield search(tiny_spec(**SAMPLING), plugins=[str(FIXTURE)],
                            out=tmp_path_factory.mktemp("wt") / "sampling", preflight=False)
    finally:
        torch.set_num_threads(threads)


def documented_keys() -> dict[tuple[str, str, str], list[str]]:
    """(hook, variant, dict) -> keys, from CONTRIBUTING's table of the lifecycle hooks' dicts."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`(on_\w+)`(?: \((.+)\))?", cells[0]) if len(cells) == 3 else None
        if m:
            rows[(m.group(1), m.group(2) or "", cells[1].strip("`"))] = re.findall(r"`(\w+)`", cells[2])
    return rows


# --- the documentation is the code ------------------------------------------------------------

def test_walkthrough_code_blocks_are_excerpts_of_the_fixture():
    code = FIXTURE.read_text()
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    ours = [b for b in blocks if re.search(r"\bwt_|\bWt[A-Z]|LOG_FILE|CHILDREN_FILE|from nasreg import Range, Ref, hookimpl", b)]
    pieces = [p.strip("\n") for b in ours for p in b.split("\n\n\n") if p.strip()]
    assert len(ours) >= 10 and len(pieces) >= 25, (len(ours), len(pieces))
    missing = [p.splitlines()[0] for p in pieces if p not in code]
    assert missing == [], f"CONTRIBUTING blocks not in {FIXTURE.name} (starting): {missing}"
    # every kind is shown
    for name in ("wt_digits", "class WtSpace", "class WtSupernet", "class WtSGD", "class WtRandom",
                 "class WtPrune", "class WtSplit", "def on_epoch_end", "def register_selectors"):
        assert any(name in p for p in pieces), name


def test_fixture_imports_only_what_nasreg_exports():
    tree = ast.parse(FIXTURE.read_text())
    exported = set(nasreg.__all__)
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.startswith("nasreg")
                    and a.name != "nasreg"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nasreg"):
            if node.module != "nasreg":
                bad.append(node.module)
            bad += [f"nasreg.{a.name}" for a in node.names if a.name not in exported]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "nasreg" and node.attr not in exported):
            bad.append(f"nasreg.{node.attr}")
    assert bad == []


def test_typed_keys_and_the_stage_check_fail_validation_in_one_line():
    with pytest.raises(nasreg.SpecError, match=r"\[data\] classes: expected an integer >= 2 and <= 10"):
        nasreg.validate(tiny_spec(**SUPERNET) | {"data": {"dataset": "wt-digits", "classes": 11}},
                        plugins=[str(FIXTURE)])
    with pytest.raises(nasreg.SpecError, match=r"\[search\].*stage 0 has no joint epochs"):
        nasreg.validate(tiny_spec(**SUPERNET) | {"search": {"epochs": 1, "warmup_epochs": 1}},
                        plugins=[str(FIXTURE)])


# --- a supernet search with every kind ---------------------------------------------------------

def test_supernet_search_runs_both_stages_and_derives_through_the_space(supernet_run):
    genotype = supernet_run.genotype
    assert genotype.space == "wt-cell"
    assert {k: genotype.provenance[k] for k in ("selector", "stages", "min_ops", "seed")} == {
        "selector": "wt-prune", "stages": 2, "min_ops": 1, "seed": 0}
    edges = genotype.cells["normal"].edges
    assert [(e.node, e.input) for e in edges if e.node == 1] == [(1, 0)]
    assert len([e for e in edges if e.node == 2]) == 2  # inputs_per_node
    assert all(e.op != "wt_zero" for e in edges)
    stage_ends = [r for r in log(supernet_run.run_dir) if r["hook"] == "on_stage_end"]
    first, second = (r["result"]["candidates"]["normal"] for r in stage_ends)
    assert first == [OPS] * 3
    assert all(set(b) <= set(a) and b for a, b in zip(first, second))  # the selector narrowed them
    assert supernet_run.evaluation.test_acc is not None
    net = nasreg.build_network(genotype, spec=tiny_spec(**SUPERNET) | {"run": {"plugins": [str(FIXTURE)]}})
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_supernet_search_hooks_and_their_keys_are_the_documented_ones(supernet_run):
    records = log(supernet_run.run_dir)
    assert [(r["hook"], r.get("stage"), r.get("epoch")) for r in records] == [
        ("on_run_start", None, None), ("on_epoch_end", 0, 0), ("on_epoch_end", 0, 1), ("on_stage_end", 0, None),
        ("on_epoch_end", 1, 0), ("on_epoch_end", 1, 1), ("on_stage_end", 1, None), ("on_run_end", None, None)]
    doc = documented_keys()
    assert [list(r["metrics"]) for r in records if r["hook"] == "on_epoch_end"] == \
        [doc["on_epoch_end", "", "metrics"]] * 4
    summary = records[-1]["summary"]
    assert list(summary) == doc["on_run_end", "supernet search", "summary"]
    assert list(summary["stages"][0]) == doc["on_run_end", "supernet search", 'summary["stages"][i]']
    fields = [name for name, _value in vars(nasreg.StageResult(0, {}, {}, {})).items()]
    assert list(records[3]["result"]) == fields
    documented_fields = re.findall(r"^\| `(\w+)` \|", DOC.read_text().split("nasreg.StageResult`**")[1]
                                   .split("\n\n")[1], flags=re.M)
    assert documented_fields == fields


def test_evaluate_hooks_and_their_keys_are_the_documented_ones(supernet_run):
    records = log(supernet_run.run_dir / "eval")
    assert [(r["hook"], r["kind"]) for r in records] == [
        ("on_train_start", "evaluate"), ("on_train_epoch_end", "evaluate"), ("on_train_end", "evaluate")]
    assert records[0]["epochs"] == 1 and records[0]["params"] > 0
    doc = documented_keys()
    assert list(records[1]["metrics"]) == doc["on_train_epoch_end", "", "metrics"]
    assert list(records[2]["results"]) == doc["on_train_end", "", "results"]


# --- a sampling search -----------------------------------------------------------------------------

def test_sampling_search_returns_its_best_child_and_fires_the_run_hooks(sampling_run):
    run_dir = sampling_run.run_dir
    children = nasreg.RunDir(run_dir).read_jsonl("children.jsonl")
    assert [c["child"] for c in children] == [0, 1]
    best = max(children, key=lambda c: c["val_acc"])
    assert sampling_run.summary["best_child"] == best["child"]
    assert sampling_run.genotype.to_dict()["cells"] == best["genotype"]["cells"]
    assert sampling_run.genotype.provenance["strategy"] == "wt-random"
    records = log(run_dir)
    assert [r["hook"] for r in records] == ["on_run_start", "on_run_end"]
    summary = list(records[-1]["summary"])
    assert summary[-4:-2] == SAMPLING_KEYS  # the strategy's keys, then genotype and status
    assert [k for k in summary if k not in SAMPLING_KEYS] == \
        documented_keys()["on_run_end", "sampling search", "summary"]
    assert [r["hook"] for r in log(run_dir / "eval")] == ["on_train_start", "on_train_epoch_end", "on_train_end"]
