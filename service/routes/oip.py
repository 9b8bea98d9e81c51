"""Open Inference Protocol v2 (KServe, Triton) over REST: one more adapter on the data plane.

    GET  /v2                                      server metadata (extensions)
    GET  /v2/health/live | /v2/health/ready       the same decisions as /healthz/*
    GET  /v2/models/{m}[/versions/{v}]            model metadata: the default signature
    GET  /v2/models/{m}[/versions/{v}]/ready      the version serves (503 when not)
    POST /v2/models/{m}[/versions/{v}]/infer      JSON tensors, or the binary tensor data
                                                  extension (Inference-Header-Content-Length)

An infer request runs a signature of the version (service/oip_tensors.py says how tensors,
parameters and outputs map) through the data plane's `target` + `infer`: the same admission,
decode budgets, answer-size bound and fair scheduling as TF Serving's tensor requests. Errors
are `{"error": "..."}`, the shape KServe and Triton answer with.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from model_export.contract import SERVING_DEFAULT
from service import oip_tensors
from service.admission import VersionRef
from service.body_parsing import one_at_a_time
from service.dataplane import off_loop
from service.errors import NotReady
from service.routes.deps import PlaneDep, error_responses, require_token
from service.signatures import signature_defs, signature_spec

# The health routes are probes: public, as /healthz/* (service/routes/health.py says why).
router = APIRouter(tags=["open inference protocol (v2)"])
models = APIRouter(tags=["open inference protocol (v2)"], dependencies=[Depends(require_token)])


_MODEL_ERRORS = error_responses(
    {
        400: "A version number past int64",
        401: "Missing or invalid bearer token",
        404: "Unknown model or version",
        503: "Model not ready (loading, failed, or shutting down)",
    }
)
_INFER_ERRORS = error_responses(
    {
        400: "Invalid request: the message names the input, output or value",
        401: "Missing or invalid bearer token",
        404: "Unknown model or version",
        413: "Body over the payload limit",
        429: "Too many tensor requests queued; retry after the Retry-After header",
        503: "Model not ready (loading, failed, or shutting down)",
        504: "The model did not answer in time",
    }
)
_NOT_READY = error_responses({503: "Not (yet) able to serve; the reason"})


def _server_version() -> str:
    try:
        return package_version("glimpse")
    except PackageNotFoundError:
        return "0"


@models.get(
    "/v2",
    responses=error_responses({401: "Missing or invalid bearer token"}),
    summary="Server metadata",
)
async def server_metadata() -> dict[str, Any]:
    return {"name": "glimpse", "version": _server_version(), "extensions": ["binary_tensor_data"]}


@router.get("/v2/health/live", summary="The process answers (never touches a model)")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/v2/health/ready",
    responses=_NOT_READY,
    summary="Started and not shutting down (503 with the reason)",
)
async def ready(plane: PlaneDep) -> dict[str, bool]:
    plane.ready()
    return {"ready": True}


async def model_metadata_body(plane, model: str, version: str | None) -> dict[str, Any]:
    """The tensors of the signature an infer request without `signature_name` runs
    (serving_default); a SavedModel without one (TF Serving may serve any) is described by
    its first signature, which `parameters.signature_name` then names."""
    number, body = await plane.metadata(model, VersionRef(version))
    defs = signature_defs(body)
    name = SERVING_DEFAULT if SERVING_DEFAULT in defs or not defs else min(defs)
    return {
        "name": model,
        "versions": [str(v) for v in await plane.versions(model)],
        "platform": "tensorflow_savedmodel",
        **oip_tensors.tensor_metadata(signature_spec(body, name)),
        "parameters": {"served_version": str(number), "signature_name": name},
    }


async def model_ready_body(plane, model: str, version: str | None) -> dict[str, Any]:
    status = await plane.status(model, VersionRef(version))
    states = [v.get("state") for v in status.get("model_version_status", [])]
    if "AVAILABLE" not in states:
        raise NotReady(f"model {model} has no version ready ({', '.join(states) or 'none'})")
    return {"name": model, "ready": True}


# A body up to this size is read and turned into tensors on the event loop: a memcpy and a
# small JSON parse cost less than the thread hop (dataplane.off_loop's rule).
INLINE_BODY = 256 * 1024


async def run_infer(
    plane, model: str, version: str | None, parsed: oip_tensors.InferRequest, inline: bool
) -> tuple[int, dict[str, Any]]:
    """The request's signature on its tensors (REST and gRPC): the version that answered and
    every output of the signature. `inline`: a small request, built without a thread hop."""
    name = oip_tensors.signature_name(parsed)
    async with plane.target(model, VersionRef(version), name) as target:
        tensors = await off_loop(inline, oip_tensors.input_tensors, parsed, target.signature)
        outputs = await plane.infer(target, tensors, lambda i: f"inputs.input_image_bytes[{i}]")
        return target.version.number, outputs


def one_row(outputs: dict[str, Any]) -> bool:
    """An answer of one instance: encoded on the event loop (off_loop's rule)."""
    return all(len(array.shape) > 0 and array.shape[0] == 1 for array in outputs.values())


async def _infer(plane, model: str, version: str | None, request: Request) -> Response:
    await plane.find(model, VersionRef(version))  # the model before its body (404 first)
    body = await request.body()
    header = request.headers.get(oip_tensors.HEADER_LENGTH)
    inline = len(body) <= INLINE_BODY
    if inline:  # never the slot on the event loop: it would wait there for a big parse
        parsed = oip_tensors.read_request(body, header)
    else:
        parsed = await asyncio.to_thread(one_at_a_time, oip_tensors.read_request, body, header)
    number, outputs = await run_infer(plane, model, version, parsed, inline)
    content, head = await off_loop(
        inline and one_row(outputs), oip_tensors.answer, model, number, parsed, outputs
    )
    if head is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={oip_tensors.HEADER_LENGTH: str(head)},
    )


@models.get(
    "/v2/models/{model}", responses=_MODEL_ERRORS, summary="Model metadata (the default version)"
)
async def model_metadata(model: str, plane: PlaneDep) -> dict[str, Any]:
    return await model_metadata_body(plane, model, None)


@models.get(
    "/v2/models/{model}/versions/{version}", responses=_MODEL_ERRORS, summary="Model metadata"
)
async def version_metadata(model: str, version: str, plane: PlaneDep) -> dict[str, Any]:
    return await model_metadata_body(plane, model, version)


@models.get(
    "/v2/models/{model}/ready", responses=_MODEL_ERRORS, summary="The model serves (503 when not)"
)
async def model_ready(model: str, plane: PlaneDep) -> dict[str, Any]:
    return await model_ready_body(plane, model, None)


@models.get(
    "/v2/models/{model}/versions/{version}/ready",
    responses=_MODEL_ERRORS,
    summary="The version serves",
)
async def version_ready(model: str, version: str, plane: PlaneDep) -> dict[str, Any]:
    return await model_ready_body(plane, model, version)


@models.post(
    "/v2/models/{model}/infer",
    responses=_INFER_ERRORS,
    summary="Inference (JSON or binary tensor data)",
)
async def infer(model: str, request: Request, plane: PlaneDep) -> Response:
    return await _infer(plane, model, None, request)


@models.post(
    "/v2/models/{model}/versions/{version}/infer", responses=_INFER_ERRORS, summary="Inference"
)
async def version_infer(model: str, version: str, request: Request, plane: PlaneDep) -> Response:
    return await _infer(plane, model, version, request)
