"""Open Inference Protocol v2 over gRPC: `inference.GRPCInferenceService` on the data plane.

The messages and the service stub are Triton's own (tritonclient's generated
`service_pb2`/`service_pb2_grpc`, the protos KServe and Triton share), served by a grpc.aio
server in the gateway's event loop on GLIMPSE_GRPC_PORT (8081, KServe's convention; 0 picks a
free port, and None turns it off). ServerLive, ServerReady, ServerMetadata, ModelReady,
ModelMetadata and ModelInfer; the rest (repository, shared memory, statistics) answer
UNIMPLEMENTED, as a server without those extensions does.

An infer request becomes the REST adapter's InferRequest: `raw_input_contents` (or typed
`contents`) are the binary tensor data, every output goes back in `raw_output_contents`, so
both transports share one codec (service/oip_tensors.py) and one path through the data plane.
Domain errors map to gRPC status codes once, here. The bearer token (GLIMPSE_AUTH_TOKEN), when
set, is read from the `authorization` metadata.
"""

from __future__ import annotations

import hmac
import logging
import struct
import time
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service import oip_tensors, timing
from service.dataplane import DataPlane, off_loop
from service.errors import (
    BackendTimeout,
    BackendUnavailable,
    GlimpseError,
    InvalidInput,
    ModelNotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
)
from service.routes import oip

log = logging.getLogger(__name__)

STATUS: dict[type[GlimpseError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BackendUnavailable: grpc.StatusCode.UNAVAILABLE,
    BackendTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_CONTENTS = {  # datatype -> the InferTensorContents field holding it
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _status(error: GlimpseError) -> grpc.StatusCode:
    return next(
        (code for kind, code in STATUS.items() if isinstance(error, kind)),
        grpc.StatusCode.INTERNAL,
    )


def _parameter(value: pb.InferParameter) -> Any:
    which = value.WhichOneof("parameter_choice")
    return getattr(value, which) if which else None


def _request(message: pb.ModelInferRequest) -> oip_tensors.InferRequest:
    """The gRPC request as the REST codec's: typed contents become binary data too."""
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs"
        )
    inputs, tail = [], []
    for i, tensor in enumerate(message.inputs):
        if raw:
            data = raw[i]
        elif tensor.datatype == "BYTES":
            data = b"".join(struct.pack("<I", len(v)) + v for v in tensor.contents.bytes_contents)
        elif tensor.datatype in _CONTENTS:
            values = getattr(tensor.contents, _CONTENTS[tensor.datatype])
            dtype = oip_tensors.NUMPY[tensor.datatype]
            data = np.asarray(values, dtype).astype(np.dtype(dtype).newbyteorder("<")).tobytes()
        else:
            data = b""
        inputs.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.shape),
                "parameters": {"binary_data_size": len(data)},
            }
        )
        tail.append(data)
    header: dict[str, Any] = {"inputs": inputs}
    if message.id:
        header["id"] = message.id
    parameters = {k: _parameter(v) for k, v in message.parameters.items()}
    return oip_tensors.InferRequest(
        header=header,
        binary=b"".join(tail),
        parameters=parameters,
        outputs={o.name: True for o in message.outputs},
    )


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane):
        self.plane = plane

    async def _guard(self, context: grpc.aio.ServicerContext) -> None:
        expected = self.plane.settings.auth_token
        if not expected:
            return
        given = dict(context.invocation_metadata() or ()).get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    async def _abort(self, context: grpc.aio.ServicerContext, error: GlimpseError) -> None:
        await context.abort(_status(error), error.message)

    async def ServerLive(self, request, context):  # noqa: N802  (the proto's names)
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):  # noqa: N802
        try:
            self.plane.ready()
        except NotReady:
            return pb.ServerReadyResponse(ready=False)
        return pb.ServerReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):  # noqa: N802
        await self._guard(context)
        body = await oip.server_metadata()
        return pb.ServerMetadataResponse(**body)

    async def ModelReady(self, request, context):  # noqa: N802
        await self._guard(context)
        try:
            await oip.model_ready_body(self.plane, request.name, request.version or None)
        except (NotReady, ModelNotFound, InvalidInput):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request, context):  # noqa: N802
        await self._guard(context)
        try:
            body = await oip.model_metadata_body(self.plane, request.name, request.version or None)
        except GlimpseError as e:
            await self._abort(context, e)

        def tensors(entries):
            return [pb.ModelMetadataResponse.TensorMetadata(**t) for t in entries]

        return pb.ModelMetadataResponse(
            name=body["name"],
            versions=body["versions"],
            platform=body["platform"],
            inputs=tensors(body["inputs"]),
            outputs=tensors(body["outputs"]),
        )

    async def ModelInfer(self, request, context):  # noqa: N802
        started = time.perf_counter()
        await self._guard(context)
        spent, clock = timing.begin()  # a handler runs in its own task: its own record
        try:
            inline = request.ByteSize() <= oip.INLINE_BODY
            parsed = await off_loop(inline, _request, request)
            number, outputs = await oip.run_infer(
                self.plane, request.model_name, request.model_version or None, parsed, inline
            )
            chosen = oip_tensors.selected_outputs(parsed, outputs)
            raw = await off_loop(
                inline and oip.one_row(outputs),
                lambda: [oip_tensors.raw_bytes(array) for _, array in chosen],
            )
        except GlimpseError as e:
            await self._abort(context, e)
        finally:
            timing.end(clock)
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=str(number), id=request.id
        )
        for name, array in chosen:
            response.outputs.add(
                name=name, datatype=oip_tensors.datatype_of(array), shape=list(array.shape)
            )
        response.raw_output_contents.extend(raw)
        spent["total"] = time.perf_counter() - started
        context.set_trailing_metadata((("server-timing", timing.header(spent)),))
        return response


async def start_server(plane: DataPlane, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """The gRPC server on host:port (0: a free port); returns it and the port it bound."""
    limit = plane.settings.max_payload_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 64 << 20)),
            # gRPC shares a port by default (SO_REUSEPORT): a second gateway would silently
            # split the first one's traffic instead of failing to start.
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(plane), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpc.aio's "Failed to bind to address ..."
        bound = 0
    if not bound:
        raise RuntimeError(
            f"cannot listen for gRPC on {host}:{port} (in use?): set GLIMPSE_GRPC_PORT to a"
            " free port, or leave it empty to turn gRPC off"
        )
    await server.start()
    log.info("Open Inference Protocol gRPC on %s:%d", host, bound)
    return server, bound
