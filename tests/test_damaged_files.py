"""Damaged files in a run directory: every JSON / JSON-lines file nasreg reads back goes through
one bounded, schema-checked reader (:mod:`nasreg._core.readback`), so ``nasreg show``,
``nasreg resume`` and ``nasreg train`` (and the Python API) answer a damaged file with one line
naming the file and the key (and the line of a JSON-lines file), exit status 2, no traceback,
and leave the run directory byte for byte as it was.

Real run directories, made once per module with the toy spec (a finished search, an
interrupted one, a training run copied in as a search's ``eval/``), are copied into each test's
folder and damaged there: nesting thousands of levels deep, NaN / Infinity / -Infinity / 1e999,
numbers of thousands of digits and integers beyond int64, strings where numbers belong, lists
where objects belong, missing keys, true where an integer belongs, lone surrogates, bytes that
are not UTF-8, truncation.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import nasreg
from nasreg.cli import main
from nasreg._core import readback
from nasreg._core.errors import GenotypeError, RunDirError

from cli_checks import check_line, snapshot, user  # noqa: F401 - user is a fixture
from conftest import TOY_SPEC, TOYCORE_FILE

ROOT = Path(__file__).resolve().parent.parent
DARTS_V2 = ROOT / "genotypes" / "darts_v2.json"
#: A one-epoch training of a tiny network on 128 digits (a few seconds).
TINY_TRAIN = ["evaluate.data.dataset=digits", "evaluate.epochs=1", "evaluate.cells=2", "evaluate.channels=4",
              "evaluate.cutout=false", "evaluate.limit=128", "evaluate.batch_size=32", "run.device=cpu",
              "run.threads=1"]
#: A plugin that asks the run to stop (as Ctrl-C does) after the first epoch: an interrupted run.
STOPPER = """\
import os, signal
from nasreg import hookimpl

@hookimpl
def on_epoch_end(run, stage, epoch, metrics):
    if stage == 0 and epoch == 0 and os.environ.get("NASREG_TEST_STOP") == "1":
        os.kill(os.getpid(), signal.SIGINT)
