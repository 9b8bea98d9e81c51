"""Attribution methods: the model's own glimpses, and post-hoc maps via PAIR `saliency`.

Post-hoc methods explain the full-image classifier (the same backbone on the whole 224 view)
through `saliency.core`, which is framework-agnostic: it calls `call_model_function` with a
batch and gets numpy arrays back, here from the SavedModel's explain signatures
(service/explain/model.py). Nothing the library has is re-implemented; the parts it lacks are:
- guided backprop: the library's TF2 core has none, so the gradient comes from a signature
  whose ReLU6 gradients are gated (model_export/explain_signatures.py) and is then read by the
  library's plain GradientSaliency;
- grid / superpixel occlusion: the library's Occlusion slides a window one pixel at a time (tens
  of thousands of calls at 224 px), so it is run over a region mask instead of over pixels:
  the "image" it occludes is a grid (or a 1 x S row of superpixels) of ones, and each mask is
  painted into the view before it is classified; its loop asks for one image per call, so it
  is run once to record them and once to replay their scores, computed in between in chunks;
- GuidedIG is not offered: saliency 0.2.1 calls `np.quantile(..., interpolation=...)`, a keyword
  NumPy 2.4 removed, and this project needs NumPy >= 2.4 for TensorFlow 2.21.

Every method returns a 2-D map over the view plus the scores AI Platform reports: the logit
explained (`example_score`), the logit at the method's baseline (`baseline_score`), and, for
path methods, the completeness gap (`approx_error`).

Each method is one function (model, image, parameters, budget) -> Attribution, held by its row
of service/explain/registry.py, which therefore imports this module. So this module reads the
rows only when asked (`_spec`), never at import, and names ExplainParameters for type
checking only: the schema builds its `method` enum from the registry, which imports this module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import saliency.core as saliency
from saliency.core.blur_ig import gaussian_blur

from service.explain import sag
from service.explain.model import Budget, ExplainModel
from service.geometry import VIEW_SIZE, box_mask

if TYPE_CHECKING:
    from service.explain.registry import MethodSpec
    from service.explain.schemas import ExplainParameters

# Interpolation steps per gradient call. Each call is one turn on the model, which a
# prediction arriving meanwhile waits for: 10 rows are ~0.2 s of Lite0 on 2 cores.
BATCH = 10
FILL = {"black": 0.0, "white": 255.0, "grey": 127.0}  # 127 normalises to the model's zero
_CLASS = "class_index"
# Occluded views built and scored at a time (each 0.6 MB; the model runs them in its own chunks).
_OCCLUDED_CHUNK = 32


@dataclass
class Attribution:
    """One explanation of one class on one image, before it is scored and drawn."""

    method: str
    view: np.ndarray  # [224, 224, 3] float 0..255: the pixels explained
    map: np.ndarray  # [224, 224]: importance of each view pixel for the class
    signed: bool  # negative values mean evidence against the class
    class_index: int
    probability: float
    example_score: float
    baseline_score: float
    approx_error: float | None
    explained_model: str  # "glimpses" or "full_image"
    full_logits: np.ndarray | None = None  # the full-image classifier on the view, if known
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ranking(self) -> np.ndarray:
        """Higher = more important evidence for the class (what deletion removes first)."""
        return self.map if self.signed else np.abs(self.map)


# One method run on one image: what every registry row holds as its `compute`.
Compute = Callable[[ExplainModel, bytes, "ExplainParameters", Budget], Attribution]


def _spec(params: ExplainParameters) -> MethodSpec:
    """The method's registry row, looked up when it is needed: the registry imports this
    module for its functions, so importing the registry here at the top would be a cycle."""
    from service.explain.registry import SPECS

    return SPECS[params.method]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def completeness_gap(total: float, example: float, baseline: float) -> float:
    """Integrated gradients' axiom: attributions sum to f(x) - f(baseline); relative gap."""
    delta = example - baseline
    return float(abs(total - delta) / max(abs(delta), 1e-6))


