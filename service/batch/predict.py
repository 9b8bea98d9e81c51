"""The per-batch function every batch runner shares: lines in, outcomes out.

It uses the online path's own pieces (instance validation, the Predictor, the response
builder), so a batch prediction is byte-for-byte the object an online request returns.
Transient model trouble (queue full, TF Serving restarting, a timeout) is retried with backoff
until a deadline; only then does it fail the batch, and with it the job. A line the model
itself rejects becomes that line's error record.
"""

from __future__ import annotations

import asyncio
import random
import time

from service.batch.lines import Failure, Outcome, RawLine, Success, decode_line
from service.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidInput,
    NotReady,
    Overloaded,
)
from service.instances import ImageInput
from service.predictor import ModelOutput, Options, Predictor
from service.responses import build_prediction
from service.schemas import PredictParameters

TRANSIENT = (Overloaded, NotReady, BackendUnavailable, BackendTimeout, BackendError)


class BatchFailed(Exception):
    """The job cannot go on (storage or model unavailable past the retry deadline)."""


def _decode(lines: list[RawLine], max_pixels: int) -> list[ImageInput | Failure]:
    return [decode_line(ref, raw, max_pixels) for ref, raw in lines]


def _encode(
    lines: list[RawLine],
    decoded: list[ImageInput | Failure],
    outputs: dict[int, ModelOutput | InvalidInput],
    params: PredictParameters,
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
            prediction = build_prediction(item, out, params)
            outcomes.append(Success(ref, prediction.model_dump_json(exclude_none=True)))
    return outcomes


async def _predict_once(
    predictor: Predictor, images: dict[int, ImageInput], options: Options, chunk: int
) -> dict[int, ModelOutput | InvalidInput]:
    # One submission per image: the micro-batcher merges them into model batches, and an
    # image the model rejects fails alone instead of taking its batch-mates with it. At most
    # `chunk` (one model batch) in flight per caller, so a large job batch never fills the
    # shared queue that online requests also wait in.
    out: dict[int, ModelOutput | InvalidInput] = {}
    items = list(images.items())
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
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


async def predict_lines(
    predictor: Predictor,
    lines: list[RawLine],
    params: PredictParameters,
    max_pixels: int,
    retry_deadline_s: float,
    max_in_flight: int,
) -> list[Outcome]:
    """One outcome per line, in order."""
    decoded = await asyncio.to_thread(_decode, lines, max_pixels)
    images = {i: d for i, d in enumerate(decoded) if isinstance(d, ImageInput)}
    options = Options.of(params)
    deadline = time.monotonic() + retry_deadline_s
    delay = 0.2
    while True:
        try:
            outputs = (
                await _predict_once(predictor, images, options, max_in_flight) if images else {}
            )
            break
        except TRANSIENT as e:
            if time.monotonic() + delay > deadline:
                raise BatchFailed(
                    f"model unavailable for {retry_deadline_s:g} s: {e.message}"
                ) from e
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 10.0)
    return await asyncio.to_thread(_encode, lines, decoded, outputs, params)
