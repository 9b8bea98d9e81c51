"""A loaded version behind its model's turns: the one way any caller reaches a model.

The labelled path's instances queue in the micro-batcher (service/batching.py). A tensor
request (TF Serving's tensor forms, v2) whose signature reads nothing but the encoded images
rides a micro-batcher of its own per signature, so concurrent requests share model calls as
TF Serving's and Triton's dynamic batching make them; any other runs in pieces of bounded rows.
Each batch or piece takes a turn from the model's scheduler (service/scheduler.py), whichever
backend runs it. The gateway's data plane and the batch runners (`glimpse batch`, Beam) use
the same runner, so a batch job is scheduled like online work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import numpy as np

from model_export.contract import IMAGE_INPUT, ModelInfo
from service.batching import BatchStats, MicroBatcher
from service.errors import InvalidInput
from service.instances import ImageInput
from service.predictor import WARMUP_OPTIONS, ModelOutput, Options, Predictor
from service.savedmodel import warmup_image
from service.scheduler import FairScheduler, Kind
from service.settings import GatewaySettings
from service.signatures import SignatureSpec, batch_rows, splittable

Row = dict[str, np.ndarray]  # one row of a tensor request: each input's or output's slice


def _stack(values: list) -> np.ndarray:
    """Rows back into one tensor. A row of a string tensor is a bare `bytes`: kept whole in
    an object array (np.stack would make a fixed-width one, which drops trailing NUL bytes)."""
    if isinstance(values[0], bytes | str):
        out = np.empty(len(values), object)
        out[:] = values
        return out
    return np.stack(values)


class ModelRunner:
    def __init__(
        self,
        predictor: Predictor,
        scheduler: FairScheduler,
        settings: GatewaySettings,
        on_batch: Callable[[BatchStats], None] | None = None,
    ):
        self.predictor = predictor
        self._scheduler = scheduler
        self._settings = settings
        self._batcher: MicroBatcher[tuple[ImageInput, Options], ModelOutput] = MicroBatcher(
            predictor.run_batch,
            scheduler,
            max_batch=settings.max_batch_size,
            max_wait_s=settings.max_batch_wait_ms / 1000.0,
            queue_limit=settings.queue_limit,
            on_batch=on_batch,
        )
        self._tensor_batchers: dict[str, MicroBatcher[Row, Row]] = {}

    async def start(self) -> None:
        """Load, then real inferences through the whole path (each signature the labelled
        path calls), one at a time so that any queue limit fits: ready only afterwards, and
        the first request pays for no tracing."""
        await self.predictor.load()
        self._batcher.start()
        info = self.model_info()
        for options in WARMUP_OPTIONS:
            if info is not None and options.top_k > info.max_top_k:  # fewer classes than 5
                options = replace(options, top_k=info.max_top_k)
            await self._batcher.submit([(warmup_image(), options)])

    def model_info(self) -> ModelInfo | None:
        return self.predictor.model_info()

    @asynccontextmanager
    async def held(self) -> AsyncIterator[ModelRunner]:
        """The runner itself (service/batch/predict.py's BatchModel): alone in its process,
        its version never changes."""
        yield self

    async def metadata(self) -> dict[str, Any]:
        return await self.predictor.metadata()

    async def predict(self, images: list[ImageInput], options: list[Options]) -> list[ModelOutput]:
        """The labelled path: every image of one request through the micro-batcher."""
        return await self._batcher.submit(list(zip(images, options, strict=True)))

    async def run_tensors(
        self, spec: SignatureSpec, tensors: dict[str, np.ndarray], flow: Hashable
    ) -> dict[str, np.ndarray]:
        """One signature on a request's tensors: through the signature's batcher when it
        reads only images (`batched`), else in pieces of at most GLIMPSE_TENSOR_PIECE_ROWS
        rows when the signature allows it (every input and output batched), each piece one
        turn of `flow`; the pieces' outputs joined in order."""
        rows = batch_rows(tensors)
        if self.batched(spec, tensors):
            results = await self._tensor_batcher(spec.name).submit(
                [{name: t[i] for name, t in tensors.items()} for i in range(rows)]
            )
            return {name: _stack([r[name] for r in results]) for name in results[0]}
        step = self._settings.tensor_piece_rows
        if rows <= step or not splittable(spec, tensors):
            async with self._scheduler.turn(Kind.TENSORS, flow, rows):
                return await self.predictor.run_signature(spec.name, tensors)
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, rows, step):
            piece = {name: t[start : start + step] for name, t in tensors.items()}
            async with self._scheduler.turn(Kind.TENSORS, flow, batch_rows(piece)):
                parts.append(await self.predictor.run_signature(spec.name, piece))
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    @staticmethod
    def batched(spec: SignatureSpec, tensors: dict[str, np.ndarray]) -> bool:
        """Rows of different requests may share a call: the signature's one input is the
        encoded images (each row's outputs depend on its own image alone, and their shapes
        on nothing a request sets), and every input and output is batched."""
        image = spec.inputs.get(IMAGE_INPUT)
        return (
            len(spec.inputs) == 1
            and image is not None
            and image.dtype == "DT_STRING"
            and set(tensors) == {IMAGE_INPUT}
            and tensors[IMAGE_INPUT].ndim == 1
            and len(tensors[IMAGE_INPUT]) > 0
            and splittable(spec, tensors)
        )

    def _tensor_batcher(self, signature: str) -> MicroBatcher[Row, Row]:
        batcher = self._tensor_batchers.get(signature)
        if batcher is None:

            async def run(rows: list[Row]) -> list[Row | BaseException]:
                return await self._run_rows(signature, rows)

            batcher = MicroBatcher(
                run,
                self._scheduler,
                max_batch=self._settings.max_batch_size,
                max_wait_s=self._settings.max_batch_wait_ms / 1000.0,
                queue_limit=self._settings.queue_limit,
                kind=Kind.TENSORS,
            )
            batcher.start()
            self._tensor_batchers[signature] = batcher
        return batcher

    async def _run_rows(self, signature: str, rows: list[Row]) -> list[Row | BaseException]:
        """One call on rows of several requests; an image the model refuses fails its own
        row (each then runs alone), not its batch-mates' requests."""
        inputs = {name: _stack([r[name] for r in rows]) for name in rows[0]}
        try:
            out = await self.predictor.run_signature(signature, inputs)
        except InvalidInput:
            if len(rows) == 1:
                raise
            results: list[Row | BaseException] = []
            for row in rows:
                try:
                    results += await self._run_rows(signature, [row])
                except InvalidInput as e:
                    results.append(e)
            return results
        return [{name: value[i] for name, value in out.items()} for i in range(len(rows))]

    async def close(self) -> None:
        """Finish what was accepted (up to the shutdown grace), then release the model."""
        grace = self._settings.shutdown_grace_s
        for batcher in (self._batcher, *self._tensor_batchers.values()):
            await batcher.close(grace)
        await self.predictor.close()
