"""`nasreg train GENOTYPE` without --spec trains on the data the genotype was searched on (its
provenance), says so, and lets --spec / --set evaluate.data choose otherwise."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import nasreg
from nasreg.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["run.threads=1", "run.device=cpu", "data.limit=64", "data.batch_size=32", "search.epochs=2",
        "search.warmup_epochs=1", "search_space.cells=3", "search_space.channels=4",
        'search_space.operations=["none","skip_connect","avg_pool_3x3"]', "selector.stages=1",
        "selector.min_ops=1", "selector.clusterer.n_clusters=2"]


def _searched(tmp_path: Path) -> Path:
    spec = nasreg.load_spec(ROOT / "specs" / "quickstart.toml", overrides=[*TINY, f"run.out_dir={tmp_path}"])
    result = nasreg.search({k: v for k, v in spec.raw.items() if k != "evaluate"})  # the search only
    return Path(result.run_dir) / "genotype.json"


def test_the_genotype_records_its_data_and_train_uses_it(tmp_path, restore_torch_threads):
    genotype = _searched(tmp_path)
    data = json.loads(genotype.read_text())["provenance"]["data"]
    assert data["dataset"] == "digits"

    info = nasreg.describe_network(genotype, overrides=["evaluate.cells=2", "evaluate.channels=4"])
    assert info["input_shape"][-1] == 8 and info["num_classes"] == 10  # digits, not CIFAR-10's 32x32

    out = tmp_path / "trained"
    result = CliRunner().invoke(main, ["train", str(genotype), "--out", str(out), "-q",
                                       "--set", "evaluate.epochs=1", "--set", "evaluate.cells=2",
                                       "--set", "evaluate.channels=4", "--set", "evaluate.auxiliary=false",
                                       "--set", "evaluate.cutout=false", "--set", "run.threads=1"])
    assert result.exit_code == 0, result.output
    assert "training on 'digits', the dataset the genotype was searched on" in result.output
    resolved = (out / "spec.toml").read_text()
    assert 'dataset = "digits"' in resolved


def test_an_explicit_dataset_wins_over_the_provenance(tmp_path, restore_torch_threads):
    genotype = _searched(tmp_path)
    result = CliRunner().invoke(main, ["train", str(genotype), "--dry-run", "--set", "evaluate.cells=2",
                                       "--set", "evaluate.data.dataset=digits"])
    assert result.exit_code == 0, result.output
    assert "searched on" not in result.output