def glimpse_ranking(
    boxes: np.ndarray, evidence: np.ndarray, order: list[int] | None = None
) -> np.ndarray:
    """[224, 224]: glimpse pixels first, by the glimpses' `order` (default: visiting order; a
    pixel in several glimpses takes the earliest rank), then every other pixel by the where
    path's evidence map (the predicted class's per-location probability): the model's own
    ranking of what it did not look at."""
    cell = VIEW_SIZE // evidence.shape[0]
    rest = np.repeat(np.repeat(evidence.astype(np.float64), cell, 0), cell, 1)
    span = rest.max() - rest.min()
    ranking = 0.999 * (rest - rest.min()) / (span if span > 0 else 1.0)  # in [0, 1)
    order = list(range(len(boxes))) if order is None else order
    for rank in range(len(order), 0, -1):  # the first-ranked glimpse is written last and wins
        ranking[box_mask(boxes[order[rank - 1]])] = 2.0 + len(order) - rank
    return ranking


def graph_ranking(att: Attribution, graph: sag.Graph) -> np.ndarray:
    """The attention graph's map: glimpses by how many minimal sufficient sets hold them (the
    ones the decision cannot do without first), ties by visiting order; then the evidence."""
    boxes = att.extras["boxes"]
    counts = [sum(g in m for m in graph.minimal) for g in range(len(boxes))]
    order = sorted(range(len(boxes)), key=lambda g: (-counts[g], g))
    return glimpse_ranking(boxes, att.extras["evidence"], order)


def glimpse_attribution(
    model: ExplainModel,
    image: bytes,
    params: ExplainParameters,
    budget: Budget,
    *,
    every_subset: bool = False,
) -> Attribution:
    """The intrinsic explanation: where the model looked, in order, and what each glimpse is
    worth when the model is re-run on it alone and on all the others without it (2T glimpse
    sets in one batched run). Every number is the model's own answer for exactly those pixels:
    `:predict` with the same `glimpse_boxes` gives it too. `every_subset`: an exact attention
    graph will need every set, so they all go in that one batched run instead."""
    r = model.glimpses(image, params.num_glimpses, budget)
    boxes = r["glimpse_boxes"]
    logits = r["logits"].astype(np.float64)
    k = params.label_index if params.label_index is not None else int(np.argmax(logits))

    def evaluate(sets: np.ndarray) -> np.ndarray:
        return softmax(model.glimpse_sets(image, boxes, sets, budget).astype(np.float64))[:, k]

    steps = len(boxes)
    everything = frozenset(range(steps))
    # All glimpses together is the prediction this call just made: not run again.
    scores = sag.SetScores(evaluate, steps, {everything: float(softmax(logits)[k])})
    if every_subset and steps <= sag.EXACT_MAX_GLIMPSES:
        scores.confidences(scores.all_subsets())
    alone = np.array(scores.confidences(frozenset([g]) for g in range(steps)))
    # Without the only glimpse the model sees nothing: zero logits, a uniform guess.
    without = (
        np.array(scores.confidences(everything - {g} for g in range(steps)))
        if steps > 1
        else np.full(1, 1.0 / logits.shape[-1])
    )
    return Attribution(
        method=params.method,
        view=r["view"],
        map=glimpse_ranking(boxes, r["evidence"]),
        signed=False,
        class_index=k,
        probability=float(softmax(logits)[k]),
        example_score=float(logits[k]),
        baseline_score=0.0,  # no glimpse seen: the seen-average of nothing is zero logits
        approx_error=None,
        explained_model=_spec(params).explained_model,
        full_logits=r["full_logits"],
        extras={
            "boxes": boxes,
            "evidence": r["evidence"],
            "alone": alone,
            "without": without,
            "set_scores": scores,
        },
    )


