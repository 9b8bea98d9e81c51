"""A real gRPC server speaking TF Serving's protocol over a SavedModel, for backend tests.

No TF Serving binary exists here; this implements the parts of PredictionService and
ModelService the gateway uses, with TF Serving's semantics (signature lookup, NOT_FOUND for
unknown models and versions, INVALID_ARGUMENT for bad inputs), on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from service.savedmodel import load, signature_def_map


class _Servable:
    def __init__(self, name: str, version: int, path: Path):
        self.name, self.version = name, version
        self.model = load(path)  # shared with every gateway of the test process
        self.signature_map = signature_def_map(path)
        self._warm_up()

    def _warm_up(self) -> None:
        """A first call traces the graph (seconds); TF Serving's --enable_model_warmup
        likewise pays it before serving, so tests with short deadlines do not race it."""
        image = tf.io.encode_png(tf.zeros([32, 48, 3], tf.uint8))
        self.model.signatures["serving_options"](
            input_image_bytes=tf.stack([image]),
            num_glimpses=tf.constant([1]),
            top_k=tf.constant([1]),
        )


class TFServingServer(
    prediction_service_pb2_grpc.PredictionServiceServicer,
    model_service_pb2_grpc.ModelServiceServicer,
):
    def __init__(
        self,
        name: str,
        version_dir: Path,
        delay_s: float = 0.0,
        labels: dict[str, int] | None = None,
    ):
        self.servable = _Servable(name, int(version_dir.name), version_dir)
        self.labels = labels if labels is not None else {"stable": self.servable.version}
        self.delay_s = delay_s
        self.calls = 0
        self.metadata_calls = 0
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.port = 0

    def _find(self, spec, context) -> _Servable:
        s = self.servable
        if spec.name != s.name:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})"
            )
        if spec.HasField("version") and spec.version.value != s.version:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({spec.name}, {spec.version.value})",
            )
        if spec.version_label and self.labels.get(spec.version_label) != s.version:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Unrecognized servable version label: {spec.version_label}",
            )
        return s

    def Predict(self, request: predict_pb2.PredictRequest, context):  # noqa: N802 - gRPC name
        s = self._find(request.model_spec, context)
        name = request.model_spec.signature_name or "serving_default"
        if name not in s.model.signatures:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f'Serving signature name: "{name}" not found'
            )
        with self._lock:
            self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        fn = s.model.signatures[name]
        try:
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            outputs = fn(**inputs)
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e).splitlines()[0])
        response = predict_pb2.PredictResponse()
        response.model_spec.name = s.name
        response.model_spec.version.value = s.version
        response.model_spec.signature_name = name
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802
        s = self._find(request.model_spec, context)
        with self._lock:
            self.metadata_calls += 1
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = s.name
        response.model_spec.version.value = s.version
        packed = any_pb2.Any()
        packed.Pack(s.signature_map)
        response.metadata["signature_def"].CopyFrom(packed)
        return response

    def GetModelStatus(self, request, context):  # noqa: N802
        s = self._find(request.model_spec, context)
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add()
        status.version = s.version
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        status.status.SetInParent()  # error_code OK, as TF Serving always reports it
        return response

    def start(self, port: int = 0) -> int:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self, self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self._server.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
