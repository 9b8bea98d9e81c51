"""The explain building blocks without HTTP: guided ReLU6, SAG search, faithfulness, drawing,
the method registry."""

from __future__ import annotations

from dataclasses import replace
from itertools import combinations
from typing import get_args

import numpy as np
import pytest
import tensorflow as tf

from model_export.explain_signatures import guided_backbone, guided_relu6
from service.explain import faithfulness, methods, registry, sag, visualise
from service.explain.methods import softmax
from service.explain.model import Budget
from service.explain.schemas import METHODS, ExplainParameters, Method, VisualizationConfig


def test_guided_relu6_gates_like_springenberg():
    x = tf.constant([-1.0, 0.5, 3.0, 7.0, 2.0])
    upstream = tf.constant([1.0, 2.0, -1.0, 1.0, 0.5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = guided_relu6(x)
    # Passes only where the unit was active (0 < x < 6) and the gradient is positive.
    np.testing.assert_allclose(tape.gradient(y, x, upstream), [0.0, 2.0, 0.0, 0.0, 0.5])
    np.testing.assert_allclose(y, tf.nn.relu6(x))


def test_guided_backbone_shares_weights_and_forward(tiny_model):
    backbone = tiny_model.backbone
    guided = guided_backbone(backbone)
    assert {id(v) for v in guided.weights} == {id(v) for v in backbone.weights}
    x = tf.random.stateless_normal([2, 64, 64, 3], seed=[1, 2])
    np.testing.assert_allclose(guided(x), backbone(x), atol=1e-6)


class LogitModel:
    """A stand-in for the model: a set's confidence is the softmax of its glimpses' mean
    logits. It counts calls and rows, to check that the search batches its model runs."""

    def __init__(self, logits: np.ndarray, k: int):
        self.logits, self.k = logits, k
        self.calls = self.rows = 0

    def __call__(self, sets: np.ndarray) -> np.ndarray:
        assert sets.dtype == bool and sets.any(axis=1).all()
        self.calls += 1
        self.rows += len(sets)
        mean = sets.astype(float) @ self.logits / sets.sum(1, keepdims=True)
        return softmax(mean)[:, self.k]

    def conf(self, subset) -> float:
        return float(self(np.isin(np.arange(len(self.logits)), list(subset))[None])[0])


def _brute_force_minimal(model: LogitModel, threshold: float) -> set[frozenset[int]]:
    steps = len(model.logits)
    bar = threshold * model.conf(range(steps))
    found = set()
    for size in range(1, steps + 1):
        for s in combinations(range(steps), size):
            smaller = (set(s) - {g} for g in s)
            if model.conf(s) >= bar and all(not r or model.conf(r) < bar for r in smaller):
                found.add(frozenset(s))
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_sag_search_finds_every_minimal_sufficient_set(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (7, 20))
    model = LogitModel(logits, int(np.argmax(logits.mean(0))))
    scores = sag.SetScores(model, 7)
    graph = sag.build(scores, 0.9, max_roots=3, beam_width=5, expand_threshold=0.4)
    assert graph.search == "exact"
    # Every subset ran once, in two batched runs (the full set first, then the rest).
    assert (model.calls, model.rows) == (2, 2**7 - 1)
    assert set(graph.minimal) == _brute_force_minimal(LogitModel(logits, model.k), 0.9)
    for a, b in combinations(graph.roots, 2):
        assert len(a & b) <= 1  # the paper's diversity rule
    confidence = dict(graph.nodes)
    for source, target, removed, drop in graph.edges:
        parent, child = graph.nodes[source][0], graph.nodes[target][0]
        assert child == parent - {removed}
        assert drop == pytest.approx(
            max((confidence[parent] - confidence[child]) / graph.full_confidence, 0.0)
        )


def test_beam_search_above_eight_glimpses_returns_minimal_sets():
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 3, (12, 30))
    model = LogitModel(logits, int(np.argmax(logits.mean(0))))
    graph = sag.build(
        sag.SetScores(model, 12), 0.9, max_roots=3, beam_width=4, expand_threshold=0.4
    )
    assert graph.search == "beam" and graph.minimal
    assert model.rows < 2**12 - 1 and model.calls < model.rows  # batched, not exhaustive
    bar = 0.9 * graph.full_confidence
    check = LogitModel(logits, model.k)
    for found in graph.minimal:
        assert check.conf(found) >= bar
        assert all(check.conf(found - {g}) < bar for g in found if len(found) > 1)


def test_set_scores_never_run_a_set_twice():
    model = LogitModel(np.random.default_rng(1).normal(0, 1, (3, 5)), 2)
    scores = sag.SetScores(model, 3)
    a, b = frozenset([0]), frozenset([1, 2])
    first = scores.confidences([a, b, a])
    assert first[0] == first[2] and (model.calls, model.rows) == (1, 2)
    assert scores.conf(b) == first[1] and model.calls == 1
    with pytest.raises(ValueError, match="empty set"):
        scores.conf(frozenset())


def test_equal_area_cells_follow_the_map():
    ranking = np.zeros((224, 224))
    ranking[:32, :64] = 1.0  # 4 x 8 cells of 8 px
    mask = faithfulness.top_cells(ranking, 32 * 64 / 224**2)
    np.testing.assert_array_equal(mask, ranking > 0)
    # A map that ranks single pixels is judged by its cells' means, not its scattered pixels.
    speckle = np.zeros((224, 224))
    speckle[::8, ::8] = 5.0
    speckle[96:104, 96:104] = 1.0
    assert faithfulness.top_cells(speckle, 64 / 224**2)[96:104, 96:104].all()


def test_pixel_order_follows_the_map_and_breaks_ties_the_same_way():
    ranking = np.zeros((8, 8))
    ranking[2, 3], ranking[5, 5] = 2.0, 1.0
    order = faithfulness.pixel_order(ranking)
    assert list(order[:2]) == [2 * 8 + 3, 5 * 8 + 5]
    np.testing.assert_array_equal(order, faithfulness.pixel_order(ranking))
    assert faithfulness.top_mask(ranking, 2 / 64).sum() == 2
    assert faithfulness.auc(np.array([0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert faithfulness.auc(np.array([1.0, 0.0])) == pytest.approx(0.5)


def test_an_all_zero_map_draws_black_not_nan():
    view = np.full((224, 224, 3), 200.0)
    config = visualise.resolve(VisualizationConfig(), "integrated_gradients")
    assert config.clip_below_percentile == 62.0 and config.color_map == "pink_green"
    pixels = visualise.render_array(view, np.zeros((224, 224)), config)
    assert pixels.dtype == np.uint8 and pixels.max() == 0


def test_polarity_and_colours():
    view = np.full((224, 224, 3), 100.0)
    amap = np.zeros((224, 224))
    amap[:50], amap[-50:] = 1.0, -1.0
    both = VisualizationConfig(polarity="both", color_map="red_green", clip_below_percentile=0)
    pixels = visualise.render_array(view, amap, visualise.resolve(both, "integrated_gradients"))
    assert tuple(pixels[10, 10]) == (0, 200, 0) and tuple(pixels[-10, 10]) == (220, 0, 0)
    negative = both.model_copy(update={"polarity": "negative"})
    pixels = visualise.render_array(view, amap, visualise.resolve(negative, "occlusion"))
    assert tuple(pixels[10, 10]) == (0, 0, 0) and tuple(pixels[-10, 10]) == (220, 0, 0)
    masked = VisualizationConfig(overlay_type="mask_black", clip_below_percentile=0)
    pixels = visualise.render_array(view, amap, visualise.resolve(masked, "occlusion"))
    assert tuple(pixels[10, 10]) == (100, 100, 100) and pixels[112, 112].max() == 0


# What the API promises per method (its enum order, which take SmoothGrad, default steps,
# region maps, sign, cost): the registry's rows must keep giving exactly this.
OLD_METHODS = (
    "glimpses",
    "vanilla_gradients",
    "guided_backprop",
    "integrated_gradients",
    "blur_ig",
    "smoothgrad",
    "grad_cam",
    "xrai",
    "occlusion",
    "sag",
)
OLD_SMOOTHABLE = {"vanilla_gradients", "guided_backprop", "integrated_gradients", "blur_ig"}
OLD_DEFAULT_STEPS = {"integrated_gradients": 50, "xrai": 100, "blur_ig": 100}
OLD_REGION_METHODS = {"xrai", "grad_cam", "occlusion", "glimpses", "sag"}
OLD_UNSIGNED = {"vanilla_gradients", "guided_backprop", "smoothgrad", "grad_cam"}
# estimated_evaluations before the registry, default parameters, faithfulness on / off.
OLD_COST = {
    "glimpses": (18, 16),
    "vanilla_gradients": (7, 4),
    "guided_backprop": (7, 4),
    "integrated_gradients": (56, 53),
    "blur_ig": (106, 103),
    "smoothgrad": (31, 28),
    "grad_cam": (7, 4),
    "xrai": (206, 203),
    "occlusion": (55, 52),
    "sag": (78, 76),
}


def test_every_method_has_one_row_in_the_api_order():
    assert get_args(Method) == METHODS == registry.NAMES == OLD_METHODS
    assert ExplainParameters.model_json_schema()["properties"]["method"]["enum"] == list(
        OLD_METHODS
    )
    documented = ExplainParameters.model_json_schema()["properties"]["method"]["description"]
    assert all(f"`{s.name}`: {s.description}" in documented for s in registry.REGISTRY)


def test_derived_tables_match_the_old_ones():
    assert registry.SMOOTHABLE == OLD_SMOOTHABLE
    assert registry.DEFAULT_STEPS == OLD_DEFAULT_STEPS
    assert visualise.REGION_METHODS == OLD_REGION_METHODS
    glimpse_methods = {"glimpses", "sag"}
    assert {s.name for s in registry.REGISTRY if s.explained_model == "glimpses"} == glimpse_methods


# The function each row ran before the rows held them (smoothgrad is vanilla gradients under
# SmoothGrad); post-hoc ones are wrapped by methods.post_hoc.
OLD_COMPUTE = {
    "glimpses": methods.glimpse_attribution,
    "vanilla_gradients": methods.vanilla_gradients,
    "guided_backprop": methods.guided_backprop,
    "integrated_gradients": methods.integrated_gradients,
    "blur_ig": methods.blur_ig,
    "smoothgrad": methods.vanilla_gradients,
    "grad_cam": methods.grad_cam,
    "xrai": methods.xrai,
    "occlusion": methods.occlusion,
    "sag": methods.sag_attribution,
}


@pytest.mark.parametrize("spec", registry.REGISTRY, ids=lambda s: s.name)
def test_every_row_holds_its_methods_function(spec):
    assert callable(spec.compute)
    if spec.explained_model == "glimpses":
        assert spec.compute is OLD_COMPUTE[spec.name]
    else:
        assert spec.compute.__wrapped__ is OLD_COMPUTE[spec.name]


def test_attribute_runs_the_rows_function(monkeypatch):
    calls = []

    def fake(model, image, params, budget):
        calls.append((model, image, params, budget))
        return "attribution"

    monkeypatch.setitem(registry.SPECS, "xrai", replace(registry.SPECS["xrai"], compute=fake))
    params, budget = ExplainParameters(method="xrai"), Budget()
    assert methods.attribute("model", b"jpeg", params, budget) == "attribution"
    assert calls == [("model", b"jpeg", params, budget)]


class ViewModel:
    """A stand-in for the model's view and full-image logits, for post-hoc methods."""

    def __init__(self, logits: np.ndarray):
        self.view_pixels = np.full((224, 224, 3), 10.0)
        self.full_logits = logits
        self.rows = 0

    def view(self, image: bytes) -> dict[str, np.ndarray]:
        assert image == b"jpeg"
        return {"view": self.view_pixels}

    def logits(self, pixels: np.ndarray, budget=None) -> np.ndarray:
        self.rows += len(pixels)
        return np.tile(self.full_logits, (len(pixels), 1))


@pytest.mark.parametrize(("label_index", "k"), [(None, 2), (0, 0)])
def test_post_hoc_explains_the_view_for_the_asked_or_top_class(label_index, k):
    model = ViewModel(np.array([0.5, -1.0, 3.0]))
    seen = []

    def method(c):
        seen.append(c)
        return c.result(np.ones((224, 224)), baseline=0.25, error=None)

    params = ExplainParameters(method="grad_cam", label_index=label_index)
    att = methods.post_hoc(method)(model, b"jpeg", params, Budget())
    (c,) = seen
    assert c.view is model.view_pixels and c.k == k and c.params is params
    np.testing.assert_array_equal(c.logits, model.full_logits)
    assert model.rows == 1  # the view's logits, once
    assert att.class_index == k and att.example_score == model.full_logits[k]
    assert (att.method, att.signed, att.explained_model) == ("grad_cam", False, "full_image")
    assert att.baseline_score == 0.25


class GlimpseModel:
    """A stand-in for the glimpse model: three glimpses, and a set's logits are the sum of its
    glimpses' logits (the first glimpse favours class 1, the other two class 0)."""

    GLIMPSE_LOGITS = np.array([[0.0, 1.0], [2.0, 0.0], [2.0, 0.0]])

    def __init__(self):
        self.set_calls = []

    def glimpses(self, image, num_glimpses, budget=None):
        boxes = np.array([[0, 0, 64, 64], [64, 64, 128, 128], [128, 128, 224, 224]], float)
        return {
            "glimpse_boxes": boxes[:num_glimpses],
            "logits": self.GLIMPSE_LOGITS[:num_glimpses].sum(0),
            "view": np.zeros((224, 224, 3)),
            "evidence": np.zeros((7, 7)),
            "full_logits": np.zeros(2),
        }

    def glimpse_sets(self, image, boxes, sets, budget=None):
        self.set_calls.append(len(sets))
        return sets.astype(float) @ self.GLIMPSE_LOGITS


def test_glimpse_rows_dispatch_and_only_sag_builds_a_graph():
    glimpses, graph = GlimpseModel(), GlimpseModel()
    budget = Budget()
    plain = methods.attribute(
        glimpses, b"jpeg", ExplainParameters(method="glimpses", num_glimpses=3), budget
    )
    att = methods.attribute(graph, b"jpeg", ExplainParameters(method="sag", num_glimpses=3), budget)
    assert plain.class_index == att.class_index == 0
    assert (plain.method, att.method) == ("glimpses", "sag")
    assert plain.explained_model == att.explained_model == "glimpses"
    assert "graph" not in plain.extras and isinstance(att.extras["graph"], sag.Graph)
    np.testing.assert_allclose(att.extras["alone"], plain.extras["alone"])
    np.testing.assert_allclose(att.extras["without"], plain.extras["without"])
    # Glimpses: each glimpse alone, then each left out; sag: every other subset in one run.
    assert glimpses.set_calls == [3, 3] and graph.set_calls == [2**3 - 2]
    # Visiting order ranks the first glimpse first; the graph ranks it last, as it holds
    # none of the minimal sufficient sets ({1} and {2}).
    assert set(att.extras["graph"].minimal) == {frozenset([1]), frozenset([2])}
    assert plain.map[10, 10] > max(plain.map[100, 100], plain.map[200, 200])
    assert att.map[10, 10] < min(att.map[100, 100], att.map[200, 200])


@pytest.mark.parametrize("method", OLD_METHODS)
def test_signedness_and_cost_for_default_parameters(method):
    params = ExplainParameters(method=method)
    assert methods.is_signed(params) == (method not in OLD_UNSIGNED)
    with_faithfulness, without = OLD_COST[method]
    assert methods.estimated_evaluations(params) == with_faithfulness
    lean = ExplainParameters(method=method, faithfulness=False)
    assert registry.SPECS[method].cost(lean) == methods.estimated_evaluations(lean) == without


def test_smoothgrad_squares_lose_the_path_integrals_sign():
    for method in ("integrated_gradients", "blur_ig"):
        squared = ExplainParameters(method=method, smoothgrad=True, smoothgrad_samples=3)
        assert not methods.is_signed(squared)
        assert methods.is_signed(squared.model_copy(update={"smoothgrad_magnitude": False}))
        steps = OLD_DEFAULT_STEPS[method]
        assert methods.estimated_evaluations(squared) == 3 * steps + 3 + 3


class _Weighed:
    """A stand-in model whose class-0 logit is the sum of the view's pixels times fixed
    weights: occlusion's drops are then known, and its calls counted."""

    def __init__(self, rng: np.random.Generator):
        self.weights = rng.random((224, 224, 3))
        self.calls: list[int] = []

    def logits(self, pixels: np.ndarray, budget: Budget | None = None) -> np.ndarray:
        self.calls.append(len(pixels))
        out = np.zeros((len(pixels), 2))
        out[:, 0] = (pixels * self.weights).sum(axis=(1, 2, 3)) / 1e4
        return out


@pytest.mark.parametrize("grid,window", [(7, 1), (7, 2), (5, 3)])
def test_occlusion_scores_every_window_in_few_model_calls(grid, window):
    """Each model call takes a turn on the model: the library's one-image calls are recorded
    and replayed, so a 7x7 grid is a few calls of many rows, not 50 of one, and the map is the
    library's (the mean drop of the windows over each cell)."""
    rng = np.random.default_rng(0)
    model = _Weighed(rng)
    view = rng.uniform(0, 255, (224, 224, 3)).astype(np.float32)
    params = ExplainParameters(method="occlusion", occlusion_grid=grid, occlusion_window=window)
    context = methods._Context(model, view, np.array([1.0, 0.0]), 0, params, Budget())
    att = methods.occlusion(context)
    windows = (grid - window + 1) ** 2
    # The unoccluded view and each window, then the grey view (the baseline score).
    assert sum(model.calls[:-1]) == 1 + windows and len(model.calls) == 1 + -(-(1 + windows) // 32)

    cell = -(-224 // grid)
    grey = np.full_like(view, methods.FILL["grey"])
    contribution = ((view - grey) * model.weights).sum(-1) / 1e4  # what filling a pixel drops
    expected = np.zeros((grid, grid))
    cover = np.zeros((grid, grid))
    for r in range(grid - window + 1):
        for c in range(grid - window + 1):
            drop = contribution[r * cell : (r + window) * cell, c * cell : (c + window) * cell]
            expected[r : r + window, c : c + window] += drop.sum()
            cover[r : r + window, c : c + window] += 1
    expected = np.repeat(np.repeat(expected / cover, cell, 0), cell, 1)[:224, :224]
    np.testing.assert_allclose(att.map, expected, rtol=1e-4, atol=1e-6)