"""
#: Placeholders a damage writes into the JSON text, replaced by raw text JSON cannot hold.
DEEP = "[" * 5000 + "]" * 5000


def _invoke(args: list, env: dict | None = None):
    threads = torch.get_num_threads()
    try:
        return CliRunner().invoke(main, [str(a) for a in args], env={"NASREG_DISABLE_PLUGINS": "plots", **(env or {})})
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """``search`` (finished, with a training run as its ``eval/``), ``interrupted`` (a checkpoint
    after stage 0, epoch 0) and ``train`` (a finished training run)."""
    root = tmp_path_factory.mktemp("runs")
    (root / "stopper.py").write_text(STOPPER)
    spec = root / "spec.toml"
    spec.write_text(f'[run]\nplugins = ["{TOYCORE_FILE}", "{root / "stopper.py"}"]\n'
                    + TOY_SPEC.replace("[run]\n", "", 1).replace("epochs = 2", "epochs = 3"))
    out = {name: root / name for name in ("search", "interrupted", "train")}
    result = _invoke(["run", spec, "--out", out["search"], "-q"])
    assert result.exit_code == 0, result.output
    result = _invoke(["run", spec, "--out", out["interrupted"], "-q"], env={"NASREG_TEST_STOP": "1"})
    assert result.exit_code == 130, result.output
    assert (out["interrupted"] / "checkpoint.pt").is_file() and not (out["interrupted"] / "summary.json").exists()
    sets = [a for s in TINY_TRAIN for a in ("--set", s)]
    result = _invoke(["train", DARTS_V2, "--out", out["train"], "-q", *sets])
    assert result.exit_code == 0, result.output
    shutil.copytree(out["train"], out["search"] / "eval")
    return out


# --- damage ----------------------------------------------------------------------------------------

def _set(data, key: tuple, value):
    """``data`` with the value at the key path ``key`` replaced (by ``_DELETE``: deleted)."""
    node = data
    for part in key[:-1]:
        node = node[part]
    if value is _DELETE:
        del node[key[-1]]
    else:
        node[key[-1]] = value
    return data


_DELETE = object()
#: name -> (value put at the key, raw text replacing the placeholder, what the message says)
DAMAGE = {
    "deep": ("@@RAW@@", DEEP, "nested too deeply"),
    "nan": (float("nan"), None, "expected a finite number, got NaN"),
    "infinity": (float("inf"), None, "expected a finite number, got Infinity"),
    "minus-infinity": (float("-inf"), None, "expected a finite number, got -Infinity"),
    "overflow": ("@@RAW@@", "1e999", "expected a finite number, got 1e999"),
    "thousands-of-digits": ("@@RAW@@", "7" * 5000, "a number has too many digits (5000)"),
    "beyond-int64": (2**63, None, "integer 9223372036854775808 is beyond 64 bits"),
    "string": ("0.5", None, "got a string"),
    "list": ([1, 2], None, "got a JSON array"),
    "bool": (True, None, "got true or false"),
    "surrogate": ("@@RAW@@", '"\\ud800"', "lone UTF-16 surrogate"),
    "missing": (_DELETE, None, "missing (a required key)"),
}


def damage_json(path: Path, key: tuple, kind: str) -> None:
    """Damage the JSON file ``path`` at ``key`` as ``kind`` says (see :data:`DAMAGE`)."""
    value, raw, _ = DAMAGE[kind]
    text = json.dumps(_set(json.loads(path.read_text()), key, value), indent=2)
    path.write_text(text.replace('"@@RAW@@"', raw) if raw is not None else text)


def damage_line(path: Path, number: int, key: tuple, kind: str) -> None:
    """Damage line ``number`` (1-based) of the JSON-lines file ``path`` at ``key``."""
    value, raw, _ = DAMAGE[kind]
    lines = path.read_text().splitlines()
    line = json.dumps(_set(json.loads(lines[number - 1]), key, value))
    lines[number - 1] = line.replace('"@@RAW@@"', raw) if raw is not None else line
    path.write_text("\n".join(lines) + "\n")


def key_text(key: tuple) -> str:
    return readback.key_path(key)


def fails_unchanged(user, args: list, expect: tuple[str, ...]) -> str:
    """Run ``nasreg ARGS``: exit 2, one ``error:`` line holding ``expect``, no traceback, and
    every file under the user's folder (the run directories) byte for byte as before."""
    before = snapshot(user.root)
    result = _invoke(args, env={"COLUMNS": "40"})
    line = check_line(result.exit_code, result.stderr, result.output, expect)
    assert snapshot(user.root) == before, "a file of the run directory was touched"
    return line


def copy_run(runs, user, name: str) -> Path:
    dest = user.root / name
    shutil.copytree(runs[name], dest)
    return dest


# --- nasreg show: each core file, each kind of damage -----------------------------------------------

#: (file, key path, damages that apply there[, what the message says instead of DAMAGE's]).
SHOW_CASES = [
    ("summary.json", ("final_val_acc",), ["nan", "infinity", "overflow", "thousands-of-digits", "string", "list"]),
    ("summary.json", ("wall_seconds",), ["minus-infinity", "missing", "bool", "deep"]),
    ("summary.json", ("seed",), ["beyond-int64", "string"]),
    ("summary.json", ("name",), ["surrogate"]),
    ("summary.json", ("genotype", "cells"), ["deep"]),
    ("summary.json", ("genotype", "cells"), ["list"], 'key "genotype": cells: expected a non-empty object'),
    ("summary.json", ("genotype",), ["missing"]),
    ("stages.json", (0, "epoch_seconds"), ["string", "deep"]),
    ("stages.json", (0, "epoch_seconds", 0), ["nan", "string", "thousands-of-digits"]),
    ("stages.json", (0, "num_weights"), ["beyond-int64", "missing", "bool"]),
    ("stages.json", (0,), ["list"]),
    ("gradients.json", ("stages",), ["missing", "string"]),
    ("gradients.json", ("stages", 0, "grad_history"), ["list", "deep"]),
    ("genotype.json", ("cells", "normal", "edges", 0, "node"), ["thousands-of-digits", "beyond-int64", "nan"]),
    ("genotype.json", ("cells",), ["deep"]),
    ("genotype.json", ("cells",), ["list"], "cells: expected a non-empty object"),
    ("eval/results.json", ("test_acc",), ["nan", "string", "overflow"]),
    ("eval/results.json", ("params",), ["thousands-of-digits", "missing", "list"]),
]
SHOW_PARAMS = [pytest.param(c[0], c[1], d, c[3] if len(c) > 3 else DAMAGE[d][2],
                             id=f"{c[0]}-{'.'.join(map(str, c[1]))}-{d}") for c in SHOW_CASES for d in c[2]]


