"""nasreg._core.registry: register, look up (with close-match errors), list."""

from __future__ import annotations

import functools

import pytest

from nasreg._core.errors import NasregError, RegistryError
from nasreg._core.registry import KINDS, Entry, Registries, Registry


def sep_conv(C, stride, affine):
    """Separable convolution.

    More text that is not the description.
    """


def undocumented(C, stride, affine):
    pass


@pytest.fixture
def ops() -> Registry:
    reg = Registry("operations", "operation")
    for name in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "max_pool_3x3"):
        reg.register(name, sep_conv, plugin="darts")
    return reg


def test_register_and_get_returns_the_entry(ops):
    entry = ops.get("sep_conv_3x3")
    assert isinstance(entry, Entry)
    assert entry.factory is sep_conv
    assert entry.plugin == "darts"
    assert entry.name == "sep_conv_3x3"


def test_unknown_name_lists_close_matches_and_points_to_list_plugins(ops):
    with pytest.raises(RegistryError) as err:
        ops.get("sep_conv_3x4")
    msg = str(err.value)
    assert msg.startswith("unknown operation 'sep_conv_3x4'")
    assert "did you mean 'sep_conv_3x3'" in msg
    assert "'sep_conv_5x5'" in msg
    assert "nasreg list-plugins" in msg


def test_unknown_name_without_close_match_has_no_suggestion(ops):
    with pytest.raises(RegistryError) as err:
        ops.get("transformer")
    assert "did you mean" not in str(err.value)
    assert "nasreg list-plugins" in str(err.value)


def test_registry_error_is_a_user_error():
    assert issubclass(RegistryError, NasregError)
    assert RegistryError.exit_code == 2


def test_a_name_two_plugins_register_is_kept_twice(ops):
    mine = ops.register("sep_conv_3x3", undocumented, plugin="my_plugin")  # no error at registration
    assert mine.qualified == "my_plugin:sep_conv_3x3"
    assert ops.get("my_plugin:sep_conv_3x3") is mine
    assert ops.get("darts:sep_conv_3x3").factory is sep_conv
    assert ops.get("sep_conv_5x5").plugin == "darts"  # the plugins' other names are untouched
    assert ops.names().count("sep_conv_3x3") == 1
    assert ops.qualified_names()[-1] == "my_plugin:sep_conv_3x3"
    assert len(ops) == 5 and "sep_conv_3x3" in ops and "my_plugin:sep_conv_3x3" in ops


def test_a_shared_bare_name_is_an_error_only_when_looked_up(ops):
    ops.register("sep_conv_3x3", undocumented, plugin="my_plugin")
    ops.register("sep_conv_3x3", undocumented, plugin="acme")
    with pytest.raises(RegistryError) as err:
        ops.get("sep_conv_3x3")
    assert str(err.value) == ("'sep_conv_3x3' is registered by 3 plugins: use 'acme:sep_conv_3x3', "
                              "'darts:sep_conv_3x3' or 'my_plugin:sep_conv_3x3'")


def test_display_name_is_qualified_only_where_shared(ops):
    mine = ops.register("sep_conv_3x3", undocumented, plugin="my_plugin")
    assert ops.display_name(mine) == "my_plugin:sep_conv_3x3"
    assert ops.display_name(ops.get("darts:sep_conv_3x3")) == "darts:sep_conv_3x3"
    assert ops.display_name(ops.get("sep_conv_5x5")) == "sep_conv_5x5"


def test_an_unknown_qualified_name_suggests_the_plugins_that_have_it(ops):
    ops.register("sep_conv_3x3", undocumented, plugin="acme")
    with pytest.raises(RegistryError) as err:
        ops.get("nasnet:sep_conv_3x3")
    assert str(err.value).startswith("unknown operation 'nasnet:sep_conv_3x3'; did you mean "
                                     "'darts:sep_conv_3x3', 'acme:sep_conv_3x3'")
    with pytest.raises(RegistryError, match="^unknown operation 'darts:nope'"):
        ops.get("darts:nope")
    with pytest.raises(RegistryError, match="^unknown operation ':sep_conv_3x3'"):
        ops.get(":sep_conv_3x3")


