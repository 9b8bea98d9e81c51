"""The per-batch function every batch runner shares: lines in, outcomes out.

It goes through the online path's own parts (a model runner's micro-batcher and turns, the
response builder), so a batch prediction is the object an online request returns.
Transient model trouble (queue full, TF Serving restarting, a timeout) is retried with backoff
until a deadline; only then does it fail the batch, and with it the job. A cancelled job
stops retrying at once (a shutting-down gateway refuses work, and waiting out the deadline
would outlast its grace). A line the model itself rejects becomes that line's error record.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from model_export.contract import ModelInfo
from service.admission import check_parameters
from service.batch.finish import JobCancelled
from service.batch.lines import Failure, Outcome, RawLine, Success, decode_line
from service.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidInput,
    NotReady,
    Overloaded,
)
from service.instances import DecodeLimits, ImageInput
from service.model_runner import ModelRunner
from service.predictor import ModelOutput, Options
from service.responses import build_prediction
from service.schemas import PredictParameters

TRANSIENT = (Overloaded, NotReady, BackendUnavailable, BackendTimeout, BackendError)


class BatchModel(Protocol):
    """What a batch runs on: a model runner (service/model_runner.py), or a served model of
    the gateway's data plane (its jobs API), whose version may change between batches."""

    def held(self) -> AbstractAsyncContextManager[ModelRunner]:
        """The runner of the version that runs this batch, kept loaded until it is done."""


class BatchFailed(Exception):
    """The job cannot go on (storage or model unavailable past the retry deadline)."""


def _decode(lines: list[RawLine], limits: DecodeLimits) -> list[ImageInput | Failure]:
    return [decode_line(ref, raw, limits) for ref, raw in lines]


def _encode(
    lines: list[RawLine],
    decoded: list[ImageInput | Failure],
    outputs: dict[int, ModelOutput | InvalidInput],
    params: PredictParameters,
    info: ModelInfo | None,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for i, ((ref, _), item) in enumerate(zip(lines, decoded, strict=True)):
        if isinstance(item, Failure):
            outcomes.append(item)
            continue
        out = outputs[i]
        if isinstance(out, InvalidInput):
            outcomes.append(Failure(ref, item.key, "model_rejected", out.message))
        else:
            prediction = build_prediction(item, out, params, info)
            outcomes.append(Success(ref, prediction.model_dump_json(exclude_none=True)))
    return outcomes


async def predict_each(
    model: ModelRunner,
    images: dict[int, ImageInput],
    params: PredictParameters,
    max_in_flight: int,
) -> dict[int, ModelOutput | InvalidInput]:
    """Images -> the model's output or its refusal for each: one line the model rejects
    becomes that line's error record and the others go on.

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
            *(model.predict([image], [options]) for _, image in part),
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


async def predict_lines(
    model: BatchModel,
    lines: list[RawLine],
    params: PredictParameters,
    limits: DecodeLimits,
    retry_deadline_s: float,
    max_in_flight: int,
    cancel: asyncio.Event | None = None,
) -> list[Outcome]:
    """One outcome per line, in order. The parameters are checked against the limits of the
    version that runs the batch, which is admitted once for all its lines."""
    decoded = await asyncio.to_thread(_decode, lines, limits)
    images = {i: d for i, d in enumerate(decoded) if isinstance(d, ImageInput)}
    deadline = time.monotonic() + retry_deadline_s
    delay = 0.2
    outputs, info = {}, None  # a batch of lines none of which is an image needs no model
    while images:
        try:
            async with model.held() as runner:
                info = runner.model_info()
                try:
                    params = check_parameters(info, params)
                except InvalidInput as e:
                    raise BatchFailed(e.message) from None
                outputs = await predict_each(runner, images, params, max_in_flight)
            break
        except TRANSIENT as e:
            if cancel is not None and cancel.is_set():
                raise JobCancelled from e
            if time.monotonic() + delay > deadline:
                raise BatchFailed(
                    f"model unavailable for {retry_deadline_s:g} s: {e.message}"
                ) from e
            await _sleep(delay * random.uniform(0.5, 1.0), cancel)
            delay = min(delay * 2, 10.0)
    return await asyncio.to_thread(_encode, lines, decoded, outputs, params, info)


async def _sleep(seconds: float, cancel: asyncio.Event | None) -> None:
    """A backoff that a cancel cuts short."""
    if cancel is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(cancel.wait(), seconds)
    if cancel.is_set():
        raise JobCancelled
