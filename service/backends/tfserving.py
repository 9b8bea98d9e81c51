"""A real TF Serving behind the gateway, over gRPC (`tensorflow-serving-api`).

The gateway still validates, batches (one Predict call per micro-batch), schedules, labels and
answers; TF Serving only runs the SavedModels. One channel serves every model and version.
Deadlines bound every call, UNAVAILABLE is retried with backoff (a restarting pod), and gRPC
status codes become the gateway's domain errors.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import numpy as np

from model_export.contract import ContractError, ModelInfo
from service import timing
from service.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    model_error_reason,
)
from service.instances import ImageInput
from service.model_config import ModelConfig
from service.predictor import ModelCall, ModelOutput, Options, assemble, model_calls
from service.savedmodel import message_to_dict
from service.settings import GatewaySettings

log = logging.getLogger(__name__)

WARMUP_TIMEOUT_S = 120.0
STATUS_TIMEOUT_S = 5.0

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


class TFServingBackend:
    """The channel to TF Serving, and what it says of each model's versions."""

    in_process = False  # explanations run on the gateway's own local copy, beside it

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None
        self.predict_stub: Any = None
        self.model_stub: Any = None

    async def start(self) -> None:
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self._channel = grpc.aio.insecure_channel(
            self.settings.tfserving_address,
            options=[
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        self.predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def call(self, method, request, timeout: float):
        """One RPC with a deadline; UNAVAILABLE is retried with exponential backoff."""
        attempts = self.settings.tfserving_retries + 1
        for attempt in range(attempts):
            try:
                return await method(request, timeout=timeout)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE and attempt + 1 < attempts:
                    await asyncio.sleep(0.1 * 2**attempt)
                    continue
                raise domain_error(e) from None
        raise AssertionError("unreachable")

    @staticmethod
    def spec(name: str, version: int | str | None = None, signature: str = ""):
        """ModelSpec for a version number, or a version label (a str) TF Serving resolves."""
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=name, signature_name=signature)
        if isinstance(version, str):
            spec.version_label = version
        elif version is not None:
            spec.version.value = version
        return spec

    async def discover(self, model: ModelConfig) -> list[int]:
        """The versions TF Serving has AVAILABLE, highest first (its config chose them)."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self.spec(model.name))
        response = await self.call(self.model_stub.GetModelStatus, request, STATUS_TIMEOUT_S)
        body = message_to_dict(response)
        states = body.get("model_version_status", [])
        return sorted(
            (int(v["version"]) for v in states if v["state"] == "AVAILABLE"), reverse=True
        )

    async def label(self, model: ModelConfig, label: str) -> int:
        """The version TF Serving's own label names (its models.config version_labels);
        TF Serving's INVALID_ARGUMENT for one it does not know."""
        body = await self.metadata(model.name, label)
        return int(body["model_spec"]["version"])

    async def metadata(self, name: str, version: int | str) -> dict[str, Any]:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self.spec(name, version), metadata_field=["signature_def"]
        )
        response = await self.call(self.predict_stub.GetModelMetadata, request, STATUS_TIMEOUT_S)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {
            "model_spec": message_to_dict(response.model_spec),
            "metadata": {"signature_def": message_to_dict(signature_map)},
        }

    def open(self, model: ModelConfig, version: int) -> TFServingPredictor:
        return TFServingPredictor(self, model, version)


class TFServingPredictor:
    """One version of one model in TF Serving."""

    def __init__(self, backend: TFServingBackend, model: ModelConfig, version: int):
        self.model_name = model.name
        self.version = version
        self._backend = backend
        self._local = model.base_path / str(version)  # the gateway's copy, if it has one
        self._info: ModelInfo | None = None
        self._metadata: dict[str, Any] = {}
        self._warmed: set[str] = set()  # labelled-path signatures called once (warm-up)

    async def load(self) -> None:
        """Connect: the signatures (kept: a version's never change), and the limits from the
        gateway's local copy of the export, since TF Serving does not serve assets. Without
        that copy the gateway does not check them and TF Serving's model refuses what is over
        its limits."""
        self._metadata = await self._backend.metadata(self.model_name, self.version)
        try:
            self._info = ModelInfo.read(self._local)
        except ContractError as e:
            log.warning("%s: the model's limits are checked by TF Serving only", e)

    def model_info(self) -> ModelInfo | None:
        return self._info

    def loaded(self) -> Any | None:
        return None  # TF Serving holds the model

    async def metadata(self) -> dict[str, Any]:
        return self._metadata

    async def _call(
        self, signature: str, inputs: dict[str, np.ndarray], timeout: float
    ) -> dict[str, np.ndarray]:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        spec = self._backend.spec(self.model_name, self.version, signature)
        request = predict_pb2.PredictRequest(model_spec=spec)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = await self._backend.call(self._backend.predict_stub.Predict, request, timeout)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    async def run_signature(
        self, signature: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        with timing.span("model"):
            return await self._call(signature, inputs, self._backend.settings.request_timeout_s)

    async def _predict(self, call: ModelCall) -> dict[str, np.ndarray]:
        """One labelled-path call. The first of each signature is the warm-up, which may
        wait for TF Serving's first run of it (and a busy machine): it gets a deadline of its
        own, so a short request deadline cannot fail start-up."""
        warm = call.signature in self._warmed
        timeout = self._backend.settings.request_timeout_s if warm else WARMUP_TIMEOUT_S
        self._warmed.add(call.signature)
        outputs = await self._call(call.signature, call.inputs, timeout)
        missing = {"classes", "glimpse_boxes", "annotated_image_bytes"} - set(outputs)
        if missing:
            raise BackendError(f"model server response lacks outputs {sorted(missing)}")
        return outputs

    async def run_batch(
        self, items: list[tuple[ImageInput, Options]]
    ) -> list[ModelOutput | BaseException]:
        options = [o for _, o in items]
        calls = model_calls([image.data for image, _ in items], options)
        return list(assemble(calls, [await self._predict(c) for c in calls], options))

    async def close(self) -> None:
        pass
