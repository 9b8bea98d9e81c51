"""TF Serving's own request forms: columnar `inputs`, any `signature_name`, and the `:classify`
/ `:regress` APIs, answered as TF Serving answers them for this SavedModel.

The labelled path (service/serving.py) owns the default signature's rows; here a named
signature runs on exactly the request's tensors (Predictor.run_signature, outside the
micro-batcher) and its outputs come back tensor for tensor (service/tensor_json.py). What a
small JSON body could make expensive is bounded before the model runs: images pass the
gateway's decoder (its budgets and deadline), each input's batch is within the instance
limit, glimpse axes within the model's own `max_glimpses`, the answer's size is estimated from
the signature's output shapes, and few such calls wait at once (429 beyond).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from service import tensor_json
from service.errors import BackendTimeout, InvalidInput, Overloaded
from service.serving import admit, check_instances, remaining

if TYPE_CHECKING:
    from service.state import GatewayState

IMAGE_INPUT = "input_image_bytes"
# Inputs whose axis -2 (boxes: [batch, T, 4]) or -1 (sets: [S, T]) counts glimpses, each a
# crop and a backbone pass: bounded by the model's own max_glimpses.
_GLIMPSE_AXIS = {"glimpse_boxes": -2, "glimpse_sets": -1}


def _check_cost(
    state: GatewayState, signature: tensor_json.SignatureSpec, tensors: dict[str, np.ndarray]
) -> int:
    """The request's batch size, once what it would cost is known to be within bounds."""
    settings = state.settings
    batch = max((len(t) for t in tensors.values() if t.ndim), default=1)
    check_instances(settings, batch)
    info = state.predictor.model_info()
    for name, axis in _GLIMPSE_AXIS.items():
        array = tensors.get(name)
        if info is None or array is None or array.ndim < -axis:
            continue
        if array.shape[axis] > info.max_glimpses:
            raise InvalidInput(
                f"{name}: {array.shape[axis]} glimpses is over the model's max_glimpses"
                f" ({info.max_glimpses})"
            )
    values = sum(
        batch * math.prod(max(1, d) for d in (spec.shape or ())[1:])
        for spec in signature.outputs.values()
    )
    if values > settings.max_answer_values:
        raise InvalidInput(
            f"signature {signature.name} would answer {values} values for {batch} instances,"
            f" over the limit of {settings.max_answer_values}; send fewer instances"
        )
    return batch


async def _checked_images(
    state: GatewayState, images: np.ndarray, deadline: float, form: tensor_json.Form
) -> np.ndarray:
    """Encoded images through the decoder (budget, formats, conversion): the bytes the model
    gets, in the tensor's shape, each named as the request placed it."""

    def where(i: int) -> str:
        if form == "columnar":
            return f"inputs.{IMAGE_INPUT}[{i}]"
        return f"instances[{i}].{IMAGE_INPUT}"

    decoded = await state.decoder.decode_bytes(list(images.reshape(-1)), deadline, where)
    out = np.empty(len(decoded), object)
    out[:] = [image.data for image in decoded]
    return out.reshape(images.shape)


async def predict_tensors(
    state: GatewayState, model: str, version: str | None, body: dict[str, Any]
) -> bytes:
    """The named signature on the request's tensors: TF Serving's `predictions` rows or
    `outputs` columns, as JSON bytes."""
    settings, metrics = state.settings, state.metrics
    timeout = settings.request_timeout_s
    deadline = time.monotonic() + timeout
    if "parameters" in body:
        raise InvalidInput(
            "parameters apply to the default signature's labelled rows; another signature"
            " takes its own inputs (see /metadata)"
        )
    wanted = admit(state, model, version, instances=1)
    # The number, when the gateway knows it: a numbered version's metadata is kept.
    metadata = await state.predictor.metadata(state.predictor.served_version(wanted))
    signature = tensor_json.signature_spec(metadata, body.get("signature_name"))
    # Pure Python over every value (~26 ms for one 224x224x3 float input): off the event loop.
    tensors, form = await asyncio.to_thread(tensor_json.parse_request, body, signature)
    batch = _check_cost(state, signature, tensors)
    if state.tensor_calls >= settings.tensor_max_pending:
        raise Overloaded(f"{state.tensor_calls} tensor requests are queued or running; retry")
    state.tensor_calls += 1
    try:
        started = time.perf_counter()
        for name, spec in signature.inputs.items():
            if name == IMAGE_INPUT and spec.dtype == "DT_STRING":
                tensors[name] = await _checked_images(state, tensors[name], deadline, form)
        metrics.stage.labels("decode").observe(time.perf_counter() - started)
        left = remaining(deadline, "queue", timeout)
        try:
            outputs = await asyncio.wait_for(
                state.predictor.run_signature(wanted, signature.name, tensors), left
            )
        except TimeoutError:
            raise BackendTimeout(f"no answer from the model within {timeout:g} s") from None
    finally:
        state.tensor_calls -= 1

    def encode() -> bytes:
        if form == "row":
            return b'{"predictions":' + tensor_json.rows_json(outputs).encode() + b"}"
        return b'{"outputs":' + tensor_json.columns_json(outputs).encode() + b"}"

    answered = time.perf_counter()
    content = await asyncio.to_thread(encode)
    metrics.stage.labels("encode").observe(time.perf_counter() - answered)
    metrics.instances.inc(batch)
    return content


_OTHER_APIS = {
    "classify": ("classification", "tensorflow/serving/classify"),
    "regress": ("regression", "tensorflow/serving/regress"),
}


async def refuse_other_api(
    state: GatewayState, model: str, version: str | None, verb: str, signature: Any
) -> None:
    """`:classify` and `:regress` need a signature of that method, which the exported model
    does not have: TF Serving's own 400 for that case, after the same model and version checks
    as every request."""
    wanted = admit(state, model, version)
    metadata = await state.predictor.metadata(state.predictor.served_version(wanted))
    defs = tensor_json.signature_defs(metadata)
    name = signature if isinstance(signature, str) and signature else "serving_default"
    if name not in defs:
        raise InvalidInput(f"No signature was found with the name: {name}")
    kind, method = _OTHER_APIS[verb]
    found = defs[name].get("method_name", "")
    if found != method:
        raise InvalidInput(f"Expected {kind} signature method_name to be {method}. Was: {found}")
    # A model exported with such a signature: the gateway does not implement these APIs.
    raise InvalidInput(f":{verb} is not served by the gateway; use :predict")