@pytest.mark.parametrize("name, key, kind, expected", SHOW_PARAMS)
def test_show_a_damaged_search_file(runs, user, name, key, kind, expected):
    run = copy_run(runs, user, "search")
    damage_json(run / name, key, kind)
    line = fails_unchanged(user, ["show", run], (f"{run / name}: ", expected))
    if kind != "deep" and expected == DAMAGE[kind][2]:  # a genotype's schema names its own keys
        assert f'key "{key_text(key)}' in line, line


@pytest.mark.parametrize("key, kind", [
    (("test_acc",), "infinity"), (("flops",), "string"), (("genotype",), "missing"),
    (("search_cost",), "list"), (("input_shape", 0), "beyond-int64"),
])
def test_show_a_damaged_training_results_file(runs, user, key, kind):
    run = copy_run(runs, user, "train")
    damage_json(run / "results.json", key, kind)
    line = fails_unchanged(user, ["show", run], (f"{run / 'results.json'}: ", DAMAGE[kind][2]))
    assert f'key "{key_text(key)}' in line, line


@pytest.mark.parametrize("folder", ["", "eval/"])
@pytest.mark.parametrize("key, kind", [
    (("epoch",), "string"), (("epoch",), "missing"), (("epoch",), "bool"), (("lr",), "nan"),
    (("train_loss",), "overflow"), (("epoch",), "thousands-of-digits"), (("train_acc",), "list"),
    ((), "deep"),
])
def test_show_a_damaged_metrics_line(runs, user, folder, key, kind):
    run = copy_run(runs, user, "search")
    path = run / folder / "metrics.jsonl"
    if key:
        damage_line(path, 1, key, kind)
    else:  # the whole line
        lines = path.read_text().splitlines()
        path.write_text("\n".join([DEEP, *lines[1:]]) + "\n")
    line = fails_unchanged(user, ["show", run], (f"{path}: line 1", DAMAGE[kind][2]))
    if key:
        assert f'line 1: key "{key_text(key)}"' in line, line


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe{}", "not valid JSON: not UTF-8 text"),
    (b'{"stage": 0, "epoch"', "not valid JSON (truncated or corrupted?)"),
    (b"[1, 2]", "expected a JSON object, got a JSON array"),
    (b"", "not valid JSON"),
])
def test_show_a_damaged_summary_file_as_a_whole(runs, user, content, expected):
    run = copy_run(runs, user, "search")
    (run / "summary.json").write_bytes(content)
    fails_unchanged(user, ["show", run], (f"{run / 'summary.json'}: ", expected))


def test_show_keeps_skipping_a_torn_last_metrics_line(runs, user):
    run = copy_run(runs, user, "interrupted")
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"stage": 0, "epoch": 1, "train_lo')  # a kill mid-append
    before = snapshot(user.root)
    result = _invoke(["show", run])
    assert result.exit_code == 0, result.output
    assert "1 unreadable line(s)" in result.stdout
    assert snapshot(user.root) == before


def test_show_prints_nothing_before_a_damaged_file(runs, user):
    run = copy_run(runs, user, "search")
    damage_json(run / "eval" / "results.json", ("test_acc",), "nan")  # the last file show reads
    result = _invoke(["show", run])
    assert result.exit_code == 2 and result.stdout == "", result.stdout


