"""Model status and metadata in TF Serving's shapes, by version or by version label."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from service import serving
from service.routes.deps import (
    StateDep,
    add_model_routes,
    error_responses,
    require_token,
)

router = APIRouter(tags=["models"], dependencies=[Depends(require_token)])
_ERRORS = error_responses(
    {
        400: "Unknown version label, or a version past int64",
        401: "Missing or invalid bearer token",
        404: "Unknown model or version",
        503: "Model not loaded yet, or failed to load",
    }
)


def _admitted(request: Request, state) -> int | None:
    path = request.path_params
    return serving.admit(state, path["model"], path.get("version"))


async def model_status(request: Request, state: StateDep) -> dict[str, Any]:
    """TF Serving's GetModelStatus body."""
    return await state.predictor.status(_admitted(request, state))


async def model_metadata(request: Request, state: StateDep) -> dict[str, Any]:
    """TF Serving's GetModelMetadata body: the signatures."""
    return await state.predictor.metadata(_admitted(request, state))


add_model_routes(
    router, "", model_status, "TF Serving's model status", _ERRORS, method="GET", ai_platform=False
)
add_model_routes(
    router,
    "/metadata",
    model_metadata,
    "TF Serving's model metadata: the signatures",
    _ERRORS,
    method="GET",
    ai_platform=False,  # AI Platform's models.get and versions.get: routes/resources.py
)