def sag_attribution(
    model: ExplainModel, image: bytes, params: ExplainParameters, budget: Budget
) -> Attribution:
    """The glimpse attribution plus its structured attention graph (extras["graph"]); the map
    ranks the glimpses by the graph instead of by visiting order."""
    att = glimpse_attribution(model, image, params, budget, every_subset=True)
    graph = sag.build(
        att.extras["set_scores"],
        params.sag_threshold,
        params.sag_max_roots,
        params.sag_beam_width,
        params.sag_expand_threshold,
    )
    att.extras["graph"] = graph
    att.map = graph_ranking(att, graph)
    return att


def _call_model(model: ExplainModel, budget: Budget, guided: bool = False) -> Callable:
    """saliency's call_model_function over the SavedModel's gradient signatures."""

    def call(x_batch, call_model_args=None, expected_keys=None) -> dict[str, np.ndarray]:
        k = call_model_args[_CLASS]
        keys = set(expected_keys or ())
        out: dict[str, np.ndarray] = {}
        if saliency.INPUT_OUTPUT_GRADIENTS in keys:
            grads = model.gradients(x_batch, k, guided, budget)["input_gradients"]
            out[saliency.INPUT_OUTPUT_GRADIENTS] = grads
        if keys & {saliency.CONVOLUTION_LAYER_VALUES, saliency.CONVOLUTION_OUTPUT_GRADIENTS}:
            conv = model.conv(x_batch, k, budget)
            out[saliency.CONVOLUTION_LAYER_VALUES] = conv["conv_values"]
            out[saliency.CONVOLUTION_OUTPUT_GRADIENTS] = conv["conv_gradients"]
        if saliency.OUTPUT_LAYER_VALUES in keys:
            out[saliency.OUTPUT_LAYER_VALUES] = model.logits(x_batch, budget)[:, k]
        return out

    return call


def _mask(
    method: saliency.CoreSaliency,
    x: np.ndarray,
    call: Callable,
    k: int,
    params: ExplainParameters,
    **kwargs: Any,
) -> np.ndarray:
    """GetMask, or SmoothGrad over it (the library's modifier of any gradient method)."""
    args = {_CLASS: k}
    if params.smoothed:
        return method.GetSmoothedMask(
            x,
            call,
            args,
            stdev_spread=params.smoothgrad_stdev_spread,
            nsamples=params.smoothgrad_samples,
            magnitude=params.smoothgrad_magnitude,
            **kwargs,
        )
    return method.GetMask(x, call, args, **kwargs)


@dataclass
class _Context:
    """What a post-hoc method works from: the view, the full-image logits, the class."""

    model: ExplainModel
    view: np.ndarray
    logits: np.ndarray
    k: int
    params: ExplainParameters
    budget: Budget

    def score(self, pixels: np.ndarray) -> float:
        return float(self.model.logits(pixels[None], self.budget)[0, self.k])

    def result(self, mask: np.ndarray, baseline: float, error: float | None, **kw) -> Attribution:
        spec = _spec(self.params)
        signed = spec.is_signed(self.params)
        channels = mask if mask.ndim == 2 else (mask.sum(-1) if signed else np.abs(mask).sum(-1))
        return Attribution(
            method=self.params.method,
            view=self.view,
            map=channels.astype(np.float64),
            signed=signed,
            class_index=self.k,
            probability=float(softmax(self.logits.astype(np.float64))[self.k]),
            example_score=float(self.logits[self.k]),
            baseline_score=baseline,
            approx_error=error,
            explained_model=spec.explained_model,
            full_logits=self.logits,
            extras=kw,
        )

    def grey_score(self) -> float:
        """For methods without a baseline: the logit on the model's blank input."""
        return self.score(np.full_like(self.view, FILL["grey"]))


