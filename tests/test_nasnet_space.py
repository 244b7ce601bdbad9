"""The ``nasnet-cell`` search space: its decisions, the genotypes of choices, the network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import nasreg
from nasreg import CellGenotype, Genotype, GenotypeEdge, GenotypeError
from nasreg._core.params import component
from nasreg._core.plugins import load_plugins
from nasreg_nasnet.decisions import NotASupernetSpace
from nasreg_nasnet.factories import NASNET_OPERATIONS

REGS = load_plugins().registries
OPS = REGS.operations


pytestmark = pytest.mark.usefixtures("one_thread")


def space(**keys):
    return component("search_spaces", {"name": "nasnet-cell", **keys}, "test", REGS).build()


def random_choices(sp, seed=0):
    rng = np.random.default_rng(seed)
    return [int(rng.integers(n)) for _name, n in sp.decisions()]


def test_defaults_are_nasnets_13_ops_5_blocks_add_or_concat():
    sp = space()
    assert sp.operations == list(NASNET_OPERATIONS) and sp.blocks == 5 and sp.combine == ["add", "concat"]
    assert isinstance(sp, nasreg.SearchSpace)


def test_decisions_are_5_per_block_per_cell_with_growing_input_choices():
    sp = space(blocks=3)
    decisions = sp.decisions()
    assert len(decisions) == 2 * 5 * 3  # NASNet: 2 x 5B
    assert decisions[:5] == [("normal.block0.input_a", 2), ("normal.block0.input_b", 2),
                             ("normal.block0.op_a", 13), ("normal.block0.op_b", 13),
                             ("normal.block0.combine", 2)]
    assert [n for name, n in decisions if name.endswith("input_a")] == [2, 3, 4, 2, 3, 4]
    assert decisions[15][0] == "reduce.block0.input_a"
    assert sp.search_space_size() == (2 * 2 * 13 * 13 * 2) ** 2 * (3 * 3 * 13 * 13 * 2) ** 2 * (4 * 4 * 13 * 13 * 2) ** 2


def test_single_choice_decisions_are_left_out():
    sp = space(blocks=2, combine=["add"], operations=["sep_conv_3x3"])
    assert [name for name, _ in sp.decisions()] == ["normal.block0.input_a", "normal.block0.input_b",
                                                    "normal.block1.input_a", "normal.block1.input_b",
                                                    "reduce.block0.input_a", "reduce.block0.input_b",
                                                    "reduce.block1.input_a", "reduce.block1.input_b"]
    g = sp.genotype_from_choices([1, 0, 2, 2, 0, 0, 0, 1])
    assert g.cells["normal"].combine == {2: "add", 3: "add"}
    assert {e.op for e in g.cells["normal"].edges} == {"sep_conv_3x3"}


def test_genotype_of_choices_edges_combine_and_unused_blocks_concatenated():
    sp = space(blocks=3)
    #        block 0: inputs 1, 0; ops 10, 0; concat | block 1: 2, 2; ops 5, 9; add | block 2: 0, 3; 1, 2; add
    normal = [1, 0, 10, 0, 1, 2, 2, 5, 9, 0, 0, 3, 1, 2, 0]
    reduce = [0, 1, 3, 4, 0, 0, 1, 6, 7, 1, 1, 1, 8, 12, 1]
    g = sp.genotype_from_choices(normal + reduce)
    assert g.space == "nasnet-cell"
    n = g.cells["normal"]
    assert n.edges == [GenotypeEdge(2, 1, "sep_conv_3x3"), GenotypeEdge(2, 0, "skip_connect"),
                       GenotypeEdge(3, 2, "max_pool_3x3"), GenotypeEdge(3, 2, "conv_3x3"),
                       GenotypeEdge(4, 0, "conv_1x3_3x1"), GenotypeEdge(4, 3, "conv_7x1_1x7")]
    assert n.combine == {2: "concat", 3: "add", 4: "add"}
    assert n.concat == [4]  # blocks 2 and 3 are read by later blocks
    r = g.cells["reduce"]
    assert r.concat == [2, 3, 4] and r.combine == {2: "add", 3: "concat", 4: "concat"}


def test_genotypes_are_valid_json_and_registered():
    sp = space()
    for seed in range(5):
        g = sp.genotype_from_choices(random_choices(sp, seed))
        g.validate(REGS)
        back = Genotype.from_dict(json.loads(json.dumps(g.to_dict())))
        assert back.cells == g.cells
        for cell in g.cells.values():
            assert len(cell.edges) == 2 * 5 and cell.concat
            used = {e.input for e in cell.edges if e.input >= 2}
            assert cell.concat == [b for b in range(2, 7) if b not in used]


def test_bad_choices_are_refused():
    sp = space(blocks=1)
    with pytest.raises(ValueError, match="expected 10 choices"):
        sp.genotype_from_choices([0] * 9)
    with pytest.raises(ValueError, match=r"decision 'normal.block0.input_a': choice 2 is out of range \(0..1\)"):
        sp.genotype_from_choices([2] + [0] * 9)


def test_no_supernet_and_a_clear_error():
    sp = space()
    with pytest.raises(NotASupernetSpace, match="has no supernet: search it with a sampling strategy"):
        sp.build_supernet(sp.full_candidates(), ops=OPS, in_channels=1, num_classes=10)
    assert issubclass(NotASupernetSpace, NotImplementedError) and issubclass(NotASupernetSpace, nasreg.SpecError)
    assert len(sp.edges()["normal"]) == 2 + 3 + 4 + 5 + 6 and sp.concat("reduce") == [2, 3, 4, 5, 6]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_network_of_random_genotypes_trains_a_step(seed):
    sp = space(channels=8)
    g = sp.genotype_from_choices(random_choices(sp, seed))
    net = sp.build_network(g, ops=OPS, in_channels=1, num_classes=10)
    assert [i for i, c in enumerate(net.cells) if c.reduction] == [1, 3]  # 5 cells: N R N R N
    x = torch.randn(4, 1, 8, 8)
    out = net(x)
    assert out.shape == (4, 10)
    out.sum().backward()
    net.eval()
    assert net(x).shape == (4, 10)


def test_network_sizes_concat_combine_and_auxiliary():
    sp = space(blocks=2)
    # normal: block 0 concat of (skip 0, conv_1x1 1); block 1 add on block 0; reduce: all add
    g = sp.genotype_from_choices([0, 1, 0, 8, 1, 2, 2, 8, 8, 0] + [0, 1, 8, 8, 0, 0, 1, 8, 8, 0])
    net = sp.build_network(g, ops=OPS, in_channels=3, num_classes=7, cells=8, channels=4, auxiliary=True)
    assert len(net.cells) == 8 and [i for i, c in enumerate(net.cells) if c.reduction] == [2, 5]
    assert list(net.cells[0].combiners) == ["2"]  # the concat block's 1x1 conv back to C
    assert net.cells[0].combiners["2"].op[1].in_channels == 2 * 4
    assert net.cells[0].multiplier == 1  # block 1 only (block 0 is read by block 1)
    net.drop_path_prob = 0.2
    logits, aux = net(torch.randn(2, 3, 16, 16))
    assert logits.shape == aux.shape == (2, 7)


def test_bad_genotypes_name_the_cell_and_the_problem():
    sp = space()
    good = sp.genotype_from_choices(random_choices(sp))
    bad = Genotype(space="nasnet-cell", cells={"normal": good.cells["normal"]})
    with pytest.raises(GenotypeError, match=r"cells.reduce: missing"):
        sp.build_network(bad, ops=OPS, in_channels=1, num_classes=10)
    cell = CellGenotype(edges=[GenotypeEdge(2, 0, "conv_1x1"), GenotypeEdge(4, 2, "conv_1x1")], concat=[4])
    with pytest.raises(GenotypeError, match=r"cells.normal: block node 3 has no incoming edge"):
        sp.build_network(Genotype("nasnet-cell", {"normal": cell, "reduce": cell}), ops=OPS, in_channels=1,
                         num_classes=10)
    cell = CellGenotype(edges=[GenotypeEdge(2, 0, "conv_1x1")], concat=[2], combine={2: "max"})
    with pytest.raises(GenotypeError, match=r"cells.normal.combine: node 2: unknown method 'max'"):
        sp.build_network(Genotype("nasnet-cell", {"normal": cell, "reduce": cell}), ops=OPS, in_channels=1,
                         num_classes=10)
