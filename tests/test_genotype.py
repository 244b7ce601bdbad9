"""nasreg._core.genotype: typed, versioned JSON; schema errors name the file; registry validation."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest

import nasreg
from nasreg import CellGenotype, Genotype, GenotypeEdge, genotype_from_edges
from nasreg._core.errors import GenotypeError, NasregError
from nasreg._core.genotype import FORMAT, VERSION


def make() -> Genotype:
    normal = CellGenotype(edges=[GenotypeEdge(2, 0, "toy_conv"), GenotypeEdge(2, 1, "toy_skip"),
                                 GenotypeEdge(3, 0, "toy_conv"), GenotypeEdge(3, 2, "toy_skip")],
                          concat=[2, 3])
    reduce = CellGenotype(edges=[GenotypeEdge(2, 1, "toy_skip"), GenotypeEdge(3, 2, "toy_conv")],
                          concat=[2, 3], combine={2: "add", 3: "concat"})
    return Genotype(space="toy-space", cells={"normal": normal, "reduce": reduce},
                    provenance={"spec_hash": "abc", "seed": 3, "nasreg": "0.1.0"})


def test_json_round_trip(tmp_path):
    g = make()
    path = g.save(tmp_path / "genotype.json")
    assert path == tmp_path / "genotype.json"
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["version"] == VERSION
    assert data["cells"]["normal"]["edges"][0] == {"node": 2, "input": 0, "op": "toy_conv"}
    assert data["cells"]["reduce"]["combine"] == {"2": "add", "3": "concat"}
    assert "combine" not in data["cells"]["normal"]
    back = Genotype.load(path)
    assert back == g
    assert back.to_dict() == g.to_dict()
    assert back.cells["reduce"].combine == {2: "add", 3: "concat"}
    assert [p.name for p in tmp_path.iterdir()] == ["genotype.json"]  # no temporary left behind


def test_save_replaces_the_previous_file_atomically(tmp_path):
    path = tmp_path / "genotype.json"
    path.write_text("old")
    make().save(path)
    assert Genotype.load(path) == make()


def test_by_node_and_describe():
    g = make()
    assert [e.input for e in g.cells["normal"].by_node()[3]] == [0, 2]
    text = g.describe()
    assert text.splitlines()[0] == "normal: n2<-0:toy_conv  n2<-1:toy_skip  n3<-0:toy_conv  n3<-2:toy_skip  concat=[2, 3]"


def _bad(mutate) -> str:
    data = make().to_dict()
    mutate(data)
    with pytest.raises(GenotypeError) as err:
        Genotype.from_dict(data, source="g.json")
    return str(err.value)


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.update(format="darts"), "g.json: not a nasreg genotype (format is 'darts', expected 'nasreg.genotype')"),
    (lambda d: d.pop("format"), "g.json: not a nasreg genotype (format is None"),
    (lambda d: d.update(version=VERSION + 1),
     f"g.json: version {VERSION + 1} is newer than this nasreg understands ({VERSION}); upgrade nasreg"),
    (lambda d: d.update(version="1"), "g.json: version: expected a positive integer, got '1'"),
    (lambda d: d.update(version=True), "g.json: version: expected a positive integer, got True"),
    (lambda d: d.update(version=0), "g.json: version: expected a positive integer, got 0"),
    (lambda d: d.update(space=""), "g.json: space: expected a search space name, got ''"),
    (lambda d: d.update(cells={}), "g.json: cells: expected a non-empty object of cell types"),
    (lambda d: d["cells"].update(normal=[]), "g.json: cells.normal: expected an object"),
    (lambda d: d["cells"]["normal"].update(extra=1), "g.json: cells.normal: unknown key 'extra'"),
    (lambda d: d["cells"]["normal"].update(edges=[]), "g.json: cells.normal.edges: expected a non-empty list"),
    (lambda d: d["cells"]["normal"]["edges"].__setitem__(1, {"node": 2, "input": 1}),
     "g.json: cells.normal.edges[1]: expected {\"node\": int, \"input\": int, \"op\": str}, got {'node': 2, 'input': 1}"),
    (lambda d: d["cells"]["normal"]["edges"].__setitem__(0, {"node": 2, "input": "0", "op": "x"}),
     "g.json: cells.normal.edges[0]: expected"),
    (lambda d: d["cells"]["normal"]["edges"].__setitem__(0, {"node": 2, "input": True, "op": "x"}),
     "g.json: cells.normal.edges[0]: expected"),
    (lambda d: d["cells"]["normal"]["edges"].__setitem__(0, {"node": 2, "input": 2, "op": "x"}),
     "g.json: cells.normal.edges[0]: input 2 must be >= 0 and before node 2"),
    (lambda d: d["cells"]["normal"]["edges"].__setitem__(0, {"node": 2, "input": -1, "op": "x"}),
     "g.json: cells.normal.edges[0]: input -1 must be >= 0 and before node 2"),
    (lambda d: d["cells"]["normal"].update(concat=[]), "g.json: cells.normal.concat: expected a non-empty list of node numbers"),
    (lambda d: d["cells"]["normal"].update(concat=["2"]), "g.json: cells.normal.concat: expected a non-empty list"),
    (lambda d: d["cells"]["reduce"].update(combine={"x": "add"}), "g.json: cells.reduce.combine: keys must be node numbers"),
    (lambda d: d["cells"]["reduce"].update(combine={"2": 1}), "g.json: cells.reduce.combine: expected an object of node -> method"),
    (lambda d: d.update(provenance=[]), "g.json: provenance: expected an object"),
])
def test_schema_errors(mutate, expected):
    assert _bad(mutate).startswith(expected)


def test_not_an_object():
    with pytest.raises(GenotypeError, match="^g.json: expected a JSON object$"):
        Genotype.from_dict([1, 2], source="g.json")


def test_truncated_json_names_the_file(tmp_path):
    path = tmp_path / "genotype.json"
    text = json.dumps(make().to_dict(), indent=2)
    path.write_text(text[: len(text) // 2])
    with pytest.raises(GenotypeError) as err:
        Genotype.load(path)
    assert str(err.value).startswith(f"{path}: not valid JSON (truncated or corrupted?): ")
    assert issubclass(GenotypeError, NasregError)


def test_missing_unreadable_and_binary_files(tmp_path):
    with pytest.raises(GenotypeError, match="nope.json: no such file$"):
        Genotype.load(tmp_path / "nope.json")
    with pytest.raises(GenotypeError, match="cannot read"):
        Genotype.load(tmp_path)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(GenotypeError, match="bin.json: cannot read"):
        Genotype.load(tmp_path / "bin.json")


def test_schema_errors_from_a_file_name_the_file(tmp_path):
    data = make().to_dict()
    data["version"] = 99
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GenotypeError, match=f"^{path}: version 99 is newer"):
        Genotype.load(path)


# --- validation against registries ----------------------------------------------------------


def test_validation_against_registries(toy_plugins, tmp_path):
    regs = toy_plugins().registries
    g = make()
    g.validate(regs)
    path = g.save(tmp_path / "g.json")
    assert Genotype.load(path, regs) == g

    wrong_op = copy.deepcopy(g)
    wrong_op.cells["reduce"].edges[1] = GenotypeEdge(3, 2, "toy_cnv")
    with pytest.raises(GenotypeError) as err:
        wrong_op.validate(regs, source="g.json")
    assert str(err.value).startswith("g.json: cells.reduce.edges[1]: unknown operation 'toy_cnv'; did you mean 'toy_conv'?")

    wrong_space = copy.deepcopy(g)
    wrong_space.space = "darts-cel"
    wrong_space.save(path)
    with pytest.raises(GenotypeError, match=f"^{path}: space: unknown search space 'darts-cel'"):
        Genotype.load(path, regs)


# --- genotype_from_edges: the selectors' helper ------------------------------------------


def fake_run(seed=7):
    """The parts of a run the helper reads: the spec's space name and digest, the seed, the space."""
    spec = SimpleNamespace(digest=lambda: "cafe0123", search_space=SimpleNamespace(name="toy-space"))
    space = SimpleNamespace(concat=lambda ct: [2, 3] if ct == "normal" else [3])
    return SimpleNamespace(spec=spec, seed=seed, space=space)