def post_hoc(method: Callable[[_Context], Attribution]) -> Compute:
    """A full-image method as a registry row's `compute`: every one of them explains the same
    view, with its logits computed once, of the requested class or else the top one."""

    @functools.wraps(method)
    def compute(
        model: ExplainModel, image: bytes, params: ExplainParameters, budget: Budget
    ) -> Attribution:
        view = model.view(image)["view"]
        logits = model.logits(view[None], budget)[0]
        k = params.label_index if params.label_index is not None else int(np.argmax(logits))
        return method(_Context(model, view, logits, k, params, budget))

    return compute


def _gradients(c: _Context, guided: bool) -> Attribution:
    call = _call_model(c.model, c.budget, guided)
    mask = _mask(saliency.GradientSaliency(), c.view, call, c.k, c.params)
    return c.result(mask, baseline=c.grey_score(), error=None)


def vanilla_gradients(c: _Context) -> Attribution:
    return _gradients(c, guided=False)


def guided_backprop(c: _Context) -> Attribution:
    return _gradients(c, guided=True)


def _path_integral(c: _Context, mask: np.ndarray, baseline: float) -> Attribution:
    """IG and Blur IG: signed maps whose sum should equal score - baseline score."""
    # Completeness holds for the plain path integral only, not for averaged squares.
    error = None if c.params.smoothed else completeness_gap(mask.sum(), c.logits[c.k], baseline)
    return c.result(mask, baseline=baseline, error=error)


def integrated_gradients(c: _Context) -> Attribution:
    base = np.full_like(c.view, FILL[c.params.baseline or "black"])
    call = _call_model(c.model, c.budget)
    steps = c.params.integration_steps
    mask = _mask(
        saliency.IntegratedGradients(),
        c.view,
        call,
        c.k,
        c.params,
        x_steps=steps,
        x_baseline=base,
        batch_size=BATCH,
    )
    baseline = c.score(base)
    return _path_integral(c, mask, baseline)


def blur_ig(c: _Context) -> Attribution:
    call = _call_model(c.model, c.budget)
    sigma = c.params.blur_max_sigma
    mask = _mask(
        saliency.BlurIG(),
        c.view,
        call,
        c.k,
        c.params,
        max_sigma=sigma,
        steps=c.params.integration_steps,
        batch_size=BATCH,
    )
    baseline = c.score(gaussian_blur(c.view, sigma))
    return _path_integral(c, mask, baseline)


def xrai(c: _Context) -> Attribution:
    call = _call_model(c.model, c.budget)
    parameters = saliency.XRAIParameters(
        steps=c.params.integration_steps,
        algorithm=c.params.xrai_algorithm,
        return_ig_attributions=True,
    )
    out = saliency.XRAI().GetMaskWithDetails(
        c.view, call, {_CLASS: c.k}, batch_size=BATCH, extra_parameters=parameters
    )
    # Default baselines: the all-min and all-max images; IG over them is averaged (Vertex's
    # baseline score is the average too), and so is the completeness gap of each.
    scores = [c.score(b) for b in out.baselines]
    example = float(c.logits[c.k])
    gaps = [
        completeness_gap(float(a.sum()), example, s)
        for a, s in zip(out.ig_attribution, scores, strict=True)
    ]
    return c.result(
        out.attribution_mask,
        baseline=float(np.mean(scores)),
        error=float(np.mean(gaps)),
    )


def grad_cam(c: _Context) -> Attribution:
    call = _call_model(c.model, c.budget)
    mask = saliency.GradCam().GetMask(
        c.view, call, {_CLASS: c.k}, should_resize=True, three_dims=False
    )
    return c.result(mask, baseline=c.grey_score(), error=None)


