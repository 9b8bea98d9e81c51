"""The SavedModel in-process: the default backend, so one machine needs no TF Serving.

TensorFlow runs on one dedicated thread (it parallelises each op itself); the event loop only
awaits, so health checks and metrics stay responsive while a batch runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from service.backends.batching import BatchStats, batcher_for
from service.errors import (
    BackendError,
    InvalidInput,
    ModelNotFound,
    NotReady,
    model_error_reason,
)
from service.instances import ImageInput
from service.predictor import (
    WARMUP_OPTIONS,
    ModelOutput,
    Options,
    assemble,
    model_calls,
)
from service.savedmodel import (
    LoadedModels,
    ModelInfo,
    metadata_body,
    resolve_version,
    signature_def_map,
    status_body,
    warmup_image,
)
from service.settings import GatewaySettings

log = logging.getLogger(__name__)


class EmbeddedPredictor:
    def __init__(
        self,
        settings: GatewaySettings,
        on_batch: Callable[[BatchStats], None] | None = None,
        models: LoadedModels | None = None,
    ):
        self.model_name = settings.model_name
        self._settings = settings
        self._models = models or LoadedModels()
        self._base = settings.model_base
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tf-model")
        self._batcher = batcher_for(settings, self._run_batch, on_batch)
        self._version: int | None = None
        self._info: ModelInfo | None = None
        self._metadata: dict[str, Any] = {}
        self._fn: Any = None  # the loaded SavedModel's signatures, by name
        self._ready = False

    def _load(self, version: int) -> None:
        path = self._base / str(version)
        self._info = ModelInfo.read(path)
        self._fn = self._models.load(path).signatures
        # Built once: TF Serving's metadata body is read on every tensor-form request.
        self._metadata = metadata_body(self.model_name, version, signature_def_map(path))

    async def start(self) -> None:
        version = resolve_version(self._base, self.model_name, self._settings.model_version)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load, version)
        self._version = version
        self._batcher.start()
        for options in WARMUP_OPTIONS:  # real inferences, one at a time: any queue_limit fits
            await self._batcher.submit([(warmup_image(), options)])
        self._ready = True
        log.info("model %s version %s loaded and warmed up", self.model_name, version)

    def is_ready(self) -> bool:
        return self._ready

    async def check(self) -> None:
        if not self._ready:
            raise NotReady("model is not loaded yet")

    def _call(self, signature: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """One signature call, on the model's thread."""
        import tensorflow as tf

        out = self._fn[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}

    def _run_calls(self, items: list[tuple[ImageInput, Options]]) -> list[ModelOutput]:
        options = [o for _, o in items]
        calls = model_calls([image.data for image, _ in items], options)
        return assemble(calls, [self._call(c.signature, c.inputs) for c in calls], options)

    async def _run_batch(
        self, items: list[tuple[ImageInput, Options]]
    ) -> list[ModelOutput | BaseException]:
        import tensorflow as tf

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run_calls, items)
        except tf.errors.InvalidArgumentError as e:
            if len(items) == 1:
                reason = model_error_reason(e.message)
                return [InvalidInput(f"the model could not decode the image: {reason}")]
            # One instance the validator let through broke the batch: run them one by one so
            # that only its own request fails.
            results: list[ModelOutput | BaseException] = []
            for item in items:
                results += await self._run_batch([item])
            return results
        except tf.errors.OpError as e:
            raise BackendError(f"model error: {type(e).__name__}") from e

    async def predict(self, images: list[ImageInput], options: list[Options]) -> list[ModelOutput]:
        return await self._batcher.submit(list(zip(images, options, strict=True)))

    def _call_signature(self, signature: str, inputs: dict[str, np.ndarray]) -> dict:
        """`_call` for a client's tensors: what the model refuses is the client's 400."""
        import tensorflow as tf

        try:
            return self._call(signature, inputs)
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as e:
            text = e.message if isinstance(e, tf.errors.OpError) else str(e)
            raise InvalidInput(model_error_reason(text)) from None
        except tf.errors.OpError as e:
            raise BackendError(f"model error: {type(e).__name__}") from e

    async def run_signature(
        self, version: int | None, signature: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        self.served_version(version)
        # On the model's own thread: TensorFlow runs one call at a time there, batches too.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call_signature, signature, inputs)

    def served_version(self, version: int | None) -> int:
        if self._version is None:
            raise NotReady("model is not loaded yet")
        if version is not None and version != self._version:
            raise ModelNotFound(f"Could not find version {version} of model {self.model_name}")
        return self._version

    def model_info(self) -> ModelInfo:
        if self._info is None:
            raise NotReady("model is not loaded yet")
        return self._info

    async def status(self, version: int | None) -> dict[str, Any]:
        return status_body(self.model_name, [self.served_version(version)])

    async def metadata(self, version: int | str | None) -> dict[str, Any]:
        if isinstance(version, str):  # the gateway's own labels are numbers by now
            raise InvalidInput(f"Unrecognized servable version label: {version}")
        self.served_version(version)
        return self._metadata

    async def close(self) -> None:
        self._ready = False
        await self._batcher.close(self._settings.shutdown_grace_s)
        self._executor.shutdown(wait=True)
