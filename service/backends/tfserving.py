"""A real TF Serving behind the gateway, over gRPC (`tensorflow-serving-api`).

The gateway still validates, batches (one Predict call per micro-batch), labels and answers;
TF Serving only runs the SavedModel. Deadlines bound every call, UNAVAILABLE is retried with
backoff (a restarting pod), and gRPC status codes become the gateway's domain errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from service.backends.batching import BatchStats, batcher_for
from service.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidInput,
    ModelNotFound,
    NotReady,
    Overloaded,
    model_error_reason,
)
from service.instances import ImageInput
from service.predictor import WARMUP_OPTIONS, ModelCall, ModelOutput, Options, assemble, model_calls
from service.savedmodel import ModelInfo, message_to_dict, warmup_image
from service.settings import GatewaySettings

log = logging.getLogger(__name__)

WARMUP_TIMEOUT_S = 120.0

_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.OUT_OF_RANGE: InvalidInput,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidInput,
    grpc.StatusCode.NOT_FOUND: ModelNotFound,
    grpc.StatusCode.DEADLINE_EXCEEDED: BackendTimeout,
    grpc.StatusCode.UNAVAILABLE: BackendUnavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
}


def domain_error(e: grpc.aio.AioRpcError):
    kind = _ERRORS.get(e.code(), BackendError)
    return kind(f"model server: {e.code().name}: {model_error_reason(e.details() or '')}")


class TFServingPredictor:
    def __init__(
        self,
        settings: GatewaySettings,
        on_batch: Callable[[BatchStats], None] | None = None,
    ):
        self.model_name = settings.model_name
        self._settings = settings
        self._info: ModelInfo | None = None
        self._channel: grpc.aio.Channel | None = None
        self._predict_stub = None
        self._model_stub = None
        self._batcher = batcher_for(settings, self._run_batch, on_batch)
        self._ready = False
        self._checked_at = 0.0
        self._version: int | None = None  # what TF Serving reported AVAILABLE at start-up
        self._metadata: dict[int, dict[str, Any]] = {}  # by version number

    async def start(self) -> None:
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self._channel = grpc.aio.insecure_channel(
            self._settings.tfserving_address,
            options=[
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        if self._settings.model_version_label:  # the version TF Serving's label names
            await self._follow_label()
        else:
            configured = self._settings.model_version
            if configured is None:
                body = await self.status(None)
                states = body.get("model_version_status", [])
                available = [int(v["version"]) for v in states if v.get("state") == "AVAILABLE"]
                configured = max(available, default=None)
            self._version = configured
            self._info = self._local_info()
        self._batcher.start()
        for options in WARMUP_OPTIONS:  # one at a time: any queue_limit fits
            await self._batcher.submit([(warmup_image(), options)])
        self._ready = True
        self._checked_at = time.monotonic()
        log.info(
            "TF Serving at %s answers for %s", self._settings.tfserving_address, self.model_name
        )

    def is_ready(self) -> bool:
        return self._ready

    def _spec(self, version: int | str | None, signature: str = "", label: bool = False):
        """ModelSpec for `version`: a str is a version label, which TF Serving resolves (or
        refuses: INVALID_ARGUMENT "Unrecognized servable version label"). With none, the
        configured version, or for Predict (`label`) the configured label."""
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=self.model_name, signature_name=signature)
        if isinstance(version, str):
            spec.version_label = version
            return spec
        chosen = version if version is not None else self._settings.model_version
        if chosen is not None:
            spec.version.value = chosen
        elif label and self._settings.model_version_label:
            spec.version_label = self._settings.model_version_label
        return spec

    async def _call(self, method, request, timeout: float):
        """One RPC with a deadline; UNAVAILABLE is retried with exponential backoff."""
        attempts = self._settings.tfserving_retries + 1
        for attempt in range(attempts):
            try:
                return await method(request, timeout=timeout)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE and attempt + 1 < attempts:
                    await asyncio.sleep(0.1 * 2**attempt)
                    continue
                raise domain_error(e) from None
        raise AssertionError("unreachable")

    async def _predict(self, call: ModelCall) -> dict[str, np.ndarray]:
        outputs = await self.run_signature(None, call.signature, call.inputs)
        missing = {"classes", "glimpse_boxes", "annotated_image_bytes"} - set(outputs)
        if missing:
            raise BackendError(f"model server response lacks outputs {sorted(missing)}")
        return outputs

    async def _run_batch(self, items: list[tuple[ImageInput, Options]]) -> list[ModelOutput]:
        options = [o for _, o in items]
        calls = model_calls([image.data for image, _ in items], options)
        return assemble(calls, [await self._predict(c) for c in calls], options)

    def served_version(self, version: int | None) -> int | None:
        if version is not None and self._version is not None and version != self._version:
            raise ModelNotFound(f"Could not find version {version} of model {self.model_name}")
        return version if version is not None else self._version

    def _local_info(self) -> ModelInfo | None:
        """TF Serving does not serve assets, so the model's limits are read from the gateway's
        local copy of the same export (it has one for explanations). Without it the gateway
        does not check them and TF Serving's model refuses what is over its limits."""
        base = self._settings.model_base
        try:
            if self._version is None:
                raise NotReady("TF Serving reports no version")
            return ModelInfo.read(base / str(self._version))
        except NotReady as e:
            log.warning("%s: the model's limits are checked by TF Serving only", e.message)
            return None

    def model_info(self) -> ModelInfo | None:
        return self._info

    async def predict(self, images: list[ImageInput], options: list[Options]) -> list[ModelOutput]:
        return await self._batcher.submit(list(zip(images, options, strict=True)))

    async def run_signature(
        self, version: int | None, signature: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest(
            model_spec=self._spec(version, signature, label=version is None)
        )
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        # The warm-up may wait for TF Serving's first run of each signature (and a busy
        # machine): it gets its own deadline, so a short request deadline cannot fail start-up.
        timeout = self._settings.request_timeout_s if self._ready else WARMUP_TIMEOUT_S
        response = await self._call(self._predict_stub.Predict, request, timeout)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    async def status(self, version: int | None) -> dict[str, Any]:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._spec(version))
        response = await self._call(self._model_stub.GetModelStatus, request, 5.0)
        return message_to_dict(response)

    async def metadata(self, version: int | str | None) -> dict[str, Any]:
        """A numbered version's signatures never change: asked of TF Serving once each (the
        tensor forms read them on every request). A label or the default is asked each time."""
        if isinstance(version, int) and version in self._metadata:
            return self._metadata[version]
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._spec(version), metadata_field=["signature_def"]
        )
        response = await self._call(self._predict_stub.GetModelMetadata, request, 5.0)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        body = {
            "model_spec": message_to_dict(response.model_spec),
            "metadata": {"signature_def": message_to_dict(signature_map)},
        }
        if isinstance(version, int):
            self._metadata[version] = body
        return body

    async def check(self) -> None:
        """Readiness: the model server reports an AVAILABLE version (cached for 2 s)."""
        if not self._ready:
            raise NotReady("backend not connected yet")
        if time.monotonic() - self._checked_at < 2.0:
            return
        body = await self.status(None)
        states = [v.get("state") for v in body.get("model_version_status", [])]
        if "AVAILABLE" not in states:
            raise BackendUnavailable(f"no AVAILABLE version of {self.model_name}: {states}")
        await self._follow_label()
        self._checked_at = time.monotonic()

    async def _follow_label(self) -> None:
        """With GLIMPSE_MODEL_VERSION_LABEL, predictions go by label, so a rollout that moves
        the label in TF Serving's models.config moves them; the version the gateway reports
        (and the local limits it reads) follow here, at each readiness check."""
        label = self._settings.model_version_label
        if not label:
            return
        try:
            meta = await self.metadata(label)
        except (InvalidInput, ModelNotFound) as e:
            raise BackendUnavailable(f"label {label} names no version: {e.message}") from None
        version = int(meta["model_spec"]["version"])
        if version != self._version:
            log.info("label %s moved from version %s to %s", label, self._version, version)
            self._version = version
            self._info = self._local_info()

    async def close(self) -> None:
        self._ready = False
        await self._batcher.close(self._settings.shutdown_grace_s)
        if self._channel is not None:
            await self._channel.close()
