"""The dg-darts selector and the elkan clusterer.

The per-edge decision (group_and_select) is tested as a pure function with hand-made trajectories
and weights; the selector is tested end to end on a stand-in run (no training): spec schema,
seeding, clusters.json, the gradient figure, several stage transitions and the genotype.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

import nasreg
from nasreg import NasregError, SpecError, StageResult
from nasreg._core.params import component
from nasreg._core.plugins import load_plugins
from nasreg_darts.derive import derive_topk
from nasreg_dgdarts import GradientGroupedSelector, group_and_select
from nasreg_dgdarts.grouping import RULES, cluster_labels, normalize_features
from nasreg_elkan import elkan

OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
       "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
ZERO = {"none"}
PNG = b"\x89PNG\r\n\x1a\n"
DISTINCT = [[float(i)] for i in range(len(OPS))]  # any distinct rows: FixedLabels ignores them


class FixedLabels:
    """A clusterer that is not k-means at all: it returns the labels it was given and remembers X."""

    def __init__(self, labels):
        self.labels = list(labels)
        self.seen = None

    def fit_predict(self, X):
        self.seen = np.asarray(X)
        return self.labels


def paper_like_trajectories(epochs: int = 15, seed: int = 0) -> list[np.ndarray]:
    """Per-op gradient trajectories shaped like the paper's Figure 4: the two pools alike, the four
    convs alike, skip_connect on its own (the none row is ignored by the selector)."""
    rng = np.random.default_rng(seed)
    t = np.arange(epochs)
    pool = -0.02 * np.exp(-t / 5)
    conv = 0.01 - 0.0005 * t
    skip = -0.01 + 0.002 * t
    noise = lambda: rng.normal(0, 1e-4, epochs)  # noqa: E731
    return [rng.normal(0, 1e-3, epochs), pool + noise(), pool + noise(), skip,
            *(conv + noise() for _ in range(4))]


# --------------------------------------------------------------------------- the decision


def test_vote_dispersion_argmax_picks_skip_but_dgdarts_keeps_the_pools():
    weights = [0.05, 0.22, 0.21, 0.30, 0.055, 0.055, 0.055, 0.055]
    # Plain DARTS derivation on this edge: the single strongest non-zero op wins.
    kept = derive_topk({"normal": [weights]}, {"normal": [OPS]}, {"normal": [(0, 2)]}, ZERO, k=1)
    assert [e.op for e in kept["normal"]] == ["skip_connect"]

    d = group_and_select(OPS, weights, paper_like_trajectories(), elkan(random_state=0), ZERO)
    groups = [(sorted(g.ops), round(g.weight, 6), g.zero) for g in d.groups]
    assert groups == [
        (["avg_pool_3x3", "max_pool_3x3"], 0.43, False),
        (["skip_connect"], 0.30, False),
        (sorted(OPS[4:]), 0.22, False),
        (["none"], 0.05, True),
    ]
    assert d.chosen == ["max_pool_3x3", "avg_pool_3x3"]
    assert d.rule == "heaviest" and d.topped_up == [] and d.n_clusters == 3


# Groups by label: skip alone (.40), pools (.30; avg heavier than max although listed after it),
# convs (.24), none (.06).
TOPUP_WEIGHTS = [0.06, 0.10, 0.20, 0.40, 0.07, 0.06, 0.06, 0.05]
TOPUP_LABELS = [1, 1, 0, 2, 2, 2, 2]  # for the 7 non-zero ops, in candidate order


@pytest.mark.parametrize("min_ops, chosen, topped_up", [
    (1, ["skip_connect"], []),
    (2, ["avg_pool_3x3", "skip_connect"], ["avg_pool_3x3"]),
    (3, ["max_pool_3x3", "avg_pool_3x3", "skip_connect"], ["avg_pool_3x3", "max_pool_3x3"]),
    (4, ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"],
     ["avg_pool_3x3", "max_pool_3x3", "sep_conv_3x3"]),
    (99, OPS[1:], ["avg_pool_3x3", "max_pool_3x3", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
                   "dil_conv_5x5"]),
])
def test_min_ops_tops_up_from_the_next_groups_by_decreasing_weight(min_ops, chosen, topped_up):
    d = group_and_select(OPS, TOPUP_WEIGHTS, DISTINCT, FixedLabels(TOPUP_LABELS), ZERO, min_ops=min_ops)
    assert [g.ops for g in d.groups][:2] == [["skip_connect"], ["max_pool_3x3", "avg_pool_3x3"]]
    assert d.chosen == chosen  # in candidate order, never the zero op
    assert d.topped_up == topped_up
    assert d.rule == ("heaviest+topup" if topped_up else "heaviest")


# none (.50) outweighs every group: pools (.25: max .15, avg .10), skip (.15), convs (.10).
NONE_WEIGHTS = [0.50, 0.15, 0.10, 0.15, 0.025, 0.025, 0.025, 0.025]
NONE_LABELS = [0, 0, 1, 2, 2, 2, 2]


def test_none_group_heaviest_next_uses_the_heaviest_real_group():
    d = group_and_select(OPS, NONE_WEIGHTS, DISTINCT, FixedLabels(NONE_LABELS), ZERO, min_ops=1,
                         none_group_wins="next")
    assert d.groups[0].zero and d.groups[0].ops == ["none"]
    assert d.chosen == ["max_pool_3x3", "avg_pool_3x3"]
    assert d.rule == "zero-heaviest:next"


def test_none_group_heaviest_keep_leaves_only_the_top_up():
    d = group_and_select(OPS, NONE_WEIGHTS, DISTINCT, FixedLabels(NONE_LABELS), ZERO, min_ops=1,
                         none_group_wins="keep")
    assert d.chosen == ["max_pool_3x3"]
    assert d.rule == "zero-heaviest:keep+topup" and d.topped_up == ["max_pool_3x3"]
    d = group_and_select(OPS, NONE_WEIGHTS, DISTINCT, FixedLabels(NONE_LABELS), ZERO, min_ops=3,
                         none_group_wins="keep")
    assert d.chosen == ["max_pool_3x3", "avg_pool_3x3", "skip_connect"]


def test_keep_none_keeps_the_zero_op_without_counting_it():
    d = group_and_select(OPS, TOPUP_WEIGHTS, DISTINCT, FixedLabels(TOPUP_LABELS), ZERO, min_ops=2,
                         keep_none=True)
    assert d.chosen == ["none", "avg_pool_3x3", "skip_connect"]
    d = group_and_select(OPS, NONE_WEIGHTS, DISTINCT, FixedLabels(NONE_LABELS), ZERO, min_ops=1,
                         keep_none=True)
    assert d.chosen == ["none", "max_pool_3x3", "avg_pool_3x3"]


def test_zero_ops_are_known_by_metadata_not_by_name():
    ops = ["zero", "a", "b", "none"]  # here 'none' is an ordinary op and 'zero' the zero op
    d = group_and_select(ops, [0.7, 0.1, 0.1, 0.1], DISTINCT[:4], FixedLabels([0, 1, 1]), {"zero"}, min_ops=1)
    assert d.groups[0].ops == ["zero"] and d.groups[0].zero
    assert d.chosen == ["b", "none"]  # the group {b, none} (.2) outweighs {a} (.1)


def test_any_object_with_fit_predict_is_a_clusterer():
    feats = paper_like_trajectories(epochs=6)
    clusterer = FixedLabels(["x", "x", "y", "x", "y", "y", "z"])
    d = group_and_select(OPS, TOPUP_WEIGHTS, feats, clusterer, ZERO, min_ops=2)
    assert clusterer.seen.shape == (7, 6)  # the zero op is not clustered
    np.testing.assert_allclose(clusterer.seen[0], feats[1])
    # x = max, avg, sep3 (.37); y = skip, sep5, dil3 (.52); z = dil5 (.05); none (.06).
    assert [(g.label, g.ops) for g in d.groups] == [
        ("y", ["skip_connect", "sep_conv_5x5", "dil_conv_3x3"]),
        ("x", ["max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3"]),
        ("zero", ["none"]),
        ("z", ["dil_conv_5x5"])]
    assert d.chosen == ["skip_connect", "sep_conv_5x5", "dil_conv_3x3"]
    json.dumps(d.to_dict())


def test_wrong_number_of_labels_is_an_error():
    with pytest.raises(NasregError, match="returned 2 labels for 7 ops"):
        group_and_select(OPS, TOPUP_WEIGHTS, [[0.0, 1.0]] * 7 + [[2.0, 3.0]], FixedLabels([0, 1]), ZERO)


def test_more_clusters_than_ops_is_clamped_not_a_crash():
    km = elkan(random_state=0)
    d = group_and_select(["none", "a", "b"], [0.2, 0.5, 0.3], [[0, 0], [1.0, 2.0], [-1.0, 0.5]], km, ZERO,
                         min_ops=1)
    assert d.n_clusters == 2 and d.chosen == ["a"] and len(d.groups) == 3
    assert km.n_clusters == 3  # the given clusterer is not changed
    # Two ops with the same trajectory and a third: 3 rows but 2 distinct -> 2 clusters.
    labels, k = cluster_labels(km, np.array([[1.0, 1.0], [1.0, 1.0], [5.0, 0.0]]))
    assert k == 2 and labels[0] == labels[1] != labels[2]
    # All alike: one group, the clusterer is not even called.
    labels, k = cluster_labels(FixedLabels([]), np.ones((4, 3)))
    assert labels == [0, 0, 0, 0]


def test_edges_with_one_or_no_real_op():
    d = group_and_select(["none", "skip_connect"], [0.9, 0.1], [[0.0], [1.0]], FixedLabels([]), ZERO)
    assert d.chosen == ["skip_connect"] and d.rule == "single-op"
    d = group_and_select(["none", "skip_connect"], [0.9, 0.1], [[0.0], [1.0]], FixedLabels([]), ZERO,
                         keep_none=True)
    assert d.chosen == ["none", "skip_connect"]
    d = group_and_select(["none"], [1.0], [[0.0]], FixedLabels([]), ZERO)
    assert d.chosen == ["none"] and d.rule == "zero-only"
    assert set(RULES) >= {"single-op", "zero-only", "heaviest", "heaviest+topup", "zero-heaviest:next",
                          "zero-heaviest:next+topup", "zero-heaviest:keep+topup"}


def test_normalize_options():
    X = np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0], [3.0, 2.0, 1.0]])
    np.testing.assert_allclose(normalize_features(X, "none"), X)
    l2 = normalize_features(X, "l2")
    np.testing.assert_allclose(l2[0], l2[1])  # same shape, different size: identical after l2
    std = normalize_features(np.array([[1.0, 5.0], [3.0, 5.0]]), "standardize")
    np.testing.assert_allclose(std, [[-1.0, 0.0], [1.0, 0.0]])  # a constant epoch becomes 0
    # With l2, ops group by the shape of their trajectory: the big and small rising ops together.
    d = group_and_select(["a", "b", "c"], [0.4, 0.35, 0.25], X, elkan(n_clusters=2, random_state=0), set(),
                         min_ops=1, normalize="l2")
    assert d.chosen == ["a", "b"]


# --------------------------------------------------------------------------- elkan


def test_elkan_factory_is_kmeans_elkan_with_the_paper_defaults():
    from sklearn.cluster import KMeans

    km = elkan()
    assert isinstance(km, KMeans)
    assert (km.algorithm, km.n_clusters, km.max_iter, km.tol, km.n_init) == ("elkan", 3, 300, 1e-4, 10)
    assert elkan(n_clusters=4, random_state=7).get_params()["random_state"] == 7


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def test_builtin_plugins_register(plugins):
    regs = plugins.registries
    assert regs.clusterers.get("elkan").plugin == "elkan"
    assert regs.selectors.get("dg-darts").factory is GradientGroupedSelector
    assert regs.selectors.get("dg-darts").plugin == "dgdarts"


def test_elkan_spec_keys_are_checked(plugins):
    c = component("clusterers", {"name": "elkan"}, "[selector.clusterer]", plugins.registries)
    assert c.params == {"n_clusters": 3, "max_iter": 300, "tol": 1e-4, "n_init": 10, "init": "k-means++",
                        "random_state": None}
    for bad in ({"n_clusters": 0}, {"tol": 0}, {"max_iter": 0}, {"init": "kmeans"}, {"k": 3}):
        with pytest.raises(SpecError):
            component("clusterers", {"name": "elkan", **bad}, "[selector.clusterer]", plugins.registries)


# --------------------------------------------------------------------------- the selector


def test_selector_spec_schema_and_defaults(plugins):
    c = component("selectors", {"name": "dg-darts"}, "[selector]", plugins.registries)
    spec = c.to_spec()
    assert {k: spec[k] for k in ("stages", "features", "normalize", "min_ops", "keep_none", "none_group_wins",
                                  "inherit_weights", "plot")} == {
        "stages": 2, "features": "gradient", "normalize": "none", "min_ops": 2, "keep_none": False,
        "none_group_wins": "next", "inherit_weights": False, "plot": True}
    assert spec["clusterer"]["name"] == "elkan" and spec["clusterer"]["n_clusters"] == 3
    sel = c.build()
    assert sel.num_stages == 2 and sel.inherit_weights is False
    for bad in ({"stages": 0}, {"stages": 11}, {"min_ops": 0}, {"features": "grad"}, {"normalize": "zscore"},
                {"none_group_wins": "first"}, {"keep_none": "yes"}, {"clusterer": {"name": "dbscan"}},
                {"clusterer": {"name": "elkan", "n_clusters": 0}}, {"min_op": 2}):
        with pytest.raises(SpecError):
            component("selectors", {"name": "dg-darts", **bad}, "[selector]", plugins.registries)


EDGES = {"normal": [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)], "reduce": [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]}


def stage_result(stage: int, candidates, epochs: int = 6, seed: int = 0, key: str = "grad_history") -> StageResult:
    rng = np.random.default_rng(seed + stage)
    alphas, hist = {}, {}
    for ct, edges in candidates.items():
        alphas[ct], hist[ct] = [], []
        for ops in edges:
            w = rng.random(len(ops))
            alphas[ct].append((w / w.sum()).tolist())
            # Ops pair up (none+max, avg+skip, ...) in phase-shifted sine waves, plus noise.
            phase = {op: i // 2 for i, op in enumerate(OPS)}
            hist[ct].append([(0.01 * np.sin(np.arange(epochs) / 3 + phase[op])
                              + rng.normal(0, 1e-4, epochs)).tolist() for op in ops])
    return StageResult(stage=stage, candidates=candidates, edges=EDGES, alphas=alphas, **{key: hist})


def fake_run(tmp_path, plugins, seed: int = 3):
    """The parts of a run the selector uses; the space is a real darts-cell space of 2 nodes (EDGES)."""
    space = plugins.registries.search_spaces.get("darts-cell").factory(list(OPS), nodes=2, cells=3, channels=4)
    assert space.edges() == EDGES
    spec = SimpleNamespace(digest=lambda: "0123456789abcdef", search_space=SimpleNamespace(name="darts-cell"))
    return SimpleNamespace(run_dir=tmp_path, seed=seed, registries=plugins.registries, space=space, spec=spec,
                           zero_ops=lambda: {"none"})


def make_selector(plugins, **keys) -> GradientGroupedSelector:
    return component("selectors", {"name": "dg-darts", **keys}, "[selector]", plugins.registries).build()


def test_clusterer_is_seeded_from_the_run_unless_the_spec_sets_it(tmp_path, plugins):
    run = fake_run(tmp_path, plugins, seed=11)
    assert make_selector(plugins).build_clusterer(run).random_state == 11
    sel = make_selector(plugins, clusterer={"name": "elkan", "random_state": 5})
    assert sel.build_clusterer(run).random_state == 5
    # Constructed directly (no spec validation): a plain dict or a clusterer object also work.
    assert GradientGroupedSelector().build_clusterer(run).random_state == 11
    obj = FixedLabels([])
    assert GradientGroupedSelector(clusterer=obj).build_clusterer(run) is obj


def test_three_stages_write_clusters_json_plot_and_genotype(tmp_path, plugins, monkeypatch):
    import nasreg_dgdarts.plots

    monkeypatch.setattr(nasreg_dgdarts.plots, "EDGES_PER_CELL", 1)  # smaller figures: seconds less
    run = fake_run(tmp_path, plugins)
    sel = make_selector(plugins, stages=3)
    full = {ct: [list(OPS) for _ in edges] for ct, edges in EDGES.items()}
    cand1 = sel.next_candidates(stage_result(0, full), run)
    assert set(cand1) == {"normal", "reduce"} and all(len(cand1[ct]) == 5 for ct in cand1)
    for ct, edges in cand1.items():
        for ops in edges:
            assert len(ops) >= 2 and "none" not in ops
            assert ops == [op for op in OPS if op in ops]  # original order
    assert (tmp_path / "gradients_stage0.png").read_bytes().startswith(PNG)

    data = json.loads((tmp_path / "clusters.json").read_text())
    assert data["selector"] == "dg-darts" and data["settings"]["seed"] == 3
    assert data["settings"]["clusterer"]["name"] == "elkan"
    (t0,) = data["transitions"]
    assert (t0["from_stage"], t0["to_stage"]) == (0, 1)
    assert t0["candidate_counts"]["before"] == {"normal": 40, "reduce": 40}
    edge = t0["cells"]["normal"][0]
    assert (edge["input"], edge["output"], edge["candidates"]) == (0, 2, OPS)
    assert edge["chosen"] == cand1["normal"][0] and edge["rule"] in RULES
    assert sorted(op for g in edge["groups"] for op in g["ops"]) == sorted(OPS)
    assert edge["groups"][0]["weight"] >= edge["groups"][-1]["weight"]

    cand2 = sel.next_candidates(stage_result(1, cand1), run)
    assert (tmp_path / "gradients_stage1.png").exists()
    data = json.loads((tmp_path / "clusters.json").read_text())
    assert [t["from_stage"] for t in data["transitions"]] == [0, 1]
    assert all(set(b) <= set(a) for ct in cand2 for a, b in zip(cand1[ct], cand2[ct]))

    final = stage_result(2, cand2)
    genotype = sel.derive(final, run)
    assert genotype.space == "darts-cell"
    assert genotype.provenance["selector"] == "dg-darts" and genotype.provenance["seed"] == 3
    assert genotype.provenance["spec_hash"] == "0123456789abcdef"
    assert genotype.provenance["nasreg_version"] == nasreg.__version__
    assert [c["normal"] for c in genotype.provenance["candidates_per_stage"]] == [
        40, sum(map(len, cand1["normal"])), sum(map(len, cand2["normal"]))]
    expected = derive_topk(final.alphas, final.candidates, final.edges, {"none"}, k=2)  # the DARTS rule
    assert genotype.cells["normal"].edges == expected["normal"]
    assert genotype.cells["reduce"].edges == expected["reduce"]
    assert genotype.cells["normal"].concat == [2, 3]

    # Re-running a transition (a resumed run) replaces it and drops the later ones.
    sel.next_candidates(stage_result(0, full), run)
    assert [t["from_stage"] for t in json.loads((tmp_path / "clusters.json").read_text())["transitions"]] == [0]


def test_the_final_genotype_is_the_space_derivation(tmp_path, plugins):
    """dg-darts holds no derivation rule: the space's derive decides (here one input per node)."""
    run = fake_run(tmp_path, plugins)
    run.space.inputs_per_node = 1
    final = stage_result(1, {ct: [list(OPS) for _ in edges] for ct, edges in EDGES.items()})
    genotype = make_selector(plugins).derive(final, run)
    assert [e.node for e in genotype.cells["normal"].edges] == [2, 3]
    assert genotype.cells["normal"].edges == derive_topk(final.alphas, final.candidates, final.edges,
                                                         {"none"}, k=1)["normal"]
    assert genotype.provenance["stages"] == 2