# --- nasreg resume ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key, kind", [
    (("stage",), "string"), (("epoch",), "list"), (("epoch",), "missing"), (("stage",), "bool"),
    (("epoch",), "thousands-of-digits"), (("stage",), "beyond-int64"), (("val_loss",), "nan"),
    (("epoch",), "deep"),
])
def test_resume_with_a_damaged_metrics_line(runs, user, key, kind):
    run = copy_run(runs, user, "interrupted")
    damage_line(run / "metrics.jsonl", 1, key, kind)
    line = fails_unchanged(user, ["resume", run, "-q", "--no-preflight"],
                           (f"{run / 'metrics.jsonl'}: line 1", DAMAGE[kind][2]))
    if kind != "deep":
        assert f'key "{key_text(key)}"' in line, line


def test_resume_refuses_damaged_metrics_before_it_writes_anything(runs, user):
    run = copy_run(runs, user, "interrupted")
    damage_line(run / "metrics.jsonl", 1, ("epoch",), "string")
    fails_unchanged(user, ["resume", run, "-q", "--no-preflight"], (f"{run / 'metrics.jsonl'}: line 1",))


@pytest.mark.parametrize("key, kind", [
    (("status",), "list"), ((), "deep"), (("genotype", "version"), "thousands-of-digits"),
    (("final_val_acc",), "nan"), (("genotype",), "missing"),
])
def test_resume_with_a_damaged_summary(runs, user, key, kind):
    run = copy_run(runs, user, "search")
    path = run / "summary.json"
    if key:
        damage_json(path, key, kind)
    else:
        path.write_text(DEEP)
    fails_unchanged(user, ["resume", run, "-q", "--no-preflight"], (f"{path}: ", DAMAGE[kind][2]))


# --- nasreg train with a run's genotype ----------------------------------------------------------

@pytest.mark.parametrize("key, kind, expected", [
    (("cells", "normal", "edges", 0, "node"), "thousands-of-digits", "a number has too many digits"),
    (("cells", "normal", "edges", 0, "input"), "beyond-int64", "is beyond 64 bits"),
    (("cells", "normal", "edges", 0, "input"), "nan", "expected a finite number, got NaN"),
    (("cells", "normal", "concat"), "overflow", "1e999"),
    (("cells",), "deep", "nested too deeply"),
    (("provenance", "seed"), "infinity", "expected a finite number, got Infinity"),
    (("cells", "normal", "edges"), "string", "cells.normal.edges: expected a non-empty list"),
    (("cells",), "missing", "cells: expected a non-empty object"),
])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "train"])
def test_train_with_a_damaged_run_genotype(runs, user, key, kind, expected, dry_run):
    run = copy_run(runs, user, "search")
    path = run / "genotype.json"
    damage_json(path, key, kind)
    args = ["train", path, "--dry-run"] if dry_run else ["train", path, "--out", user.root / "out", "-q"]
    line = fails_unchanged(user, args, (f"{path}: ", expected))
    if kind in ("thousands-of-digits", "beyond-int64", "nan", "infinity", "overflow"):
        assert f'key "{key_text(key)}' in line, line
    assert not (user.root / "out").exists()


# --- the Python API --------------------------------------------------------------------------------

def test_api_readers_raise_one_line_errors(runs, tmp_path):
    run = tmp_path / "search"
    shutil.copytree(runs["search"], run)
    damage_json(run / "genotype.json", ("cells", "normal", "edges", 0, "op"), "deep")
    with pytest.raises(GenotypeError, match="nested too deeply"):
        nasreg.load_genotype(run / "genotype.json")
    damage_json(run / "summary.json", ("final_val_loss",), "string")
    with pytest.raises(RunDirError, match=r'summary.json: key "final_val_loss": expected a number or null, got a string$'):
        nasreg.api.read_summary(run / "summary.json")
    damage_line(run / "metrics.jsonl", 2, ("alphas",), "list")
    with pytest.raises(RunDirError, match=r'metrics.jsonl: line 2: key "alphas": expected a JSON object'):
        nasreg.RunDir(run).read_jsonl("metrics.jsonl")
    with pytest.raises(RunDirError, match="summary.json: "):
        nasreg.resume(run)


