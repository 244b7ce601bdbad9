"""The ``nas-layers`` space (Zoph and Le): decisions, the seed's rules, the genotype encoding, the network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nasreg import CellGenotype, Genotype, GenotypeEdge, GenotypeError, SpecError
from nasreg._core.params import component
from nasreg._core.plugins import load_plugins
from nasreg_nasnet.decisions import NotASupernetSpace
from nasreg_nasnet.layers import NasLayersNetwork, concat_padded

REGS = load_plugins().registries
OPS = REGS.operations


pytestmark = pytest.mark.usefixtures("one_thread")


def space(**keys):
    return component("search_spaces", {"name": "nas-layers", **keys}, "test", REGS).build()


def choose(sp, **fixed):
    """Choices for ``sp`` by decision name; unnamed decisions get 0."""
    names = [name for name, _n in sp.decisions()]
    unknown = set(fixed) - set(names)
    assert not unknown, unknown
    return [fixed.get(name, 0) for name in names]


def test_decisions_per_layer_and_anchor_points():
    sp = space(layers=4)
    decisions = sp.decisions()
    # 3 per layer (the stride is fixed at 1 by default: not a decision) + one anchor per earlier layer
    assert len(decisions) == 4 * 3 + (0 + 1 + 2 + 3)
    assert decisions[:3] == [("layer0.filter_height", 4), ("layer0.filter_width", 4), ("layer0.filters", 4)]
    assert decisions[3:7] == [("layer1.filter_height", 4), ("layer1.filter_width", 4), ("layer1.filters", 4),
                              ("layer1.input_from_layer0", 2)]
    with_strides = space(layers=3, strides=[1, 2, 3]).decisions()
    assert ("layer2.stride", 3) in with_strides and len(with_strides) == 3 * 4 + 3
    assert len(space(layers=5, skip_connections=False).decisions()) == 15


def test_genotype_encodes_each_layer_as_its_registered_op():
    sp = space(layers=3, strides=[1, 2])
    ch = choose(sp, **{"layer0.filter_height": 1, "layer0.filter_width": 2, "layer0.filters": 1,
                       "layer1.filter_height": 3, "layer1.filters": 3, "layer1.stride": 1,
                       "layer1.input_from_layer0": 1,
                       "layer2.input_from_layer0": 1, "layer2.input_from_layer1": 1})
    g = sp.genotype_from_choices(ch)
    cell = g.cells["layers"]
    assert cell.edges == [GenotypeEdge(1, 0, "conv_3x5_36"), GenotypeEdge(2, 1, "conv_7x1_64_s2"),
                          GenotypeEdge(3, 1, "conv_1x1_24"), GenotypeEdge(3, 2, "conv_1x1_24")]
    assert cell.combine == {1: "concat", 2: "concat", 3: "concat"}
    assert cell.concat == [3]
    g.validate(REGS)
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))).cells == g.cells


def test_a_layer_with_no_input_takes_the_image_and_unconsumed_layers_reach_the_final_layer():
    sp = space(layers=4)
    # layer 1 reads nothing (-> the image), layer 2 reads layer 0, layer 3 reads layer 2
    ch = choose(sp, **{"layer2.input_from_layer0": 1, "layer3.input_from_layer2": 1})
    cell = sp.genotype_from_choices(ch).cells["layers"]
    assert [(e.node, e.input) for e in cell.edges] == [(1, 0), (2, 0), (3, 1), (4, 3)]
    assert cell.concat == [2, 4]  # layer 1 (node 2) is read by no layer: concatenated with the last
    chain = space(layers=3, skip_connections=False)
    cell = chain.genotype_from_choices([0] * 9).cells["layers"]
    assert [(e.node, e.input) for e in cell.edges] == [(1, 0), (2, 1), (3, 2)] and cell.concat == [3]


def test_concat_padded_zero_pads_bottom_right_to_the_largest_map():
    a = torch.ones(2, 3, 8, 6)
    b = torch.full((2, 2, 4, 5), 2.0)
    out = concat_padded([a, b])
    assert out.shape == (2, 5, 8, 6)
    assert torch.equal(out[:, :3], a)
    assert torch.equal(out[:, 3:, :4, :5], b)
    assert out[:, 3:, 4:, :].abs().sum() == 0 and out[:, 3:, :, 5:].abs().sum() == 0
    assert concat_padded([a]) is a


def test_network_with_strides_pads_mismatched_sizes():
    sp = space(layers=3, strides=[1, 2])
    # layer 0: 3x3, 24 filters, stride 2 (8x8 -> 4x4); layer 1 reads the image (8x8);
    # layer 2 reads layers 0 and 1: a 4x4 and an 8x8 map, padded to 8x8
    ch = choose(sp, **{"layer0.filter_height": 1, "layer0.filter_width": 1, "layer0.stride": 1,
                       "layer1.filters": 1, "layer2.input_from_layer0": 1, "layer2.input_from_layer1": 1})
    g = sp.genotype_from_choices(ch)
    net = sp.build_network(g, ops=OPS, in_channels=1, num_classes=10, cells=20, channels=36, auxiliary=True)
    assert isinstance(net, NasLayersNetwork) and not hasattr(net, "auxiliary_head")
    assert net.layers[0].conv.stride == (2, 2) and net.layers[2].conv.in_channels == 24 + 36
    seen = {}
    net.layers[2].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    out = net(torch.randn(5, 1, 8, 8))
    assert out.shape == (5, 10)
    x = seen["x"]
    assert x.shape == (5, 60, 8, 8)
    assert x[:, :24, 4:, :].abs().sum() == 0 and x[:, :24, :, 4:].abs().sum() == 0  # layer 0's padding
    assert x[:, :24, :4, :4].abs().sum() > 0
    out.sum().backward()


def test_bad_genotypes_are_refused_with_the_key_path():
    sp = space()
    two_ops = CellGenotype(edges=[GenotypeEdge(1, 0, "conv_3x3_24"), GenotypeEdge(2, 0, "conv_3x3_24"),
                                  GenotypeEdge(2, 1, "conv_1x1_36")], concat=[2])
    with pytest.raises(GenotypeError, match=r"layer node 2: its edges name different ops"):
        sp.build_network(Genotype("nas-layers", {"layers": two_ops}), ops=OPS, in_channels=1, num_classes=10)
    not_layer = CellGenotype(edges=[GenotypeEdge(1, 0, "sep_conv_3x3")], concat=[1])
    with pytest.raises(GenotypeError, match=r"operation 'sep_conv_3x3' is not a nas-layers layer op"):
        sp.build_network(Genotype("nas-layers", {"layers": not_layer}), ops=OPS, in_channels=1, num_classes=10)
    no_last = CellGenotype(edges=[GenotypeEdge(1, 0, "conv_3x3_24"), GenotypeEdge(2, 0, "conv_3x3_24")],
                           concat=[1])
    with pytest.raises(GenotypeError, match=r"the last layer \(node 2\) must be in concat"):
        sp.build_network(Genotype("nas-layers", {"layers": no_last}), ops=OPS, in_channels=1, num_classes=10)


def test_keys_accept_the_papers_grid_only_and_no_supernet():
    with pytest.raises(SpecError, match=r"filters\[1\]: expected one of 24, 36, 48, 64, got 128"):
        space(filters=[24, 128])
    with pytest.raises(SpecError, match=r"strides\[0\]: expected one of 1, 2, 3, got 4"):
        space(strides=[4])
    sp = space()
    with pytest.raises(NotASupernetSpace):
        sp.build_supernet({}, ops=OPS, in_channels=1, num_classes=10)
    assert sp.concat("layers") == [1, 2, 3, 4] and len(sp.edges()["layers"]) == 1 + 2 + 3 + 4


@pytest.mark.parametrize("seed", range(4))
def test_random_genotypes_are_valid_and_build(seed):
    sp = space(layers=5, strides=[1, 2, 3])
    rng = np.random.default_rng(seed)
    g = sp.genotype_from_choices([int(rng.integers(n)) for _name, n in sp.decisions()])
    g.validate(REGS)
    cell = g.cells["layers"]
    consumed = {e.input for e in cell.edges if e.input > 0}
    assert cell.concat == [n for n in range(1, 6) if n == 5 or n not in consumed]
    out = sp.build_network(g, ops=OPS, in_channels=1, num_classes=10)(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