def test_the_plugin_imports_only_what_nasreg_exports_and_not_the_darts_plugin():
    """No ``nasreg.<module>`` (internal), only names ``nasreg`` exports, nothing of ``nasreg_darts``
    (dg-darts reaches the DARTS derivation through the search space)."""
    import ast
    from pathlib import Path

    import nasreg_dgdarts

    for path in Path(nasreg_dgdarts.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(("nasreg.", "nasreg_darts")), f"{path.name}: imports {name}"
                if name == "nasreg" and isinstance(node, ast.ImportFrom):
                    assert all(a.name in nasreg.__all__ for a in node.names), f"{path.name}: {ast.dump(node)}"


def test_same_seed_same_selection(tmp_path, plugins):
    full = {ct: [list(OPS) for _ in edges] for ct, edges in EDGES.items()}
    runs = [fake_run(tmp_path / str(i), plugins) for i in range(2)]
    for r in runs:
        r.run_dir.mkdir()
    a, b = (make_selector(plugins, plot=False).next_candidates(stage_result(0, full, seed=4), r) for r in runs)
    assert a == b
    assert not (tmp_path / "0" / "gradients_stage0.png").exists()


def test_alpha_features_use_the_alpha_history(tmp_path, plugins):
    full = {ct: [list(OPS) for _ in edges] for ct, edges in EDGES.items()}
    sel = make_selector(plugins, features="alpha", plot=False)
    with pytest.raises(SpecError, match="no joint epochs"):  # only grad_history recorded
        sel.next_candidates(stage_result(0, full), fake_run(tmp_path, plugins))
    cand = sel.next_candidates(stage_result(0, full, key="alpha_history"), fake_run(tmp_path, plugins))
    assert all(len(ops) >= 2 for edges in cand.values() for ops in edges)


def test_no_joint_epochs_is_a_clear_spec_error(tmp_path, plugins):
    full = {ct: [list(OPS) for _ in edges] for ct, edges in EDGES.items()}
    sel = make_selector(plugins, plot=False)
    run = fake_run(tmp_path, plugins)
    with pytest.raises(SpecError, match="stage 0 has no joint epochs"):
        sel.next_candidates(stage_result(0, full, epochs=0), run)
    with pytest.raises(SpecError, match="stage 0 has no joint epochs"):
        sel.next_candidates(StageResult(stage=0, candidates=full, edges=EDGES,
                                        alphas=stage_result(0, full).alphas), run)
    # One joint epoch is enough: every op's trajectory is a single number.
    cand = sel.next_candidates(stage_result(0, full, epochs=1), run)
    assert all(len(ops) >= 2 for edges in cand.values() for ops in edges)


def test_non_finite_gradients_are_reported_with_their_edge(tmp_path, plugins):
    full = {ct: [list(OPS) for _ in edges] for ct, edges in EDGES.items()}
    result = stage_result(0, full)
    result.grad_history["reduce"][3][2][1] = float("nan")
    with pytest.raises(NasregError, match="'avg_pool_3x3' on reduce edge 3 are not finite"):
        make_selector(plugins, plot=False).next_candidates(result, fake_run(tmp_path, plugins))


def test_a_failing_plot_does_not_fail_the_selection(tmp_path, plugins, monkeypatch, capsys):
    import nasreg_dgdarts.plots as plots

    def boom(*a, **k):
        raise RuntimeError("no display, no luck")

    monkeypatch.setattr(plots, "_draw", boom)
    full = {ct: [list(OPS) for _ in edges] for ct, edges in EDGES.items()}
    cand = make_selector(plugins).next_candidates(stage_result(0, full), fake_run(tmp_path, plugins))
    assert cand and (tmp_path / "clusters.json").exists()
    assert "could not write gradients_stage0.png: RuntimeError: no display, no luck" in capsys.readouterr().err