def test_every_file_nasreg_writes_reads_back(runs):
    """The schemas accept what a search, an interrupted search and a training run write."""
    for run in runs.values():
        for path in sorted(run.rglob("*.json")):
            nasreg.RunDir(path.parent).read_json(path.name, expect=None)
        for path in sorted(run.rglob("*.jsonl")):
            assert nasreg.RunDir(path.parent).read_jsonl(path.name)


# --- the reader itself -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('{"a": {"b": [1, NaN]}}', 'key "a.b[1]": expected a finite number, got NaN'),
    ('{"a": [' + "1" * 41 + "]}", 'key "a[0]": a number has too many digits (41)'),
    ('{"a": -9223372036854775809}', 'key "a": integer -9223372036854775809 is beyond 64 bits'),
    ('{"a": 1.' + "5" * 60 + "}", 'key "a": a number has too many digits'),
    ('{"' + "k" * 100_000 + '": Infinity}', 'key "' + "k" * 37 + '...": expected a finite number, got Infinity'),
    ('{"a\\nb": NaN}', 'key "a\\nb": expected a finite number'),
    ("[" * 65 + "]" * 65, "not valid JSON: nested too deeply (more than 64 levels)"),
    ('["' + "[" * 5000 + '"]', None),  # brackets inside a string are not nesting
    ("[" * 64 + "]" * 64, None),
    ('{"a": "\\ud83d\\ude00"}', None),  # a surrogate pair is one character
])
def test_parse_bounds_and_names_the_key(text, expected):
    if expected is None:
        readback.parse(text)
        return
    with pytest.raises(readback.Damaged) as err:
        readback.parse(text)
    assert str(err.value).startswith(expected) and len(str(err.value)) < 300


def test_parse_stays_linear_on_large_inputs():
    wide = json.dumps({"a": list(range(300_000)), "b": [[i, [i]] for i in range(100_000)]})
    t0 = time.perf_counter()
    readback.parse(wide)
    with pytest.raises(readback.Damaged, match='key "b\\[99999\\]\\[1\\]\\[0\\]"'):
        readback.parse(wide[: wide.rindex("[99999]")] + "[NaN]]]}")
    with pytest.raises(readback.Damaged, match="nested too deeply"):
        readback.parse("[" * 2_000_000 + "]" * 2_000_000)
    assert time.perf_counter() - t0 < 10


def test_a_fifo_or_an_endless_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "summary.json"
    os.mkfifo(fifo)
    with pytest.raises(RunDirError, match="not a regular file"):
        nasreg.RunDir(tmp_path).read_json("summary.json")
    (tmp_path / "eval").symlink_to("/dev")
    with pytest.raises(RunDirError, match="larger than 64 MiB"):
        nasreg.RunDir(tmp_path).read_json("eval/zero")


# --- a plugin's own file read back: DG-DARTS's clusters.json ----------------------------------------


@pytest.mark.parametrize("text, key", [
    ("[" * 5000 + "]" * 5000, "nested"),
    ('{"transitions": [{"from_stage": "0", "candidate_counts": {"before": {}}}]}', 'transitions[0].from_stage'),
    ('{"transitions": {"a": 1}}', '"transitions"'),
    ('{"transitions": [{"from_stage": 0}]}', "transitions[0].candidate_counts.before"),
    ('{"transitions": [{"from_stage": NaN, "candidate_counts": {"before": {}}}]}', "NaN"),
])
def test_a_damaged_clusters_json_is_one_line_naming_the_key(tmp_path, text, key):
    from nasreg_dgdarts import load_clusters

    (tmp_path / "clusters.json").write_text(text)
    with pytest.raises(nasreg.RunDirError) as info:
        load_clusters(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'clusters.json'}: ") and key in message and "\n" not in message
    assert load_clusters(tmp_path / "nowhere") == {}
