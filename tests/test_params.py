"""nasreg._core.params: a factory's signature is its schema (check, bind, Component.build)."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Optional

import pytest

from nasreg import Component, Range, Ref
from nasreg._core.errors import SpecError
from nasreg._core.params import bind, check, component, describe, signature_params
from nasreg._core.registry import Registries


# --- check ----------------------------------------------------------------------------------


def test_range_message_has_the_issue_style():
    with pytest.raises(SpecError) as err:
        check("three", Annotated[int, Range(ge=1)], "specs/x.toml: [selector.clusterer] n_clusters")
    assert str(err.value) == ("specs/x.toml: [selector.clusterer] n_clusters: "
                              "expected an integer >= 1, got 'three'")


@pytest.mark.parametrize("value, ann, expected", [
    (0, Annotated[int, Range(ge=1)], "expected an integer >= 1, got 0"),
    (1.5, Annotated[float, Range(gt=0, lt=1)], "expected a number > 0 and < 1, got 1.5"),
    (0, Annotated[float, Range(gt=0, lt=1)], "expected a number > 0 and < 1, got 0"),
    (2**33, Annotated[int, Range(ge=0, le=2**32 - 1)], "expected an integer >= 0 and <= 4294967295, got 8589934592"),
    (1e-5, Annotated[float, Range(ge=1e-4)], "expected a number >= 0.0001, got 1e-05"),
    (True, int, "expected an integer, got True"),
    (1.0, int, "expected an integer, got 1.0"),
    ("1", float, "expected a number, got '1'"),
    (1, bool, "expected a boolean (true or false), got 1"),
    (3, str, "expected a string, got 3"),
    ("x", list[int], "expected a list of integers, got 'x'"),
    ([1], dict, "expected a table, got [1]"),
    ("median", Literal["mean", "sum"], "expected one of 'mean', 'sum', got 'median'"),
    (float("nan"), float, "expected a finite number, got nan"),
    (float("inf"), float, "expected a finite number, got inf"),
])
def test_wrong_types_and_out_of_range(value, ann, expected):
    with pytest.raises(SpecError) as err:
        check(value, ann, "w")
    assert str(err.value) == f"w: {expected}"


def test_valid_values_pass_and_ints_become_floats_where_numbers_are_expected():
    assert check(3, Annotated[int, Range(ge=1, le=3)], "w") == 3
    out = check(1, float, "w")
    assert out == 1.0 and isinstance(out, float)
    assert check(0.5, Annotated[float, Range(gt=0, lt=1)], "w") == 0.5
    assert check("mean", Literal["mean", "sum"], "w") == "mean"
    assert check(True, bool, "w") is True
    assert check({"a": 1}, dict, "w") == {"a": 1}
    assert check({"a": 1}, dict[str, int], "w") == {"a": 1}


def test_literal_does_not_confuse_booleans_and_integers():
    with pytest.raises(SpecError):
        check(1, Literal[True, "auto"], "w")
    with pytest.raises(SpecError):
        check(True, Literal[1, 2], "w")
    assert check(True, Literal[True, "auto"], "w") is True
    assert check(2, Literal[1, 2], "w") == 2


def test_list_items_are_checked_with_their_index():
    assert check([1, 2], list[Annotated[int, Range(ge=1)]], "w") == [1, 2]
    assert check((1, 2), list[int], "w") == [1, 2]
    assert check([1, "a"], list, "w") == [1, "a"]
    with pytest.raises(SpecError) as err:
        check([1, 0], list[Annotated[int, Range(ge=1)]], "[search] epochs")
    assert str(err.value) == "[search] epochs[1]: expected an integer >= 1, got 0"


def test_optional_accepts_none_and_checks_the_rest():
    assert check(None, Optional[int], "w") is None
    assert check(None, int | None, "w") is None
    assert check(4, Annotated[int, Range(ge=1)] | None, "w") == 4
    with pytest.raises(SpecError) as err:
        check(0, Annotated[int, Range(ge=1)] | None, "w")
    assert str(err.value) == "w: expected an integer >= 1, got 0"


def test_union_reports_the_option_the_value_is_shaped_like():
    Epochs = Annotated[int, Range(ge=0, le=100_000)]
    ann = Epochs | list[Epochs]
    assert check(3, ann, "w") == 3
    assert check([1, 2], ann, "w") == [1, 2]
    with pytest.raises(SpecError) as err:
        check(10**9, ann, "[search] epochs")
    assert str(err.value) == "[search] epochs: expected an integer >= 0 and <= 100000, got 1000000000"
    with pytest.raises(SpecError) as err:
        check([1, "x"], ann, "[search] epochs")
    assert str(err.value) == "[search] epochs[1]: expected an integer >= 0 and <= 100000, got 'x'"
    with pytest.raises(SpecError) as err:  # shaped like neither: both options described
        check("x", ann, "[search] epochs")
    assert str(err.value) == ("[search] epochs: expected an integer >= 0 and <= 100000 or a list of "
                              "integers >= 0 and <= 100000, got 'x'")


def test_unannotated_and_any_accept_anything():
    import inspect

    for value in (1, "x", [1, "y"], {"t": 1}, None):
        assert check(value, inspect.Parameter.empty, "w") == value
        assert check(value, Any, "w") == value


def test_describe():
    assert describe(Annotated[int, Range(ge=1)]) == "an integer >= 1"
    assert describe(list[Annotated[float, Range(gt=0)]]) == "a list of numbers > 0"
    assert describe(Annotated[str, Ref("clusterers")]) == "a string naming a registered clusterer"
    assert describe(Annotated[str, Ref("strategies")]) == "a string naming a registered search strategy"
    assert describe(int | None) == "an integer"
    assert describe(Literal["a", "b"]) == "one of 'a', 'b'"


def test_ref_kind_is_checked_when_the_annotation_is_written():
    with pytest.raises(ValueError, match="Ref\\('clusterer'\\): unknown registry kind; expected one of 'operations'"):
        Ref("clusterer")


# --- Ref: names and tables ------------------------------------------------------------------


def kmeans(n_clusters: Annotated[int, Range(ge=1)] = 3, seed: int | None = None):
    """K-means."""
    return ("kmeans", n_clusters, seed)


@pytest.fixture
def regs() -> Registries:
    r = Registries()
    r.clusterers.register("kmeans", kmeans, plugin="p")
    r.clusterers.register("sklearn-like", lambda **kw: ("any", kw), plugin="p")
    r.operations.register("conv", lambda C, stride, affine: None, plugin="p")
    return r


def test_ref_to_a_name(regs):
    assert check("conv", Annotated[str, Ref("operations")], "w", regs) == "conv"
    with pytest.raises(SpecError) as err:
        check("cnv", Annotated[str, Ref("operations")], "x.toml: [search_space] op", regs)
    assert str(err.value).startswith("x.toml: [search_space] op: unknown operation 'cnv'; did you mean 'conv'?")
    assert "nasreg list-plugins" in str(err.value)
    # without registries (early checks) only the type is checked
    assert check("cnv", Annotated[str, Ref("operations")], "w") == "cnv"


def test_ref_items_of_a_list(regs):
    ann = list[Annotated[str, Ref("operations")]]
    assert check(["conv"], ann, "w", regs) == ["conv"]
    with pytest.raises(SpecError, match=r"^w\[1\]: unknown operation 'zero'"):
        check(["conv", "zero"], ann, "w", regs)


def test_ref_to_a_table_becomes_a_component(regs):
    ann = Annotated[dict, Ref("clusterers")]
    comp = check({"name": "kmeans", "n_clusters": 4}, ann, "x.toml: [selector] clusterer", regs)
    assert isinstance(comp, Component)
    assert comp.name == "kmeans" and comp.kind == "clusterers"
    assert comp.params == {"n_clusters": 4, "seed": None}
    assert comp.where == "x.toml: [selector.clusterer]"
    assert comp.build() == ("kmeans", 4, None)
    assert comp.to_spec() == {"name": "kmeans", "n_clusters": 4, "seed": None}  # the spec drops None


@pytest.mark.parametrize("table, expected", [
    ({"name": "kmeans", "n_clusters": "three"},
     "x.toml: [selector.clusterer] n_clusters: expected an integer >= 1, got 'three'"),
    ({"name": "kmeans", "n_cluster": 2},
     "x.toml: [selector.clusterer] n_cluster: unknown key; did you mean 'n_clusters'?"),
    ({"name": "kmean"},
     "x.toml: [selector.clusterer] name: unknown clusterer 'kmean'; did you mean 'kmeans'?"),
    ({"n_clusters": 2},
     "x.toml: [selector.clusterer] name: missing required key (which clusterer to use;"),
    ({"name": 3}, "x.toml: [selector.clusterer] name: expected a string naming a registered clusterer, got 3"),
])
def test_ref_table_errors_name_the_sub_table(regs, table, expected):
    with pytest.raises(SpecError) as err:
        check(table, Annotated[dict, Ref("clusterers")], "x.toml: [selector] clusterer", regs)
    assert str(err.value).startswith(expected)


def test_ref_accepting_a_name_or_a_table_keeps_the_precise_error(regs):
    ann = Annotated[str | dict, Ref("clusterers")]
    assert check("kmeans", ann, "x: [selector] clusterer", regs) == "kmeans"
    assert check({"name": "kmeans"}, ann, "x: [selector] clusterer", regs).name == "kmeans"
    with pytest.raises(SpecError, match=r"^x: \[selector.clusterer\] name: unknown clusterer 'kmaens'; did you mean"):
        check({"name": "kmaens"}, ann, "x: [selector] clusterer", regs)
    with pytest.raises(SpecError, match=r"^x: \[selector\] clusterer: unknown clusterer 'kmaens'; did you mean"):
        check("kmaens", ann, "x: [selector] clusterer", regs)


# --- bind -----------------------------------------------------------------------------------


def factory(size: Annotated[int, Range(ge=1)], rate: float = 0.5, mode: Literal["a", "b"] = "a",
            free=None, *, flag: bool = False):
    return locals()


def test_bind_fills_defaults_and_checks_values():
    assert bind(factory, {"size": 2, "rate": 1}, "w") == {"size": 2, "rate": 1.0, "mode": "a",
                                                         "free": None, "flag": False}


def test_bind_unknown_key_with_suggestion_or_list():
    with pytest.raises(SpecError) as err:
        bind(factory, {"size": 2, "rte": 1}, "x.toml: [t]")
    assert str(err.value) == "x.toml: [t] rte: unknown key; did you mean 'rate'?"
    with pytest.raises(SpecError) as err:
        bind(factory, {"size": 2, "zzz": 1}, "x.toml: [t]")
    assert str(err.value) == "x.toml: [t] zzz: unknown key (known keys: flag, free, mode, rate, size)"


def test_bind_missing_required_key():
    with pytest.raises(SpecError) as err:
        bind(factory, {}, "x.toml: [t]")
    assert str(err.value) == "x.toml: [t] size: missing required key (an integer >= 1)"


def test_bind_unannotated_parameter_accepts_anything():
    assert bind(factory, {"size": 1, "free": [1, {"a": "b"}]}, "w")["free"] == [1, {"a": "b"}]


def test_bind_skip_leaves_core_supplied_parameters_out():
    def op(C: int, stride: int, affine: bool, width: int = 2):
        pass

    assert bind(op, {"width": 3}, "w", skip=("C", "stride", "affine")) == {"width": 3}
    with pytest.raises(SpecError, match="w C: unknown key"):
        bind(op, {"C": 3}, "w", skip=("C", "stride", "affine"))


def test_bind_kwargs_factory_accepts_unknown_keys_unchecked():
    def est(n: Annotated[int, Range(ge=1)] = 1, **kwargs):
        pass

    assert bind(est, {"n": 2, "anything": "goes"}, "w") == {"n": 2, "anything": "goes"}
    with pytest.raises(SpecError, match="w n: expected an integer >= 1, got 0"):
        bind(est, {"n": 0}, "w")


def test_bind_a_class_uses_its_init_annotations():
    class Est:
        x: str = "class attribute annotations are not parameters"

        def __init__(self, x: Annotated[int, Range(ge=0)] = 0):
            self.x = x

    assert bind(Est, {"x": 3}, "w") == {"x": 3}
    with pytest.raises(SpecError, match="w x: expected an integer >= 0, got -1"):
        bind(Est, {"x": -1}, "w")


def test_bind_a_callable_instance_uses_its_call_annotations():
    class Maker:
        size: str  # a class annotation with a parameter's name must not be taken for it

        def __call__(self, size: Annotated[int, Range(ge=1)] = 1):
            return size

    with pytest.raises(SpecError, match="w size: expected an integer >= 1, got 'big'"):
        bind(Maker(), {"size": "big"}, "w")


def test_bind_a_partial_resolves_the_wrapped_function_annotations():
    part = functools.partial(kmeans, seed=1)
    assert bind(part, {"n_clusters": 2}, "w") == {"n_clusters": 2, "seed": 1}
    with pytest.raises(SpecError, match="w n_clusters: expected an integer >= 1, got 0"):
        bind(part, {"n_clusters": 0}, "w")


def test_bind_an_uninspectable_factory_passes_keys_through():
    assert signature_params(max) is None  # a builtin without a signature
    assert bind(max, {"a": 1}, "w") == {"a": 1}


def test_bind_a_ref_default_table_is_checked_into_a_component(regs):
    def selector(clusterer: Annotated[dict, Ref("clusterers")] = {"name": "kmeans"}):  # noqa: B006
        return clusterer

    out = bind(selector, {}, "x: [selector]", regs)
    assert isinstance(out["clusterer"], Component) and out["clusterer"].params == {"n_clusters": 3, "seed": None}


# --- component and Component.build ----------------------------------------------------------


def test_component_build_passes_extras_the_factory_accepts(regs):
    comp = component("clusterers", {"name": "kmeans"}, "w", regs)
    assert comp.build(seed=7) == ("kmeans", 3, 7)
    assert comp.build(seed=7, unknown=1) == ("kmeans", 3, 7)  # not accepted: not passed
    comp = component("clusterers", {"name": "kmeans", "seed": 2}, "w", regs)
    assert comp.build(seed=7) == ("kmeans", 3, 2)  # the spec's value wins


def test_component_build_passes_extras_to_kwargs_factories(regs):
    comp = component("clusterers", {"name": "sklearn-like", "n_init": 4}, "w", regs)
    assert comp.params == {"n_init": 4}
    assert comp.build(random_state=3) == ("any", {"n_init": 4, "random_state": 3})


def test_component_build_turns_a_rejection_into_a_spec_error():
    def strict(k: int = 1):
        if k > 5:
            raise ValueError("k must be at most 5")

    r = Registries()
    r.strategies.register("strict", strict, plugin="p")
    comp = component("strategies", {"name": "strict", "k": 9}, "x.toml: [strategy]", r)
    with pytest.raises(SpecError) as err:
        comp.build()
    assert str(err.value) == ("x.toml: [strategy]: search strategy 'strict' rejected its parameters: "
                              "k must be at most 5")


def test_component_name_key_in_messages(regs):
    with pytest.raises(SpecError, match=r"^x: \[data\] dataset: unknown dataset 'digits'"):
        component("datasets", {"name": "digits"}, "x: [data]", regs, name_key="dataset")
