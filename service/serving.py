"""The one way through the gateway: admission, then decode -> predict -> build.

Online routes and batch jobs both come here, so "may this request run now?" and "how does a
photo become a prediction?" are each answered in one place. Routes are adapters around these
functions; nothing below them knows about HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from service.errors import BackendTimeout, InvalidInput, ModelNotFound, NotReady
from service.instances import ImageInput
from service.predictor import ModelOutput, Options, Predictor, Served
from service.responses import build_prediction
from service.savedmodel import ModelInfo
from service.schemas import Instance, Prediction, PredictParameters
from service.settings import VERSION_NAME, GatewaySettings

if TYPE_CHECKING:  # batch jobs use the prediction functions without a gateway
    from service.explain.schemas import ExplainParameters, Explanation
    from service.state import GatewayState

_INT64_MAX = 2**63 - 1


def parse_version(text: str | None) -> int | None:
    """TF Serving versions are numbers; AI Platform's are names, accepted here as `v<N>`
    (labels are resolved to numbers before admission: service/versions.py). A number past
    int64 is TF Serving's 400; anything else that is not a number names no version (404)."""
    if text is None:
        return None
    match = VERSION_NAME.fullmatch(text)
    if not match:
        raise ModelNotFound(f"Could not find version {text}")
    digits = match.group(1).lstrip("0") or "0"
    if len(digits) > 19 or int(digits) > _INT64_MAX:  # no int() of a thousand digits
        raise InvalidInput(f"Failed to convert version: {text} to numeric.")
    return int(digits)


def check_model(state: GatewayState, model: str) -> None:
    """The model name, first of admission's questions (one deployment serves one model)."""
    if model != state.settings.model_name:
        raise ModelNotFound(f"Servable not found for request: Latest({model})")


def admit(
    state: GatewayState,
    model: str,
    version: str | None,
    *,
    served: Served | None = None,
    instances: int | None = None,
    num_glimpses: int | None = None,
    top_k: int | None = None,
    boxes_given: bool = False,
) -> int | None:
    """Everything that can refuse a request before any work starts, in one order for every
    route: name, version form, load error, instance limit, shutdown, readiness, version served,
    and the parameters against the model's own limits. Returns the version asked for (None:
    the default, which TF Serving's status answers with every version it serves).

    `instances` is given for work (predict, explain); without it the request only reads the
    model's status, which stays answerable while shutting down.
    """
    settings = state.settings
    served = served or state.predictor
    check_model(state, model)
    wanted = parse_version(version)
    if state.load_error:
        raise NotReady(f"model failed to load: {state.load_error}")
    if instances is not None:
        check_instances(settings, instances)
        if state.shutting_down:
            raise NotReady("the service is shutting down")
    if not served.is_ready():
        raise NotReady("model is loading; retry shortly")
    served.served_version(wanted)
    check_limits(served.model_info(), num_glimpses, top_k, boxes_given)
    return wanted


def check_instances(settings: GatewaySettings, instances: int) -> None:
    """One request's instances against the gateway's limit (GLIMPSE_MAX_INSTANCES)."""
    if instances > settings.max_instances:
        raise InvalidInput(f"{instances} instances is over the limit of {settings.max_instances}")


def check_limits(
    info: ModelInfo | None, num_glimpses: int | None, top_k: int | None, boxes_given: bool = False
) -> None:
    """The request's parameters against the model's own limits (its model_info asset), named
    as the schema would name them."""
    if info is None:
        return
    if num_glimpses is not None and num_glimpses > info.max_glimpses:
        if boxes_given:
            raise InvalidInput(
                f"parameters.glimpse_boxes: List should have at most {info.max_glimpses} items,"
                f" not {num_glimpses} (the model's max_glimpses)"
            )
        raise InvalidInput(
            f"parameters.num_glimpses: Input should be less than or equal to {info.max_glimpses}"
            " (the model's max_glimpses)"
        )
    if top_k is not None and top_k > info.max_top_k:
        raise InvalidInput(
            f"parameters.top_k: Input should be less than or equal to {info.max_top_k}"
            " (the model's max_top_k)"
        )


def check_parameters(info: ModelInfo | None, params: PredictParameters) -> None:
    """:predict's parameters against the model's limits (online, job creation, batch)."""
    boxes = params.glimpse_boxes is not None
    check_limits(info, params.num_glimpses, params.top_k, boxes)


def admit_prediction(
    state: GatewayState, model: str, version: str | None, images: int, params: PredictParameters
) -> int | None:
    """Admission for :predict (given boxes set num_glimpses, and are named when too many)."""
    return admit(
        state,
        model,
        version,
        instances=images,
        num_glimpses=params.num_glimpses,
        top_k=params.top_k,
        boxes_given=params.glimpse_boxes is not None,
    )


