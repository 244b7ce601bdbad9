"""Hostile input: every user mistake is one line on stderr, exit status 2, no traceback, and no
file of the user touched (the whole test folder is compared, bytes and mtimes, before and after).

Through the CLI: click's CliRunner with a 40-column error console, and the installed ``nasreg``
in real subprocesses with ``COLUMNS=40`` (malformed TOML, a non-UTF-8 ``--set``, a message with
a newline and a tab many times wider than the terminal, an existing run directory):

* spec files: malformed TOML (unclosed table, ``= =``, unterminated string, duplicate key and
  table), a binary file (NUL bytes, a PNG header), an empty file, a directory, a path that does
  not exist (also under a missing folder, with a newline or non-UTF-8 bytes in its name),
  ``/dev/zero`` (endless), arrays nested 600 deep, an integer of 5000 digits, integers just
  beyond int64 (``2**63``, ``-2**63 - 1``), values nested more than 32 levels;
* wrong types at every core key: each ``[run]``, ``[data]`` and ``[search]`` key given a string,
  a float, a boolean, a list, a table, a date (where each is wrong), the name keys of
  ``[search_space]``, ``[strategy]``, ``[selector]``, ``[selector.clusterer]`` and ``[data]
  dataset`` given numbers, lists and tables, and each table replaced by a scalar or a list;
* unknown keys and names: tables, keys in every table, operations, datasets, search spaces,
  strategies, selectors, clusterers; key and table names with a newline, a tab, ANSI escapes, a
  zero-width space, rich markup (``[bold]``) and an emoji code (shown escaped or literally, on
  one line);
* negative or absurd sizes: batch 0 and 10**6, epochs 10**9, warm-up longer than the epochs,
  one epoch count per stage of the wrong length, channels / cells / nodes 0 and cells 10**9
  (DARTS space), n_clusters -3, max_iter 0 and 1e300, w_lr 0 and -1e308, train_portion 0, 1,
  -0.5, NaN and inf, threads -1, seed -1 and 2**32, num_workers -1, checkpoint_every 0, limit -1,
  integers beyond 64 bits through ``--set`` (2**63, -2**63 - 1, 10**29, 10**20 in a list), a
  CUDA device index of 23 digits, a non-ASCII digit device, CUDA on a machine without CUDA, a
  NUL in ``out_dir``, a name with ``/``;
* ``--set`` garbage: ``=``, empty, no ``=``, ``a..b=1``, ``.a=1``, ``a.=1``, ``data=1``
  replacing a table, a key path through a scalar, an unclosed list / string / inline table, a
  value followed by a newline and more TOML, text that is not UTF-8 (surrogate escapes from
  argv), a 5000-digit integer, a 10 000-character value (the message stays short);
* output paths: ``--out`` a file, a path under a file, an unwritable directory (``chmod 555``
  when not root; ``/proc/nasreg-x`` always), a run directory that exists and is not empty
  (files and mtimes untouched), ``[run] out_dir`` a file and under ``/proc``;
* plugins: ``[run] plugins`` naming a missing module, a missing file, an empty name, a file with
  a syntax error, a file that calls ``sys.exit``; ``--plugin`` naming a missing module;
* genotype JSON (``Genotype.load`` and ``nasreg train GENOTYPE --dry-run``): truncated, not JSON,
  empty, binary, a directory, missing, ``/dev/zero``, nested 5000 deep, a 5000-digit number, the
  wrong schema (a list, another format, no cells, a bad edge), a version from the future, an
  unknown operation, an unknown search space, ``combine`` keys ``int()`` would accept ("1_0").
* parameters only a factory rejects (darts ``alpha_betas = []``): found before the run directory
  exists.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from nasreg import cli
from nasreg.cli import main
from nasreg._core.errors import GenotypeError, NasregError
from nasreg._core.genotype import Genotype

from cli_checks import SPEC, check_line, snapshot, user  # noqa: F401 - user is a fixture
from conftest import TOY_SPEC, TOYCORE_FILE

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "specs" / "quickstart.toml"
NASREG = Path(sys.executable).with_name("nasreg")


# --- spec files -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("[run\n", "invalid TOML: "),
    ("[run]\nseed = = 3\n", "invalid TOML: "),
    ('[run]\nname = "unterminated\n', "invalid TOML: "),
    ("[run]\nseed = 1\nseed = 2\n", "invalid TOML: "),
    ("[run]\n[run]\n", "invalid TOML: "),
    ("v = " + "[" * 600 + "]" * 600 + "\n", "invalid TOML: arrays or tables nested too deeply"),
    ("[data]\nlimit = " + "9" * 5000 + "\n", "invalid TOML: an integer has too many digits"),
    ("[data]\nlimit = 9223372036854775808\n", "invalid TOML: data.limit: integer 9223372036854775808 is outside"),
    ("[run]\nseed = -9223372036854775809\n", "invalid TOML: run.seed: integer -9223372036854775809 is outside"),
    ("[data]\nroot = " + "[" * 40 + "1" + "]" * 40 + "\n", "nested more than 32 levels deep"),
    (b"\x00\x01\x02\xff\xfe binary", "not a UTF-8 text file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a UTF-8 text file"),
    ("", "[data] dataset: missing required key"),
])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_unreadable_specs(user, text, expected, command):
    path = user.spec(text)
    user.fails(command, path, expect=(f"{path}: ", expected))


def test_a_directory_as_spec(user):
    (user.root / "specs").mkdir()
    user.fails("validate", user.root / "specs", expect=(f"{user.root / 'specs'}: is a directory, not a spec file",))
    user.fails("run", user.root / "specs", expect=("is a directory, not a spec file",))


@pytest.mark.parametrize("name, shown", [
    ("nope.toml", "nope.toml"),
    ("missing/folder/spec.toml", "missing/folder/spec.toml"),
    ("\udcff\udcfe.toml", "\\udcff\\udcfe.toml"),  # a file name that is not UTF-8 (argv bytes)
    ("new\nline.toml", "new\\nline.toml"),
])
def test_a_spec_that_does_not_exist(user, name, shown):
    user.fails("validate", name, expect=(f"{shown}: no such file",))
    user.fails("run", name, expect=(f"{shown}: no such file",))


def test_an_endless_file_as_spec(user):
    user.fails("validate", "/dev/zero", expect=("/dev/zero: larger than 16 MiB; not a spec file",))


# --- wrong types at every core key ----------------------------------------------------------

WRONG_TYPES = {
    "run.name": ["1", "true", "[]", "{}", "1979-05-27"],
    "run.seed": ['"one"', "1.5", "true", "[1]", "{a = 1}", "1979-05-27", "nan"],
    "run.device": ["0", "false", '["cpu"]', '"gpu"', '"cuda:x"', '"CPU"'],
    "run.threads": ['"2"', "2.0", "false", "[2]"],
    "run.out_dir": ["1", "true", '["runs"]', "{a = 1}"],
    "run.deterministic": ["1", '"true"', "[true]", "0.0"],
    "run.plugins": ['"toycore.py"', "1", "[1]", "[[]]", "{a = 1}"],
    "run.checkpoint_every": ['"1"', "1.0", "true"],
    "data.dataset": ["1", "[]", '{name = "toy-data"}', "true"],
    "data.batch_size": ['"8"', "8.0", "true", "[8]", "inf"],
    "data.train_portion": ['"0.5"', "true", "[0.5]", "{}"],
    "data.num_workers": ['"0"', "0.5", "false"],
    "data.limit": ['"0"', "1.5", "true", "[]"],
    "search.epochs": ['"2"', "2.5", "true", '[1, "x"]', "{a = 1}", "[[1]]"],
    "search.warmup_epochs": ['"1"', "1.5", "false"],
    "search.grad_stat": ["1", '"median"', "true", '["mean"]'],
    "search.eval_batch_norm": ["1", '"both"', "false"],
    "search_space.name": ["1", "[]", "{}", "true"],
    "search_space.operations": ['"toy_conv"', "1", "[1]", '[["toy_conv"]]', "{}"],
    "strategy.name": ["1", '["toy-sgd"]', "{}", "2.5"],
    "selector.name": ["1", "[]", "{}", "false"],
    "selector.clusterer": ["1", "[1]", '"toy-split"', "{n_clusters = 2}", '{name = 1}'],
}


@pytest.mark.parametrize("key, value", [(k, v) for k, vs in WRONG_TYPES.items() for v in vs])
def test_wrong_types_at_every_core_key(user, key, value):
    path = user.spec()
    table, _, name = key.rpartition(".")
    if key == "selector.clusterer":
        where = "[selector] clusterer" if not value.startswith("{") else "[selector.clusterer] name"
    else:
        where = f"[{table}] {name}"
    user.fails("validate", path, "--set", f"{key}={value}", expect=(f"{path}: ", where))


@pytest.mark.parametrize("table", ["run", "data", "search_space", "search", "strategy", "selector"])
@pytest.mark.parametrize("value", ["1", '"x"', "[1, 2]", "true"])
def test_a_table_replaced_by_a_value(user, table, value):
    path = user.spec()
    user.fails("validate", path, "--set", f"{table}={value}", expect=(f"{path}: [{table}]: expected a table, got ",))


# --- unknown keys and names ------------------------------------------------------------------


@pytest.mark.parametrize("override, expected", [
    ("model.depth=3", "unknown table [model]"),
    ("serach.epochs=3", "unknown table [serach]; did you mean [search]?"),
    ("run.sead=1", "[run] sead: unknown key; did you mean 'seed'?"),
    ("data.batchsize=4", "[data] batchsize: unknown key; did you mean 'batch_size'"),
    ("data.name=x", "[data] name: unknown key (the dataset is chosen with `dataset`)"),
    ("search.epoch=1", "[search] epoch: unknown key; did you mean 'epochs'"),
    ("search_space.layers=3", "[search_space] layers: unknown key"),
    ("strategy.momentum=0.9", "[strategy] momentum: unknown key"),
    ("selector.zzz=1", "[selector] zzz: unknown key"),
    ("selector.clusterer.k=3", "[selector.clusterer] k: unknown key"),
    ('search_space.operations=["toy_skip", "sep_conv_9x9"]',
     "[search_space] operations[1]: unknown operation 'sep_conv_9x9'"),
    ('search_space.operations=["toy_skip", "toy_skip"]', "operation 'toy_skip' is listed twice"),
    ("search_space.operations=[]", "expected at least one operation"),
    ("data.dataset=imagenet-22k", "[data] dataset: unknown dataset 'imagenet-22k'"),
    ("search_space.name=nasbench-201", "[search_space] name: unknown search space 'nasbench-201'"),
    ("strategy.name=no-such-strategy", "[strategy] name: unknown search strategy 'no-such-strategy'"),
    ("selector.name=random", "[selector] name: unknown selector 'random'"),
    ("selector.clusterer.name=dbscan", "[selector.clusterer] name: unknown clusterer 'dbscan'"),
    ('strategy.name=""', "[strategy] name: unknown search strategy ''"),
])
def test_unknown_keys_and_names(user, override, expected):
    path = user.spec()
    user.fails("validate", path, "--set", override, expect=(f"{path}: ", expected))


@pytest.mark.parametrize("override, shown", [
    ("run.a\nb=1", "[run] a\\nb: unknown key"),                  # a newline in a key name
    ("run.\x1b[31mred\x1b[0m=1", "[run] \\x1b[31mred\\x1b[0m: unknown key"),  # ANSI escapes
    ("run.tab\there=1", "[run] tab\\there: unknown key"),
    ("run.zero\u200bwidth=1", "[run] zero\\u200bwidth: unknown key"),
    ("[bold]x[/bold].y=1", "unknown table [[bold]x[/bold]]"),      # rich markup, printed as is
    ("run.:thumbs_up:=1", "[run] :thumbs_up:: unknown key"),       # an emoji code, printed as is
    ("run.x=1", "[run] x: unknown key"),
])
def test_odd_key_names_are_shown_literally_on_one_line(user, override, shown):
    user.fails("validate", user.spec(), "--set", override, expect=(shown,))


def test_an_odd_table_name_in_the_file(user):
    path = user.spec(SPEC + '\n["x\\ny\\u001b[2J"]\nk = 1\n')
    user.fails("validate", path, expect=(f"{path}: unknown table [x\\ny\\x1b[2J]",))


# --- negative or absurd sizes ---------------------------------------------------------------


@pytest.mark.parametrize("override, expected", [
    ("data.batch_size=0", "[data] batch_size: expected an integer >= 1 and <= 65536, got 0"),
    ("data.batch_size=1000000", "[data] batch_size: expected an integer >= 1 and <= 65536, got 1000000"),
    ("search.epochs=1000000000", "[search] epochs: expected an integer >= 0 and <= 100000, got 1000000000"),
    ("search.epochs=-1", "[search] epochs: expected an integer >= 0"),
    ("search.epochs=0", "[search] epochs: stage 0 needs at least 1 epoch, got 0"),
    ("search.warmup_epochs=5", "[search] warmup_epochs: stage 0 has 5 warm-up epochs but only 2 epochs"),
    ("search.epochs=[2, 2, 2]", "[search] epochs: expected one value per stage (1), got 3"),
    ("data.train_portion=0", "[data] train_portion: expected a number > 0 and < 1, got 0"),
    ("data.train_portion=1", "[data] train_portion: expected a number > 0 and < 1, got 1"),
    ("data.train_portion=-0.5", "[data] train_portion: expected a number > 0 and < 1, got -0.5"),
    ("data.train_portion=nan", "[data] train_portion: expected a finite number, got nan"),
    ("data.train_portion=inf", "[data] train_portion: expected a finite number, got inf"),
    ("run.threads=-1", "[run] threads: expected an integer >= 0 and <= 1024, got -1"),
    ("run.seed=-1", "[run] seed: expected an integer >= 0 and <= 4294967295, got -1"),
    ("run.seed=4294967296", "[run] seed: expected an integer >= 0 and <= 4294967295, got 4294967296"),
    ("data.num_workers=-1", "[data] num_workers: expected an integer >= 0"),
    ("run.checkpoint_every=0", "[run] checkpoint_every: expected an integer >= 1"),
    ("data.limit=-1", "[data] limit: expected an integer >= 0, got -1"),
    ("search_space.nodes=0", "[search_space] nodes: expected an integer >= 1"),
    ("search_space.channels=0", "[search_space] channels: expected an integer >= 1"),
    ("data.size=-5", "[data] size: expected an integer >= 4"),
    ("selector.clusterer.n_clusters=0", "[selector.clusterer] n_clusters: expected an integer >= 1"),
    ('run.device="cuda:99999999999999999999999"', "[run] device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    ('run.device="cuda:\u0663"', "[run] device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    ('run.out_dir="runs\\u0000x"', "[run] out_dir: expected a folder path, got 'runs\\x00x'"),
    ('run.name="a/b"', "[run] name: expected a folder name"),
])
def test_absurd_sizes(user, override, expected):
    path = user.spec()
    user.fails("validate", path, "--set", override, expect=(f"{path}: ", expected))


@pytest.mark.parametrize("override, expected", [
    ("search_space.channels=0", "[search_space] channels: expected an integer >= 1 and <= 1024, got 0"),
    ("search_space.cells=0", "[search_space] cells: expected an integer >= 1 and <= 100, got 0"),
    ("search_space.nodes=0", "[search_space] nodes: expected an integer >= 1 and <= 16, got 0"),
    ("search_space.cells=1000000000", "[search_space] cells: expected an integer >= 1 and <= 100"),
    ("selector.clusterer.n_clusters=-3", "[selector.clusterer] n_clusters: expected an integer >= 1"),
    ("selector.clusterer.max_iter=0", "[selector.clusterer] max_iter: expected an integer >= 1"),
    ("selector.clusterer.max_iter=1e300", "[selector.clusterer] max_iter: expected an integer >= 1, got 1e+300"),
    ("strategy.w_lr=0", "[strategy] w_lr: expected a number > 0"),
    ("strategy.w_lr=-1e308", "[strategy] w_lr: expected a number > 0"),
])
def test_absurd_sizes_of_the_darts_components(user, override, expected):
    # The repository's spec, read only (validate never writes).
    user.fails("validate", QUICKSTART, "--set", override, expect=(f"{QUICKSTART}: ", expected))


def test_cuda_on_a_machine_without_cuda(user):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = user.spec()
    user.fails("run", path, "--set", "run.device=cuda", "--out", user.root / "out", "-q",
               expect=(f"{path}: [run] device: 'cuda' requested but CUDA is not available",))


# --- --set garbage --------------------------------------------------------------------------


@pytest.mark.parametrize("override, expected", [
    ("=", "--set '=': expected KEY.PATH=VALUE"),
    ("", "--set '': expected KEY.PATH=VALUE"),
    ("data.batch_size", "--set 'data.batch_size': expected KEY.PATH=VALUE"),
    ("=3", "--set '=3': expected KEY.PATH=VALUE"),
    ("a..b=1", "--set 'a..b=1': empty part in key path 'a..b'"),
    (".a=1", "empty part in key path '.a'"),
    ("a.=1", "empty part in key path 'a.'"),
    ("data.batch_size.x=1", "--set 'data.batch_size.x=1': data.batch_size is not a table"),
    ("search.epochs=[1,", "value is not a valid TOML literal"),
    ('run.name="unclosed', "value is not a valid TOML literal"),
    ("x={a = ", "value is not a valid TOML literal"),
    ("run.seed=1\n[run]\nseed = 2", "value is not a single TOML literal"),
    ("run.name=\udcff\udcfe", "--set 'run.name=\\udcff\\udcfe': not UTF-8 text"),
    ("data.limit=[" + "[" * 600 + "]" * 601, "value is not a valid TOML literal"),
    ("data.limit=" + "[" * 40 + "1" + "]" * 40, "nested more than 32 levels deep"),
])
def test_set_garbage(user, override, expected):
    path = user.spec()
    line = user.fails("validate", path, "--set", override, expect=(expected,))
    assert len(line) < 600  # the --set text is quoted shortened


def test_set_replacing_a_table_by_a_value(user):
    path = user.spec()
    user.fails("validate", path, "--set", "data=1", expect=(f"{path}: [data]: expected a table, got 1",))
    user.fails("validate", path, "--set", "data=1", "--set", "data.x=2",
               expect=("--set 'data.x=2': data is not a table",))


@pytest.mark.parametrize("override", ["selector.clusterer.n_init=100000000000000000000000000000",
                                      "data.limit=9223372036854775808", "run.seed=-9223372036854775809",
                                      "search.epochs=[1, 100000000000000000000]"])
def test_set_integers_beyond_64_bits(user, override):
    user.fails("validate", QUICKSTART, "--set", override, expect=("is outside TOML's 64-bit range",))


def test_set_huge_values_give_short_messages(user):
    path = user.spec()
    line = user.fails("validate", path, "--set", "data.limit=" + "9" * 5000, expect=(f"{path}: [data] limit: ",))
    assert len(line) < 600
    line = user.fails("validate", path, "--set", "run.name=" + "x/" * 5000, expect=(f"{path}: [run] name: ",))
    assert len(line) < 600


# --- output paths ---------------------------------------------------------------------------


def test_out_is_a_file(user):
    path = user.spec()
    target = user.root / "results.csv"
    target.write_text("a,b\n1,2\n")
    user.fails("run", path, "--out", target, "-q", expect=(f"--out {target}: exists and is not a directory",))
    user.fails("run", path, "--out", target / "sub", "-q", expect=(f"{target / 'sub'}: cannot create directory",))


def test_out_is_not_writable(user):
    path = user.spec()
    locked = user.root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: a read-only mount instead
            target = Path("/proc/nasreg-x")
            if not Path("/proc").is_dir():
                pytest.skip("running as root and no /proc to write into")
        else:
            target = locked / "run"
        user.fails("run", path, "--out", target, "-q", expect=(str(target),))
        assert not target.exists()
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (a folder nothing can be created in)")
def test_out_dir_under_proc(user):
    path = user.spec()
    user.fails("run", path, "--out", "/proc/nasreg-x", "-q", expect=("/proc/nasreg-x: cannot create directory",))
    user.fails("run", path, "--set", "run.out_dir=/proc/nasreg-x", "-q",
               expect=("/proc/nasreg-x: cannot create directory",))


def test_out_dir_setting_is_a_file(user):
    path = user.spec()
    (user.root / "runs").write_text("not a folder")
    user.fails("run", path, "--set", "run.out_dir=runs", "-q", expect=("runs: cannot create directory",))


def test_an_existing_run_directory_is_left_alone(user):
    path = user.spec()
    out = user.root / "previous-run"
    out.mkdir()
    (out / "spec.toml").write_text("# an earlier run\n")
    (out / "genotype.json").write_text("{}")
    (out / "notes").mkdir()
    (out / "notes" / "todo.txt").write_text("keep")
    user.fails("run", path, "--out", out, "-q", expect=(f"--out {out}: run directory already exists and is not empty",))


# --- plugins --------------------------------------------------------------------------------


@pytest.mark.parametrize("plugins, expected", [
    ('["nasreg_no_such_plugin"]', "No module named 'nasreg_no_such_plugin'"),
    ('["no_such_file.py"]', "failed to load: file not found: "),
    ('["sub/missing.py"]', "failed to load: file not found: "),
    ('[""]', "failed to load: error importing '': ValueError: Empty module name"),
    ('["syntax_error.py"]', "SyntaxError"),
    ('["exits.py"]', "SystemExit: 3"),
])
def test_plugins_that_cannot_load(user, plugins, expected):
    (user.root / "syntax_error.py").write_text("def f(:\n")
    (user.root / "exits.py").write_text("import sys\nsys.exit(3)\n")
    path = user.spec(f"[run]\nplugins = {plugins}\n" + TOY_SPEC.replace("[run]\n", "", 1))
    user.fails("validate", path, expect=("plugin ", expected))
    user.fails("run", path, "-q", expect=("plugin ", expected))


def test_a_missing_plugin_option(user):
    user.fails("validate", user.spec(), "--plugin", "nasreg_no_such_plugin",
               expect=("plugin 'nasreg_no_such_plugin'", "No module named 'nasreg_no_such_plugin'"))


# --- genotype files -------------------------------------------------------------------------

GOOD_GENOTYPE = ROOT / "genotypes" / "darts_v2.json"


def _genotype_dict() -> dict:
    return {"format": "nasreg.genotype", "version": 1, "space": "darts-cell",
            "cells": {"normal": {"edges": [{"node": 2, "input": 0, "op": "sep_conv_3x3"},
                                           {"node": 2, "input": 1, "op": "skip_connect"}],
                                 "concat": [2]}},
            "provenance": {}}


def _mutated(**changes) -> str:
    data = _genotype_dict()
    data.update(changes)
    return json.dumps(data)


GENOTYPE_CASES = [
    ("truncated", _mutated()[:40], "not valid JSON (truncated or corrupted?)"),
    ("not-json", "normal: sep_conv_3x3 skip_connect\n", "not valid JSON"),
    ("empty", "", "not valid JSON"),
    ("binary", b"\x80\x81\xfe\xff\x00", "cannot read"),
    ("deep", "[" * 5000 + "]" * 5000, "nested too deeply"),
    ("huge-number", '{"version": ' + "9" * 5000 + "}", "a number has too many digits"),
    ("a-list", "[1, 2, 3]", "expected a JSON object"),
    ("other-format", _mutated(format="darts"), "not a nasreg genotype (format is 'darts'"),
    ("no-cells", _mutated(cells={}), "cells: expected a non-empty object of cell types"),
    ("bad-edge", _mutated(cells={"normal": {"edges": [{"node": 2, "input": 5, "op": "skip_connect"}], "concat": [2]}}),
     "cells.normal.edges[0]: input 5 must be >= 0 and before node 2"),
    ("combine-keys", _mutated(cells={"normal": {"edges": [{"node": 2, "input": 0, "op": "skip_connect"}],
                                                "concat": [2], "combine": {"1_0": "add"}}}),
     "cells.normal.combine: keys must be node numbers"),
    ("future", _mutated(version=99), "version 99 is newer than this nasreg understands (1); upgrade nasreg"),
    ("version-string", _mutated(version="1"), "version: expected a positive integer, got '1'"),
    ("unknown-op", json.dumps(_genotype_dict()).replace("sep_conv_3x3", "sep_conv_9x9"),
     "cells.normal.edges[0]: unknown operation 'sep_conv_9x9'"),
    ("unknown-space", _mutated(space="nasbench-201"), "space: unknown search space 'nasbench-201'"),
]


@pytest.fixture(scope="module")
def builtin_registries():
    from nasreg._core.plugins import load_plugins

    return load_plugins().registries


@pytest.mark.parametrize("name, content, expected", GENOTYPE_CASES, ids=[c[0] for c in GENOTYPE_CASES])
def test_genotype_load(tmp_path, builtin_registries, name, content, expected):
    path = tmp_path / f"{name}.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(GenotypeError) as err:
        Genotype.load(path, builtin_registries)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message
    assert isinstance(err.value, NasregError)


def test_genotype_load_of_odd_paths(tmp_path):
    for path, expected in [(tmp_path / "nope.json", "no such file"), (tmp_path, "is a directory"),
                           (Path("/dev/zero"), "larger than 16 MiB")]:
        with pytest.raises(GenotypeError, match=expected):
            Genotype.load(path)


@pytest.mark.parametrize("name, content, expected",
                         [c for c in GENOTYPE_CASES if c[0] in ("truncated", "not-json", "binary", "deep", "future",
                                                                "unknown-op", "unknown-space")],
                         ids=["truncated", "not-json", "binary", "deep", "future", "unknown-op", "unknown-space"])
def test_train_dry_run_with_a_bad_genotype(user, name, content, expected):
    if "train" not in main.commands:
        pytest.skip("no `nasreg train` command")
    path = user.root / f"{name}.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    user.fails("train", path, "--dry-run", expect=(f"{path}: ", expected))


def test_train_dry_run_with_a_missing_genotype_or_a_directory(user):
    if "train" not in main.commands:
        pytest.skip("no `nasreg train` command")
    user.fails("train", "nope.json", "--dry-run", expect=("nope.json: no such file",))
    (user.root / "dir.json").mkdir()
    user.fails("train", "dir.json", "--dry-run", expect=("dir.json: cannot read: is a directory",))


# --- parameters only a factory can check ------------------------------------------------------


def test_strategy_parameters_are_checked_before_the_run_directory_exists(user, monkeypatch):
    # alpha_betas=[] passes the annotation (a list of numbers); the darts factory rejects it.
    monkeypatch.setenv("NASREG_DISABLE_PLUGINS", "plots")
    spec = user.spec(QUICKSTART.read_text())
    user.fails("run", spec, "--set", "strategy.alpha_betas=[]", "--set", "search_space.cells=3",
               "--set", "search_space.channels=2", "--set", "data.limit=32", "-q", "--out", user.root / "out",
               expect=("[strategy]", "alpha_betas"))


# --- the installed command, for real --------------------------------------------------------


def test_the_installed_command(tmp_path):
    """A few of the above through a real ``nasreg`` process (run side by side: each imports
    torch), with ``COLUMNS=40``: exit status 2, one line on stderr, no traceback, nothing touched."""
    (tmp_path / "spec.toml").write_text(SPEC)
    (tmp_path / "bad.toml").write_text("[run\nseed = 1\n")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "precious.bin").write_bytes(os.urandom(64))
    cases = [
        (["validate", "bad.toml"], ("bad.toml: invalid TOML: ",)),
        ([b"validate", b"spec.toml", b"--set", b"run.name=\xff\xfe"], ("not UTF-8 text",)),
        # A message many times wider than the terminal, with a newline and a tab in it: one line.
        (["validate", "spec.toml", "--set", "run.a\nb\tc=1"], ("[run] a\\nb\\tc: unknown key (known keys: ",)),
        (["run", "spec.toml", "--out", "taken", "-q"], ("--out taken: run directory already exists",)),
    ]
    env = {**os.environ, "COLUMNS": "40"}
    env.pop("NASREG_DEBUG", None)
    before = snapshot(tmp_path)
    procs = [subprocess.Popen([str(NASREG), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for args, _ in cases]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for (args, fragments), proc, (out, err) in zip(cases, procs, outputs):
        stderr = err.decode("utf-8", "replace")
        line = check_line(proc.returncode, stderr, stderr + out.decode("utf-8", "replace"), fragments)
        if "known keys" in line:
            assert len(line) > 3 * 40
    assert snapshot(tmp_path) == before