def test_genotype_from_edges_adds_the_space_concat_and_provenance():
    kept = {"normal": [GenotypeEdge(2, 1, "toy_skip"), GenotypeEdge(2, 0, "toy_conv")],
            "reduce": [GenotypeEdge(3, 2, "toy_conv")]}
    g = genotype_from_edges(kept, fake_run(), selector="my-selector", stages=2, groups=[1, 2])
    assert g.space == "toy-space"
    assert g.cells["normal"] == CellGenotype(edges=kept["normal"], concat=[2, 3])
    assert g.cells["reduce"] == CellGenotype(edges=kept["reduce"], concat=[3])
    assert list(g.provenance.items()) == [("spec_hash", "cafe0123"), ("nasreg_version", nasreg.__version__),
                                          ("seed", 7), ("selector", "my-selector"), ("stages", 2),
                                          ("groups", [1, 2])]
    kept["normal"].pop()  # the genotype holds its own lists
    assert len(g.cells["normal"].edges) == 2
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g  # plain JSON


def test_genotype_from_edges_is_public_and_documented():
    assert "genotype_from_edges" in nasreg.__all__ and nasreg.genotype_from_edges is genotype_from_edges
    assert "derive_topk" not in nasreg.__all__  # the DARTS rule lives in the darts plugin
    assert "run.space.derive" in genotype_from_edges.__doc__
