"""nasreg.RunDir: file names, atomic writes, JSON / JSONL reading, versioned checkpoints."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nasreg
from nasreg import CheckpointError, RunDir, RunDirError
from nasreg._core import rundir as rd


def test_the_file_names_and_the_eval_subdirectory(tmp_path):
    run = RunDir(tmp_path)
    assert run.spec == tmp_path / "spec.toml" and run.metrics == tmp_path / "metrics.jsonl"
    assert run.genotype.name == "genotype.json" and run.checkpoint.name == "checkpoint.pt"
    assert (run.summary.name, run.stages.name, run.gradients.name, run.results.name) == (
        "summary.json", "stages.json", "gradients.json", "results.json")
    assert run.eval == RunDir(tmp_path / "eval") and run.eval.results == tmp_path / "eval" / "results.json"
    assert os.fspath(run) == str(tmp_path) and run / "x.json" == tmp_path / "x.json"


def test_writes_and_reads_back(tmp_path):
    run = RunDir(tmp_path / "new").mkdir()
    run.write_json("a.json", {"p": Path("/x"), "t": torch.tensor([1, 2])})
    assert run.read_json("a.json") == {"p": "/x", "t": [1, 2]}
    run.write_toml("s.toml", {"run": {"seed": 3}})
    assert run.file("s.toml").read_text() == "[run]\nseed = 3\n"
    run.write_text("t.txt", "é")
    run.write_bytes("b.bin", b"\x00\x01")
    assert run.file("t.txt").read_text(encoding="utf-8") == "é" and run.file("b.bin").read_bytes() == b"\x00\x01"
    assert [p.name for p in run.path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.write_json("a.json", {"old": True})

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(RunDirError, match=r"a\.json: cannot write: No space left on device \(its previous version is intact\)$"):
        run.write_json("a.json", {"new": True})
    with pytest.raises(TypeError):  # not JSON: refused before the file is touched
        run.write_json("a.json", {"new": object()})
    monkeypatch.undo()
    assert run.read_json("a.json") == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_damaged_json_is_one_line_naming_the_file(tmp_path):
    run = RunDir(tmp_path)
    run.file("cut.json").write_text('{"a": [1, 2')
    with pytest.raises(RunDirError, match=rf"^{tmp_path / 'cut.json'}: not valid JSON \(truncated or corrupted\?\)"):
        run.read_json("cut.json")
    run.file("list.json").write_text("[1]")
    with pytest.raises(RunDirError, match=rf"^{tmp_path / 'list.json'}: expected a JSON object, got a JSON array$"):
        run.read_json("list.json")
    assert run.read_json("list.json", expect=list) == [1]
    with pytest.raises(RunDirError, match=rf"^{tmp_path / 'none.json'}: no such file$"):
        run.read_json("none.json")
    run.file("bin.json").write_bytes(b"\xff\xfe")
    with pytest.raises(RunDirError, match="bin.json: not valid JSON"):
        run.read_json("bin.json")


def test_jsonl_drops_a_half_written_last_line_and_names_other_damage(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_jsonl("m.jsonl") == []
    run.append_jsonl("m.jsonl", {"epoch": 0})
    run.append_jsonl("m.jsonl", {"epoch": 1})
    with open(run.file("m.jsonl"), "a") as fh:
        fh.write('{"epoch": 2, "lo')  # a kill mid-append
    assert run.read_jsonl("m.jsonl") == [{"epoch": 0}, {"epoch": 1}]

    run.file("bad.jsonl").write_text('{"a": 1}\nnot json\n{"a": 3}\n[4]\n\n')
    with pytest.raises(RunDirError, match=rf"^{tmp_path / 'bad.jsonl'}: line 2 is not valid JSON$"):
        run.read_jsonl("bad.jsonl")
    assert run.read_jsonl("bad.jsonl", skip_damaged=True) == [{"a": 1}, {"a": 3}]
    records, damaged, last = run.scan_jsonl("bad.jsonl")
    assert damaged == [(2, "is not valid JSON"), (4, "is not a JSON object")] and last == 4
    run.file("obj.jsonl").write_text('[1]\n{"a": 1}\n')
    with pytest.raises(RunDirError, match="obj.jsonl: line 1 is not a JSON object"):
        run.read_jsonl("obj.jsonl")


def test_write_jsonl_replaces_the_file(tmp_path):
    run = RunDir(tmp_path)
    run.append_jsonl("m.jsonl", {"a": 1})
    run.write_jsonl("m.jsonl", [{"b": 2}, {"c": 3}])
    assert run.file("m.jsonl").read_text() == '{"b": 2}\n{"c": 3}\n'


def test_checkpoints_round_trip_by_kind(tmp_path):
    run = RunDir(tmp_path)
    run.save_checkpoint({"epoch": 3, "model": {"w": torch.ones(2)}}, kind="train")
    state = run.load_checkpoint(kind="train")
    assert state["epoch"] == 3 and torch.equal(state["model"]["w"], torch.ones(2))
    assert (state["format"], state["kind"], state["version"]) == ("nasreg.checkpoint", "train", 1)
    with pytest.raises(CheckpointError, match=rf"^{run.checkpoint}: a 'train' checkpoint, not a 'search' one$"):
        run.load_checkpoint(kind="search")
    run.save_checkpoint({"stage": 0}, kind="search", name="s.pt")
    assert run.load_checkpoint(kind="search", name="s.pt")["stage"] == 0
    with pytest.raises(ValueError, match="checkpoint kind 'other'"):
        run.save_checkpoint({}, kind="other")


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class _Foreign:
    pass


@pytest.mark.parametrize("content, message", [
    (None, "no checkpoint"),
    (b"", "corrupted or truncated checkpoint"),
    ("truncated", "corrupted or truncated checkpoint"),
    (_torch_bytes({"weights": torch.zeros(1)}), "not a nasreg checkpoint"),
    (_torch_bytes({"format": "nasreg.checkpoint", "version": 1, "obj": _Foreign()}), "never runs code"),
    (_torch_bytes({"format": "nasreg.checkpoint", "version": 2, "kind": "search"}),
     r"checkpoint version 2 is not supported by this nasreg \(expects 1; upgrade nasreg\)"),
    (_torch_bytes({"format": "nasreg.checkpoint", "version": "1"}), "checkpoint version '1' is not supported"),
])
def test_a_damaged_foreign_or_newer_checkpoint_is_refused_by_name(tmp_path, content, message):
    run = RunDir(tmp_path)
    if content == "truncated":
        run.save_checkpoint({"model": {"w": torch.zeros(100)}})
        content = run.checkpoint.read_bytes()[:200]
    if content is not None:
        run.checkpoint.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as err:
        run.load_checkpoint()
    assert str(err.value).startswith(f"{run.checkpoint}: ") and "\n" not in str(err.value)
    assert issubclass(CheckpointError, RunDirError)


def test_a_version_1_search_checkpoint_without_kind_still_loads(tmp_path):
    run = RunDir(tmp_path)
    run.checkpoint.write_bytes(_torch_bytes({"format": "nasreg.checkpoint", "version": 1, "stage": 2}))
    assert run.load_checkpoint(kind="search")["stage"] == 2


def test_write_json_is_the_run_directory_writer_for_a_path(tmp_path):
    rd.write_json(tmp_path / "a.json", [1])
    assert nasreg.write_json is rd.write_json
    assert RunDir(tmp_path).read_json("a.json", expect=list) == [1]


def test_create_numbers_a_taken_name(tmp_path):
    first = RunDir.create(tmp_path, "run")
    second = RunDir.create(tmp_path, "run")
    assert (first.path.name, second.path.name) == ("run", "run-1")
    first.write_text("spec.toml", "")
    with pytest.raises(RunDirError, match="already exists and is not empty"):
        RunDir.create(tmp_path, "x", explicit=first.path)
    assert RunDir.create(tmp_path, "x", explicit=first.path, force=True).path == first.path
    assert list(first.path.iterdir()) == []


def test_rundir_does_not_import_torch():
    code = ("import sys, nasreg; r = nasreg.RunDir('.'); r.spec; nasreg.CheckpointError; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)


def test_genotype_save_goes_through_the_atomic_writer(tmp_path, monkeypatch):
    genotype = nasreg.Genotype(space="s", cells={"normal": nasreg.CellGenotype(
        edges=[nasreg.GenotypeEdge(node=2, input=0, op="skip")], concat=[2])})
    path = genotype.save(tmp_path / "g.json")
    assert json.loads(path.read_text())["space"] == "s"
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError("no")))
    genotype.space = "t"
    with pytest.raises(RunDirError, match="g.json: cannot write: no"):
        genotype.save(path)
    assert json.loads(path.read_text())["space"] == "s"
