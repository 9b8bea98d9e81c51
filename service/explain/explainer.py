"""One explanation request: check limits, run the method off the event loop, score, draw.

Explanations of a version run on a CPU copy of it (service/explain/model.py), loaded on the
first :explain request, on one dedicated thread, and each model call takes its turn on the
model (service/scheduler.py), so a burst of explanations cannot starve the prediction path.
The work is bounded three ways: parameter limits (steps, samples), a per-request cap on model
evaluations checked before anything runs, and the request deadline, checked before every
model call so that an abandoned explanation stops early instead of running to the end.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model_export.contract import IMAGE_INPUT
from service import geometry, priority
from service.errors import BackendTimeout, InvalidInput, Overloaded, model_error_reason
from service.explain import faithfulness, methods, sag, visualise
from service.explain.model import Budget, ExplainModel
from service.explain.schemas import (
    AttributionMap,
    ExplainParameters,
    Explanation,
    Faithfulness,
    GlimpseAttribution,
    ImageBytes,
    LabelAttribution,
    SagEdge,
    SagNode,
    StructuredAttentionGraph,
    VisualizationConfig,
)
from service.instances import ImageInput
from service.savedmodel import freeze_heap
from service.scheduler import FairScheduler
from service.schemas import Box
from service.settings import GatewaySettings

log = logging.getLogger(__name__)


def _image(data: bytes, fmt: str) -> ImageBytes:
    text = base64.b64encode(data).decode("ascii")
    return ImageBytes(b64_png=text) if fmt == "png" else ImageBytes(b64_jpeg=text)


def _box(values: np.ndarray) -> Box:
    ymin, xmin, ymax, xmax = (round(float(v), 2) for v in values)
    return Box(ymin=ymin, xmin=xmin, ymax=ymax, xmax=xmax)


class Explainer:
    """Explanations of one served version: built with the version, closed when it unloads.
    `load` gives the version's loaded SavedModel (the predictor's own in-process copy, or the
    gateway's local copy beside TF Serving); it is asked on the first :explain, whose
    deadline does not pay for it."""

    def __init__(
        self,
        settings: GatewaySettings,
        path: Path,
        load: Callable[[], Any],
        scheduler: FairScheduler,
    ):
        self._settings = settings
        self._path = path
        self._load = load
        self._scheduler = scheduler
        self._executor = priority.worker_threads(1, "explain", settings.worker_nice)
        self._model: ExplainModel | None = None
        self._load_lock = threading.Lock()
        self._pending = 0

    @property
    def pending(self) -> int:
        """Explanations queued or running (at most GLIMPSE_EXPLAIN_MAX_PENDING)."""
        return self._pending

    def _loaded(self) -> ExplainModel:
        with self._load_lock:
            if self._model is None:
                started = time.perf_counter()
                model = ExplainModel(self._path, self._load(), self._scheduler)
                model.warm_up()  # first calls optimise each graph (about a second each)
                freeze_heap()  # the explain graphs' objects live as long as the model's
                self._model = model
                log.info(
                    "explanations of %s loaded in %.1f s",
                    self._path,
                    time.perf_counter() - started,
                )
            return self._model

    def check(self, images: int, params: ExplainParameters) -> None:
        """What only explanations refuse, before any work starts: their own instance limit,
        the cost in model evaluations, and visualisation settings that fit the method."""
        limits = self._settings
        if images > limits.explain_max_instances:
            raise InvalidInput(
                f"{images} instances is over the explain limit of"
                f" {limits.explain_max_instances} per request"
            )
        cost = images * methods.estimated_evaluations(params)
        if cost > limits.explain_max_evaluations:
            raise InvalidInput(
                f"this request needs about {cost} model evaluations (instances x steps x"
                f" samples); the limit is {limits.explain_max_evaluations}: lower steps or"
                " smoothgrad_samples"
            )
        config = visualise.resolve(params.visualization, params.method)
        visualise.check_polarity(config, methods.is_signed(params), params.method)

    async def explain(
        self, images: list[ImageInput], params: ExplainParameters
    ) -> list[Explanation]:
        if self._pending >= self._settings.explain_max_pending:
            raise Overloaded(f"{self._pending} explanations are queued or running; retry later")
        loop = asyncio.get_running_loop()
        timeout = self._settings.request_timeout_s
        self._pending += 1
        try:
            # Loading (seconds, once) is not billed to the request's deadline: a first request
            # after start-up should not time out because nobody had asked before.
            model = await loop.run_in_executor(self._executor, self._loaded)
            classes = len(model.labels.names)
            if params.label_index is not None and params.label_index >= classes:
                raise InvalidInput(
                    f"parameters.label_index: {params.label_index} is not a class of this model"
                    f" (it has {classes}: 0..{classes - 1})"
                )
            budget = Budget(deadline=time.monotonic() + timeout)
        except BaseException:
            self._pending -= 1
            raise

        def job() -> list[Explanation]:
            import tensorflow as tf

            explanations = []
            for i, image in enumerate(images):
                try:
                    explanations.append(self._one(model, image, params, budget))
                except tf.errors.InvalidArgumentError as e:  # an image only the model rejects
                    reason = model_error_reason(e.message)
                    raise InvalidInput(
                        f"instances[{i}].input_image_bytes: the model could not decode the"
                        f" image: {reason}"
                    ) from None
            return explanations

        future = self._executor.submit(job)
        # Released when the work really ends (or is cancelled before it starts), not when the
        # client stops waiting: the count is of work the thread still has to do.
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            raise BackendTimeout(f"no explanation within {timeout:g} s") from None

    def _release(self) -> None:
        self._pending -= 1

    def _one(
        self, model: ExplainModel, image: ImageInput, params: ExplainParameters, budget: Budget
    ) -> Explanation:
        start = time.perf_counter()
        evaluations = budget.evaluations
        att = methods.attribute(model, image.data, params, budget)
        graph = att.extras.get("graph")
        attributed = time.perf_counter()
        faith = self._faithfulness(model, image.data, att, params, budget)
        scored_at = time.perf_counter()
        config = visualise.resolve(params.visualization, params.method)
        picture = visualise.render(att.view, att.map, config)
        entry = LabelAttribution(
            attributions={IMAGE_INPUT: _image(picture, config.output_format)},
            baseline_score=att.baseline_score,
            example_score=att.example_score,
            label_index=att.class_index,
            label_name=model.labels.names[att.class_index],
            output_name="logits",
            approx_error=att.approx_error,
            synset=model.labels.synsets[att.class_index],
            probability=att.probability,
            explained_model=att.explained_model,  # type: ignore[arg-type]
            method=params.method + ("+smoothgrad" if params.smoothgrad else ""),
            faithfulness=faith,
            glimpses=self._glimpses(att) if att.explained_model == "glimpses" else None,
            sag=self._sag(graph, att, params, config) if graph else None,
            attribution_map=(
                AttributionMap(shape=att.map.shape, values=att.map.astype(np.float32).tolist())
                if params.attribution_map
                else None
            ),
            visualization=config,
        )
        done = time.perf_counter()
        return Explanation(
            key=image.key,
            attributions_by_label=[entry],
            model_evaluations=budget.evaluations - evaluations,
            timing_ms={
                "attribution": round((attributed - start) * 1000, 2),
                "faithfulness": round((scored_at - attributed) * 1000, 2),
                "visualization": round((done - scored_at) * 1000, 2),
            },
        )

    @staticmethod
    def _faithfulness(
        model: ExplainModel,
        image: bytes,
        att: methods.Attribution,
        params: ExplainParameters,
        budget: Budget,
    ) -> Faithfulness | None:
        """The equal-area metric at the glimpses' own area (unless the caller set one): for a
        post-hoc method that costs one more model call, to know where the glimpses fall."""
        if not params.faithfulness:
            return None
        area = params.faithfulness_area
        if area is None:
            boxes = att.extras.get("boxes")
            if boxes is None:
                boxes = model.glimpses(image, params.num_glimpses, budget)["glimpse_boxes"]
            area = geometry.coverage(boxes)
        view, ranking, k = att.view, att.ranking, att.class_index
        scores = faithfulness.equal_area(model, view, ranking, k, area, budget, att.full_logits)
        if params.pixel_curves:
            scores |= faithfulness.pixel_curves(
                model, view, ranking, k, params.faithfulness_steps, budget
            )
        return Faithfulness(blur_sigma=faithfulness.BLUR_SIGMA, **scores)

    @staticmethod
    def _glimpses(att: methods.Attribution) -> list[GlimpseAttribution]:
        x = att.extras
        full = att.probability
        news = geometry.new_pixel_fractions(x["boxes"])
        return [
            GlimpseAttribution(
                order=i + 1,
                box=_box(b),
                probability=float(alone),
                without=float(without),
                drop=full - float(without),
                new_pixels=round(new, 4),
            )
            for i, (b, alone, without, new) in enumerate(
                zip(x["boxes"], x["alone"], x["without"], news, strict=True)
            )
        ]

    @staticmethod
    def _sag(
        graph: sag.Graph,
        att: methods.Attribution,
        params: ExplainParameters,
        config: VisualizationConfig,
    ) -> StructuredAttentionGraph:
        picture = sag.render(graph, att.view, att.extras["boxes"])
        data = visualise.encode(np.asarray(picture), config.output_format)

        def orders(subset: frozenset[int]) -> list[int]:
            return [g + 1 for g in sorted(subset)]

        minimal = set(graph.minimal)
        return StructuredAttentionGraph(
            threshold=params.sag_threshold,
            full_confidence=graph.full_confidence,
            search=graph.search,  # type: ignore[arg-type]
            minimal_sufficient_sets=[orders(m) for m in graph.minimal],
            roots=[orders(r) for r in graph.roots],
            nodes=[
                SagNode(
                    id=i,
                    glimpses=orders(subset),
                    confidence=conf,
                    relative_confidence=conf / graph.full_confidence,
                    minimal_sufficient=subset in minimal,
                )
                for i, (subset, conf) in enumerate(graph.nodes)
            ],
            edges=[
                SagEdge(source=s, target=t, removed=g + 1, drop=d) for s, t, g, d in graph.edges
            ],
            image=_image(data, config.output_format),
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._model = None
