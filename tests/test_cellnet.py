"""nasreg/_core/cellnet.py: the cell-network building blocks the DARTS and NASNet networks share.

Frozen fingerprints (state_dict keys, parameter counts) of small DARTS, NASNet-A, AmoebaNet-A and
NASNet-space networks, as the plugins built them before they shared these blocks (checkpoints
keep loading); a CellNetwork's parameter count from first principles; the cell checks; and the
NASNet plugin no longer reaching into the DARTS plugin.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import nasreg
from nasreg import Genotype, GenotypeEdge, GenotypeError
from nasreg._core.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]
REGS = load_plugins().registries
OPS = REGS.operations


pytestmark = pytest.mark.usefixtures("one_thread_module")


def fingerprint(net: nn.Module) -> tuple[int, int, str]:
    """(number of state_dict keys, parameter count, sha256 prefix of the keys in order)."""
    keys = list(net.state_dict())
    return len(keys), sum(p.numel() for p in net.parameters()), hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


#: Computed with the plugins' own copies of the blocks (before nasreg._core.cellnet): 5 cells, 4 channels,
#: 3 input channels, 10 classes, with the auxiliary head.
FROZEN = {
    "darts_v2": (315, 422_444, "83779997ffdb34ff"),
    "nasnet_a": (434, 432_792, "27cffa732451014c"),
    "amoebanet_a": (378, 431_472, "4e56862678ee62b0"),
}


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_published_genotypes_build_the_same_modules_as_before(name):
    genotype = Genotype.load(ROOT / "genotypes" / f"{name}.json", REGS)
    space = REGS.search_spaces.get(genotype.space).factory(operations=["sep_conv_3x3"])
    net = space.build_network(genotype, ops=OPS, in_channels=3, num_classes=10, cells=5, channels=4,
                              auxiliary=True)
    assert isinstance(net, nasreg.CellNetwork)
    assert fingerprint(net) == FROZEN[name]


def test_nasnet_child_with_a_concat_block_builds_the_same_modules_as_before():
    sp = REGS.search_spaces.get("nasnet-cell").factory(blocks=2, channels=4)
    g = sp.genotype_from_choices([0, 1, 0, 8, 1, 2, 2, 8, 8, 0] + [0, 1, 8, 8, 0, 0, 1, 8, 8, 0])
    net = sp.build_network(g, ops=OPS, in_channels=1, num_classes=10)
    assert fingerprint(net) == (190, 5_294, "d3b35ab976eddbdc")


class SkipCell(nasreg.CellBase):
    """A one-node cell: node 2 = skip_connect(input 1); an identity, or a FactorizedReduce when reducing."""

    def __init__(self, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__(C_prev_prev, C_prev, C, reduction, reduction_prev, concat=[2])
        self.add_node(2, [GenotypeEdge(2, 1, "skip_connect")], C, OPS)


def test_cell_network_channels_and_parameters_from_first_principles():
    c, classes = 4, 10
    net = nasreg.CellNetwork(SkipCell, in_channels=3, num_classes=classes, cells=3, channels=c, auxiliary=True)
    assert net.reductions == [1, 2] and net.auxiliary_index == 2
    assert [type(cell.preprocess0).__name__ for cell in net.cells] == ["ReLUConvBN", "ReLUConvBN", "FactorizedReduce"]
    assert isinstance(net.cells[0].ops[0], nn.Identity) and isinstance(net.cells[1].ops[0], nasreg.FactorizedReduce)

    def conv1x1_bn(c_in, c_out):  # a 1x1 ReLUConvBN and a FactorizedReduce have the same count
        return c_in * c_out + 2 * c_out

    stem = 3 * 3 * c * 9 + 2 * 3 * c
    cell0 = conv1x1_bn(3 * c, c) + conv1x1_bn(3 * c, c)                                  # C = c, out c
    cell1 = conv1x1_bn(3 * c, 2 * c) + conv1x1_bn(c, 2 * c) + conv1x1_bn(2 * c, 2 * c)    # C = 2c, out 2c
    cell2 = conv1x1_bn(c, 4 * c) + conv1x1_bn(2 * c, 4 * c) + conv1x1_bn(4 * c, 4 * c)    # C = 4c, out 4c
    classifier = 4 * c * classes + classes
    head = 4 * c * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * classes + classes
    assert net.num_parameters() == stem + cell0 + cell1 + cell2 + classifier
    assert net.num_parameters(auxiliary=True) == stem + cell0 + cell1 + cell2 + classifier + head
    assert list(dict(net.named_children())) == ["stem", "cells", "auxiliary_head", "global_pooling", "classifier"]

    x = torch.randn(2, 3, 8, 8)
    logits, aux = net.train()(x)
    assert logits.shape == aux.shape == (2, classes)
    assert net.eval()(x).shape == (2, classes)


def test_cell_sums_its_ops_and_concatenates_the_listed_nodes():
    torch.manual_seed(0)

    class TwoNodeCell(nasreg.CellBase):
        def __init__(self):
            super().__init__(4, 4, 4, False, False, concat=[3, 2])
            self.add_node(2, [GenotypeEdge(2, 0, "skip_connect"), GenotypeEdge(2, 1, "sep_conv_3x3")], 4, OPS)
            self.add_node(3, [GenotypeEdge(3, 2, "avg_pool_3x3")], 4, OPS)

    cell = TwoNodeCell().eval()
    assert cell.multiplier == 2 and cell._nodes == [[(0, 0, False), (1, 1, True)], [(2, 2, True)]]
    assert isinstance(cell.ops[2].bn, nn.Identity)  # the pool's eval_kwargs: a bare pool
    s0, s1 = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        node2 = cell.preprocess0(s0) + cell.ops[1](cell.preprocess1(s1))
        expected = torch.cat([cell.ops[2](node2), node2], dim=1)
        assert torch.equal(cell(s0, s1, drop_prob=0.9), expected)  # no drop path in eval mode


def test_a_node_numbered_like_an_input_is_named_as_such():
    data = json.loads((ROOT / "genotypes" / "darts_v2.json").read_text())
    data["cells"]["normal"]["edges"][0]["node"] = 1
    with pytest.raises(GenotypeError, match=r"^cells\.normal: node 1 has an incoming edge, but nodes 0 and 1 "
                                            r"are the cell's inputs"):
        nasreg.check_cell(Genotype.from_dict(data), "normal", "darts-cell")


def test_cell_checks_name_the_space_and_the_node_kind():
    data = json.loads((ROOT / "genotypes" / "nasnet_a.json").read_text())
    genotype = Genotype.from_dict(data)
    with pytest.raises(GenotypeError, match=r"cells\.other: missing \(a nasnet-cell genotype has cells"):
        nasreg.check_cell(genotype, "other", "nasnet-cell")
    data["cells"]["normal"]["concat"] = [2, 9]
    with pytest.raises(GenotypeError, match=r"cells\.normal\.concat: node 9 is not a block \(expected nodes in 2\.\.6\)"):
        nasreg.check_cell(Genotype.from_dict(data), "normal", "nasnet-cell", noun="block", label="block node")
    by_node, _concat = nasreg.check_cell(genotype, "normal", "nasnet-cell")
    by_node[2][0] = GenotypeEdge(2, 0, "sep_conv_9x9")
    with pytest.raises(GenotypeError, match=r"cells\.normal: unknown operation 'sep_conv_9x9'"):
        nasreg.check_cell_ops(by_node, "normal", OPS)


@pytest.mark.parametrize("package", ["nasreg_nasnet", "nasreg_darts"])
def test_cell_network_plugins_import_only_what_nasreg_exports(package):
    """No plugin module reaches into another plugin or into a nasreg module."""
    for path in sorted((ROOT / "plugins" / package).glob("*.py")):
        if package == "nasreg_darts" and path.name not in ("network.py", "ops.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
                if node.module == "nasreg":
                    assert all(a.name in nasreg.__all__ for a in node.names), f"{path.name}: {ast.dump(node)}"
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                top = name.split(".")[0]
                assert not (top.startswith("nasreg_") and top != package), f"{path.name} imports {name}"
                assert not name.startswith("nasreg."), f"{path.name} imports {name}"