def occlusion(c: _Context) -> Attribution:
    """Leave-one-region-out with the library's Occlusion over a region mask (see the module
    docstring): score drop when each grid window or superpixel is filled."""
    params = c.params
    fill = FILL[params.baseline or "grey"]
    blank = np.full_like(c.view, fill)
    if params.occlusion_regions == "superpixels":
        from skimage.segmentation import slic

        segments = slic(
            c.view / 255.0, n_segments=params.occlusion_superpixels, start_label=0, compactness=10
        )
        regions = np.ones((1, int(segments.max()) + 1))
        window = 1

        def paint(m: np.ndarray) -> np.ndarray:
            return m[0][segments]

    else:
        n = params.occlusion_grid
        regions = np.ones((n, n))
        window = params.occlusion_window
        cell = -(-VIEW_SIZE // n)

        def paint(m: np.ndarray) -> np.ndarray:
            return np.repeat(np.repeat(m, cell, 0), cell, 1)[:VIEW_SIZE, :VIEW_SIZE]

    # The library asks for one occluded image per call; one model call per image would take
    # one turn on the model each (50 waits behind predictions under load: 35 s in the soak).
    # So its loop is run twice: first to record every image it asks for (answering zeros),
    # then, after those are scored in chunks of many rows, to replay the scores in its order.
    recorded: list[np.ndarray] = []

    def record(x_batch, call_model_args=None, expected_keys=None) -> dict[str, np.ndarray]:
        recorded.extend(x_batch)
        return {saliency.OUTPUT_LAYER_VALUES: np.zeros(len(x_batch))}

    occluder = saliency.Occlusion()
    occluder.GetMask(regions, record, {_CLASS: c.k}, size=window, value=0)
    scores: list[float] = []
    for i in range(0, len(recorded), _OCCLUDED_CHUNK):
        keep = np.stack([paint(m)[..., None] for m in recorded[i : i + _OCCLUDED_CHUNK]])
        pixels = c.view[None] * keep + blank[None] * (1.0 - keep)
        scores.extend(c.model.logits(pixels.astype(np.float32), c.budget)[:, c.k])
    replayed = iter(scores)

    def replay(x_batch, call_model_args=None, expected_keys=None) -> dict[str, np.ndarray]:
        return {saliency.OUTPUT_LAYER_VALUES: np.array([next(replayed) for _ in x_batch])}

    drops = occluder.GetMask(regions, replay, {_CLASS: c.k}, size=window, value=0)
    # The library sums the drops of every window over a cell; border cells lie under fewer
    # windows, so divide by the count to get each cell's mean drop.
    rows, cols = regions.shape
    cover = np.zeros_like(regions)
    for r in range(rows - window + 1):
        for col in range(cols - window + 1):
            cover[r : r + window, col : col + window] += 1.0
    mean_drop = drops / np.maximum(cover, 1.0)
    return c.result(paint(mean_drop), baseline=c.score(blank), error=None, regions=regions.size)


def attribute(
    model: ExplainModel, image: bytes, params: ExplainParameters, budget: Budget
) -> Attribution:
    """Run the chosen method on one image: whatever its registry row holds, so that adding a
    method is adding a row, never a branch here."""
    return _spec(params).compute(model, image, params, budget)


def is_signed(params: ExplainParameters) -> bool:
    """Whether the method's map has a negative side (evidence against the class)."""
    return _spec(params).is_signed(params)


def estimated_evaluations(params: ExplainParameters) -> int:
    """Model rows a method will run per image, before it starts: the request limit uses it."""
    spec = _spec(params)
    known = spec.explained_model == "glimpses"  # the glimpses' area comes with the map
    return spec.cost(params) + _faithfulness_runs(params, glimpses_known=known)


def _faithfulness_runs(params: ExplainParameters, glimpses_known: bool) -> int:
    """Equal-area sufficiency and necessity (2 rows: the full view's logits are known), the
    glimpses' area when a post-hoc method does not know it (1), and the pixel curves when
    asked for."""
    if not params.faithfulness:
        return 0
    area = 0 if glimpses_known or params.faithfulness_area is not None else 1
    curves = 2 * (params.faithfulness_steps + 1) if params.pixel_curves else 0
    return 2 + area + curves