def admit_explanation(
    state: GatewayState, model: str, version: str | None, images: int, params: ExplainParameters
) -> int | None:
    """Admission for :explain: the same questions asked of the explainer's local copy, then
    what only explanations refuse (their own instance limit, cost, visualisation)."""
    wanted = admit(
        state,
        model,
        version,
        served=state.explainer,
        instances=images,
        num_glimpses=params.num_glimpses,
    )
    state.explainer.check(images, params)
    return wanted


async def off_loop(inline: bool, fn, *args):
    """CPU work (building, encoding answers) goes to a worker thread unless it is one small
    item, whose sub-millisecond cost is less than the thread hop (a p50 cost at concurrency
    1). Every route's encoding follows this one rule."""
    if inline:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


def remaining(deadline: float, what: str, timeout: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise BackendTimeout(f"no answer within {timeout:g} s ({what})")
    return left


async def decode(
    state: GatewayState, instances: Sequence[Instance]
) -> tuple[list[ImageInput], float]:
    """The request's images, checked and decoded, and its deadline (monotonic): one deadline
    covers decoding, the queue and the model."""
    deadline = time.monotonic() + state.settings.request_timeout_s
    started = time.perf_counter()
    images = await state.decoder.decode(instances, deadline)
    state.metrics.stage.labels("decode").observe(time.perf_counter() - started)
    return images, deadline


async def predict(
    state: GatewayState, instances: Sequence[Instance], params: PredictParameters
) -> list[Prediction]:
    """decode -> predict -> build for one online request, all or none: one bad image fails
    the request, naming it (the backend isolates it, so batch-mates from other requests are
    unharmed)."""
    images, deadline = await decode(state, instances)
    return await predict_images(state, images, params, deadline)


async def predict_images(
    state: GatewayState, images: list[ImageInput], params: PredictParameters, deadline: float
) -> list[Prediction]:
    """predict -> build for images already decoded, within the request's deadline."""
    timeout = state.settings.request_timeout_s
    options = [Options.of(params)] * len(images)
    left = remaining(deadline, "queue", timeout)  # before a coroutine exists to be dropped
    try:
        outputs = await asyncio.wait_for(state.predictor.predict(images, options), left)
    except TimeoutError:
        raise BackendTimeout(f"no answer from the model within {timeout:g} s") from None
    except InvalidInput as e:  # the model could not read one image: name it
        index = getattr(e, "item_index", None)
        if index is None:
            raise
        raise InvalidInput(f"instances[{index}].input_image_bytes: {e.message}") from None
    answered = time.perf_counter()
    info = state.predictor.model_info()
    predictions = await off_loop(len(images) == 1, _build, images, outputs, params, info)
    state.metrics.stage.labels("encode").observe(time.perf_counter() - answered)
    state.metrics.instances.inc(len(images))
    return predictions


async def predict_each(
    predictor: Predictor,
    images: dict[int, ImageInput],
    params: PredictParameters,
    max_in_flight: int,
) -> dict[int, ModelOutput | InvalidInput]:
    """Images -> the model's output or its refusal for each: the batch path, where one line
    the model rejects becomes that line's error record and the others go on.

    One submission per image lets the micro-batcher merge them into model batches; at most
    `max_in_flight` (one model batch) per caller, so a large job never fills the queue that
    online requests also wait in. Other errors (overload, timeouts) are raised for the caller
    to retry.
    """
    options = Options.of(params)
    out: dict[int, ModelOutput | InvalidInput] = {}
    items = list(images.items())
    for start in range(0, len(items), max_in_flight):
        part = items[start : start + max_in_flight]
        results = await asyncio.gather(
            *(predictor.predict([image], [options]) for _, image in part),
            return_exceptions=True,
        )
        for (index, _), result in zip(part, results, strict=True):
            if isinstance(result, InvalidInput):
                out[index] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                out[index] = result[0]
    return out


def _build(
    images: Sequence[ImageInput],
    outputs: Sequence[ModelOutput],
    params: PredictParameters,
    info: ModelInfo | None,
) -> list[Prediction]:
    """Model outputs -> the prediction objects clients see."""
    return [build_prediction(i, o, params, info) for i, o in zip(images, outputs, strict=True)]


async def explain(
    state: GatewayState, instances: Sequence[Instance], params: ExplainParameters
) -> list[Explanation]:
    """decode -> explain for one :explain request, on the explainer's own thread and copy.
    Decoding counts against the request's deadline (the explanation has its own, started
    when its model is loaded)."""
    images, _ = await decode(state, instances)
    return await explain_images(state, images, params)


async def explain_images(
    state: GatewayState, images: list[ImageInput], params: ExplainParameters
) -> list[Explanation]:
    """explain for images already decoded (Vertex's :explain decodes once for both answers)."""
    return await state.explainer.explain(images, params)