def test_one_plugin_registering_a_name_twice_raises_and_so_do_its_lookups(ops):
    with pytest.raises(RegistryError, match="^plugin 'darts' registered operation 'sep_conv_3x3' twice$"):
        ops.register("sep_conv_3x3", undocumented, plugin="darts")
    for name in ("sep_conv_3x3", "darts:sep_conv_3x3"):  # neither registration silently wins
        with pytest.raises(RegistryError, match="registered operation 'sep_conv_3x3' twice"):
            ops.get(name)
    assert ops.get("sep_conv_5x5").plugin == "darts"


def test_description_defaults_to_the_first_docstring_line():
    reg = Registry("operations", "operation")
    assert reg.register("a", sep_conv, plugin="p").description == "Separable convolution."
    assert reg.register("b", undocumented, plugin="p").description == ""
    assert reg.register("c", sep_conv, plugin="p", description="Given.").description == "Given."


def test_description_of_a_class_and_of_a_partial():
    class Clusterer:
        """Groups rows.

        Details.
        """

    reg = Registry("clusterers", "clusterer")
    assert reg.register("cls", Clusterer, plugin="p").description == "Groups rows."
    # A partial's own docstring is functools' ("Create a new function with partial application..."):
    # the wrapped function's describes the entry.
    part = functools.partial(sep_conv, affine=False)
    assert reg.register("part", part, plugin="p").description == "Separable convolution."


def test_metadata_is_kept(ops):
    entry = ops.register("none", undocumented, plugin="darts", is_zero=True, parameter_free=True)
    assert entry.metadata == {"is_zero": True, "parameter_free": True}
    assert entry["is_zero"] is True
    assert entry.get("parameter_free") is True
    assert entry.get("missing", "default") == "default"
    assert ops.get("none").get("is_zero") is True
    assert "description" not in entry.metadata


@pytest.mark.parametrize("name", ["", None, 3, "a:b"])
def test_invalid_names_are_rejected(name):
    with pytest.raises(RegistryError, match="invalid name"):
        Registry("operations", "operation").register(name, sep_conv, plugin="p")


def test_factory_must_be_callable():
    with pytest.raises(RegistryError, match="'p' registered operation 'x' with a factory that is not callable"):
        Registry("operations", "operation").register("x", "not callable", plugin="p")


def test_description_must_be_a_string():
    with pytest.raises(RegistryError, match="description that is not a string"):
        Registry("operations", "operation").register("x", sep_conv, plugin="p", description=3)


def test_failed_plugins_are_named_in_unknown_name_errors(ops):
    ops.failed_plugins = {"cool_ops": "error importing 'cool_ops': ModuleNotFoundError: No module named 'x'"}
    with pytest.raises(RegistryError) as err:
        ops.get("cool_conv")
    assert "plugins that failed to load: cool_ops: error importing" in str(err.value)


def test_listing(ops):
    ops.register("mine", sep_conv, plugin="other")
    assert ops.names() == ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "max_pool_3x3", "mine"]
    assert ops.by_plugin("other") == ["mine"]
    assert len(ops) == 5
    assert "mine" in ops and "yours" not in ops
    assert [e.name for e in ops][-1] == "mine"
    assert repr(ops) == "Registry('operations', 5 entries)"


def test_registries_hold_one_registry_per_kind():
    regs = Registries()
    assert [r.kind for r in regs] == [k for k, _, _ in KINDS]
    assert regs["clusterers"] is regs.clusterers
    assert regs.strategies.noun == "search strategy"
    with pytest.raises(KeyError):
        regs["clusterer"]
    # one registry per kind: a name in one kind is unknown to the others
    regs.operations.register("same", sep_conv, plugin="p")
    regs.clusterers.register("same", sep_conv, plugin="q")
    assert regs.operations.get("same").plugin == "p"
    with pytest.raises(RegistryError, match="unknown dataset 'same'"):
        regs.datasets.get("same")


def test_looking_up_a_value_that_is_not_a_name(ops):
    with pytest.raises(RegistryError, match=r"^unknown operation \['sep_conv_3x3'\]"):
        ops.get(["sep_conv_3x3"])
