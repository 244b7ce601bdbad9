"""The darts-cell evaluation network (plugins/nasreg_darts/network.py): the published reference
parameter count, shapes, the auxiliary head, drop path, 5-node cells, genotype errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import nasreg
from nasreg import Genotype, GenotypeError
from nasreg._core.plugins import load_plugins
from nasreg_darts.network import AuxiliaryHead, DartsEvalNetwork, drop_path
from nasreg_darts.ops import PoolBN

ROOT = Path(__file__).resolve().parents[1]
GENOTYPES = ROOT / "genotypes"
REGS = load_plugins().registries
OPS = REGS.operations

#: DARTS_V2 at 20 cells, 36 channels, 3x32x32 input, 10 classes, without the auxiliary head.
#: DARTS reports 3.3M; this exact figure is what the DARTS reference code prints too.
DARTS_V2_PARAMS = 3_349_342
DARTS_V2_PARAMS_WITH_AUX = 3_825_768


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load(name: str) -> Genotype:
    return Genotype.load(GENOTYPES / f"{name}.json", REGS)


def space(**keys):
    return REGS.search_spaces.get("darts-cell").factory(operations=["sep_conv_3x3"], **keys)


def network(genotype: Genotype, **keys) -> DartsEvalNetwork:
    keys = {"in_channels": 3, "num_classes": 10, **keys}
    return space().build_network(genotype, ops=OPS, **keys)


def test_darts_v2_has_the_published_parameter_count():
    net = network(load("darts_v2"), cells=20, channels=36, auxiliary=True)
    assert net.num_parameters() == DARTS_V2_PARAMS
    assert round(net.num_parameters() / 1e6, 1) == 3.3  # the paper's "3.3M"
    assert net.num_parameters(auxiliary=True) == DARTS_V2_PARAMS_WITH_AUX
    assert net.num_parameters(auxiliary=True) == sum(p.numel() for p in net.parameters())
    # Without the head, the network is the same minus the head.
    assert network(load("darts_v2"), cells=20, channels=36).num_parameters() == DARTS_V2_PARAMS


def test_structure_follows_darts():
    net = network(load("darts_v2"), cells=20, channels=36, auxiliary=True)
    assert len(net.cells) == 20
    assert net.reductions == [6, 13]
    assert [i for i, c in enumerate(net.cells) if c.reduction] == [6, 13]
    assert net.auxiliary_index == 13
    assert net.stem[0].out_channels == 108
    assert net.classifier.in_features == 4 * 144
    # Pools are bare (eval_kwargs bn=False); every BN of the cells is affine.
    for cell in net.cells:
        for op in cell.ops:
            if isinstance(op, PoolBN):
                assert isinstance(op.bn, nn.Identity)
    assert all(m.affine for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def test_forward_with_auxiliary_head_on_tiny_input():
    torch.manual_seed(0)
    net = network(load("darts_v2"), cells=3, channels=4, auxiliary=True, in_channels=1)
    x = torch.randn(4, 1, 8, 8)
    logits, aux = net.train()(x)
    assert logits.shape == aux.shape == (4, 10)
    (logits.sum() + aux.sum()).backward()
    assert all(p.grad is not None for p in net.auxiliary_head.parameters())
    out = net.eval()(x)  # eval mode: logits only
    assert isinstance(out, torch.Tensor) and out.shape == (4, 10)


@pytest.mark.parametrize("size", [32, 16, 7])
def test_forward_odd_and_cifar_sizes(size):
    torch.manual_seed(0)
    net = network(load("darts_v2"), cells=6, channels=4, auxiliary=True)
    logits, aux = net.train()(torch.randn(2, 3, size, size))
    assert logits.shape == aux.shape == (2, 10)


def test_auxiliary_head_is_darts_on_8x8_maps():
    head = AuxiliaryHead(16, 10)
    n = sum(p.numel() for p in head.parameters())
    assert n == 16 * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 10 + 10
    x = torch.randn(2, 16, 8, 8)
    pooled = nn.AvgPool2d(5, stride=3, count_include_pad=False)(torch.relu(x))
    assert pooled.shape[-2:] == (2, 2)  # the DARTS pool, then the 2x2 conv: 1x1
    head.eval()
    torch.testing.assert_close(head(x), head.classifier(head.features(pooled).flatten(1)))


def test_drop_path_zeroes_whole_samples_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(2000, 3, 2, 2)
    y = drop_path(x, 0.25)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
    assert (per_sample == 0).all(1).float().mean().item() == pytest.approx(0.25, abs=0.04)
    assert torch.equal(drop_path(x, 0.0), x)


def test_drop_path_only_while_training_and_never_on_identity():
    torch.manual_seed(0)
    net = network(load("darts_v2"), cells=3, channels=4)
    x = torch.randn(2, 3, 8, 8)
    net.eval()
    net.drop_path_prob = 0.5
    a = net(x)
    net.drop_path_prob = 0.0
    torch.testing.assert_close(net(x), a)  # no effect in eval mode
    for cell in net.cells:
        for inputs in cell._nodes:
            for idx, _src, droppable in inputs:
                assert droppable == (not isinstance(cell.ops[idx], nn.Identity))
    # In training mode with p > 0 the output changes between passes (random masks).
    net.train()
    net.drop_path_prob = 0.5
    torch.manual_seed(1)
    b1 = net(x)
    torch.manual_seed(2)
    b2 = net(x)
    assert not torch.allclose(b1, b2)


@pytest.mark.parametrize("name,normal,reduce", [
    ("nasnet_a", [2, 3, 4, 5, 6], [4, 5, 6]),
    ("amoebanet_a", [4, 5, 6], [3, 4, 6]),
])
def test_five_node_cells_concat_only_the_listed_nodes(name, normal, reduce):
    genotype = load(name)
    assert genotype.cells["normal"].concat == normal and genotype.cells["reduce"].concat == reduce
    torch.manual_seed(0)
    net = network(genotype, cells=3, channels=4, auxiliary=True)
    assert [c.multiplier for c in net.cells] == [len(normal), len(reduce), len(reduce)]
    # Channel bookkeeping: each cell's output has multiplier * C channels.
    assert net.classifier.in_features == len(reduce) * 16
    logits, aux = net.train()(torch.randn(2, 3, 16, 16))
    assert logits.shape == aux.shape == (2, 10)
    assert {e.op for c in genotype.cells.values() for e in c.edges} & {"sep_conv_7x7", "conv_7x1_1x7"}


def test_published_darts_v1_and_nasnet_counts():
    """The other shipped genotypes at 20 cells, 36 channels (DARTS's network, no auxiliary head)."""
    counts = {name: network(load(name), cells=20, channels=36).num_parameters()
              for name in ("darts_v1", "nasnet_a", "amoebanet_a")}
    assert counts == {"darts_v1": 3_169_414, "nasnet_a": 3_830_950, "amoebanet_a": 3_145_078}


def test_any_registered_op_works():
    """A third-party op, registered like a built-in one, builds into the evaluation network."""
    plugins = load_plugins()

    def conv_1x1(C, stride, affine):
        return nn.Sequential(nn.Conv2d(C, C, 1, stride=stride, bias=False), nn.BatchNorm2d(C, affine=affine))

    plugins.registries.operations.register("my_conv_1x1", conv_1x1, plugin="test")
    genotype = copy.deepcopy(load("darts_v2"))
    cell = genotype.cells["normal"]
    cell.edges[0] = nasreg.GenotypeEdge(cell.edges[0].node, cell.edges[0].input, "my_conv_1x1")
    net = space().build_network(genotype, ops=plugins.registries.operations, in_channels=3, num_classes=10,
                                cells=3, channels=4)
    assert any(isinstance(op, nn.Sequential) and isinstance(op[0], nn.Conv2d) and op[0].kernel_size == (1, 1)
               for c in net.cells for op in c.ops)
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def _edited(mutate) -> Genotype:
    data = load("darts_v2").to_dict()
    mutate(data["cells"])
    return Genotype.from_dict(data)


@pytest.mark.parametrize("mutate,fragment", [
    (lambda c: c.pop("reduce"), "cells.reduce: missing"),
    (lambda c: c["normal"]["edges"].__setitem__(slice(2, 4), []), "cells.normal: node 3 has no incoming edge"),
    (lambda c: c["normal"]["edges"][7].__setitem__("node", 10**15), "cells.normal: node 6 has no incoming edge"),
    (lambda c: c["normal"].__setitem__("concat", [2, 3, 9]), "cells.normal.concat: node 9 is not an intermediate node"),
    (lambda c: c["normal"].__setitem__("concat", [0, 2]), "cells.normal.concat: node 0"),
    (lambda c: c["reduce"].__setitem__("concat", [2, 2]), "listed twice"),
    (lambda c: c["normal"].__setitem__("combine", {"2": "concat"}), "combines by 'concat'"),
    (lambda c: c["normal"]["edges"][0].__setitem__("op", "sep_conv_9x9"), "unknown operation 'sep_conv_9x9'"),
])
def test_genotype_errors_name_the_cell(mutate, fragment):
    with pytest.raises(GenotypeError) as err:
        network(_edited(mutate), cells=3, channels=4)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_one_cell_network_needs_only_the_cell_types_it_uses():
    data = load("darts_v2").to_dict()
    data["cells"].pop("normal")
    net = network(Genotype.from_dict(data), cells=1, channels=4)  # cell 0 is a reduction cell
    assert net.reductions == [0] and net(torch.randn(2, 3, 8, 8)).shape == (2, 10)
