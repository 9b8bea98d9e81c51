"""Model status and metadata in TF Serving's shapes, by version or by version label."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from service import serving
from service.routes.deps import StateDep, path_parameters, require_token, version_named
from service.schemas import ErrorBody
from service.versions import VersionForm

router = APIRouter(tags=["models"], dependencies=[Depends(require_token)])
_ERRORS = {
    400: {"model": ErrorBody, "description": "Unknown version label, or a version past int64"},
    401: {"model": ErrorBody, "description": "Missing or invalid bearer token"},
    404: {"model": ErrorBody, "description": "Unknown model or version"},
    503: {"model": ErrorBody, "description": "Model not loaded yet, or failed to load"},
}


def _admitted(request: Request, state) -> int | None:
    path = request.path_params
    return serving.admit(state, path["model"], path.get("version"))


async def model_status(request: Request, state: StateDep) -> dict[str, Any]:
    """TF Serving's GetModelStatus body."""
    return await state.predictor.status(_admitted(request, state))


async def model_metadata(request: Request, state: StateDep) -> dict[str, Any]:
    """TF Serving's GetModelMetadata body: the signatures."""
    return await state.predictor.metadata(_admitted(request, state))


# TF Serving's label form keeps the parameter's name `version`; the dependency resolves it
# to the version number the handlers read (service/routes/deps.py, version_named).
_PREFIXES = {
    "/v1/models/{model}": [],
    "/v1/models/{model}/versions/{version}": [],
    "/v1/models/{model}/labels/{version}": [version_named(VersionForm.LABEL)],
}
for _prefix, _resolve in _PREFIXES.items():
    for _path, _handler in ((_prefix, model_status), (_prefix + "/metadata", model_metadata)):
        router.add_api_route(
            _path,
            _handler,
            methods=["GET"],
            responses=_ERRORS,
            openapi_extra=path_parameters(_path),
            dependencies=_resolve,
        )
