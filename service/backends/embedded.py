"""The SavedModel in-process: the default backend, so one machine needs no TF Serving.

Each version runs on one dedicated thread (TensorFlow parallelises each op itself, and the
model's scheduler gives one turn at a time); the event loop only awaits, so health checks and
metrics stay responsive while a batch runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from pathlib import Path
from typing import Any

import numpy as np

from model_export.contract import ModelInfo
from service import priority, savedmodel, timing
from service.errors import BackendError, InvalidInput, model_error_reason
from service.instances import ImageInput
from service.model_config import ModelConfig
from service.predictor import ModelOutput, Options, assemble, model_calls

log = logging.getLogger(__name__)


class EmbeddedPredictor:
    """One version folder, loaded in this process."""

    def __init__(self, model_name: str, version: int, path: Path, nice: int = 0):
        self.model_name = model_name
        self.version = version
        self.path = path
        self._executor = priority.worker_threads(1, f"tf-{model_name}-{version}", nice)
        self._nice = nice
        self._info: ModelInfo | None = None
        self._metadata: dict[str, Any] = {}
        self._fn: Any = None  # the loaded SavedModel's signatures, by name
        self.saved_model: Any = None  # the loaded object; the explainer of the version shares it

    def _load(self) -> None:
        self._info = ModelInfo.read(self.path)
        self.saved_model = savedmodel.load(self.path)
        self._fn = self.saved_model.signatures
        # Built once: TF Serving's metadata body is read on every tensor-form request.
        signatures = savedmodel.signature_def_map(self.path)
        self._metadata = savedmodel.metadata_body(self.model_name, self.version, signatures)
        # TensorFlow started its thread pools while loading: below the event loop too.
        priority.lower_model_threads(self._nice)

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def model_info(self) -> ModelInfo | None:
        return self._info

    def loaded(self) -> Any | None:
        return self.saved_model

    async def metadata(self) -> dict[str, Any]:
        return self._metadata

    def _call(self, signature: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """One signature call, on the version's thread."""
        import tensorflow as tf

        out = self._fn[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}

    def _run_calls(self, items: list[tuple[ImageInput, Options]]) -> list[ModelOutput]:
        options = [o for _, o in items]
        calls = model_calls([image.data for image, _ in items], options)
        return assemble(calls, [self._call(c.signature, c.inputs) for c in calls], options)

    async def run_batch(
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
                results += await self.run_batch([item])
            return results
        except tf.errors.OpError as e:
            raise BackendError(f"model error: {type(e).__name__}") from e

    def _call_signature(self, signature: str, inputs: dict[str, np.ndarray]) -> dict:
        """`_call` for a client's tensors: what the model refuses is the client's 400."""
        import tensorflow as tf

        try:
            with timing.span("model"):
                return self._call(signature, inputs)
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as e:
            text = e.message if isinstance(e, tf.errors.OpError) else str(e)
            raise InvalidInput(model_error_reason(text)) from None
        except tf.errors.OpError as e:
            raise BackendError(f"model error: {type(e).__name__}") from e

    async def run_signature(
        self, signature: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        run = contextvars.copy_context().run  # the request's timing record (service/timing.py)
        return await loop.run_in_executor(
            self._executor, run, self._call_signature, signature, inputs
        )

    async def close(self) -> None:
        """The version's thread ends once its last call does (waited for off the event
        loop); the loaded object stays in service/savedmodel.py's table for a reload."""
        await asyncio.to_thread(self._executor.shutdown, True)
        self._fn = self.saved_model = None


class EmbeddedBackend:
    """Versions are the numbered folders under each model's base path."""

    in_process = True  # explanations share the predictor's loaded copy and its turns

    def __init__(self, worker_nice: int = 0):
        self._nice = worker_nice  # service/priority.py

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def discover(self, model: ModelConfig) -> list[int]:
        return await asyncio.to_thread(savedmodel.versions, model.base_path)

    def open(self, model: ModelConfig, version: int) -> EmbeddedPredictor:
        return EmbeddedPredictor(model.name, version, model.base_path / str(version), self._nice)

    async def label(self, model: ModelConfig, label: str) -> int:
        """A label the model's config does not name: in-process there is no one else to ask."""
        raise InvalidInput(f"Unrecognized servable version label: {label}")
