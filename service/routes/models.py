"""Model status and metadata in TF Serving's shapes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from service.errors import NotReady
from service.routes.deps import StateDep, require_token, served_model
from service.schemas import ErrorBody

router = APIRouter(tags=["models"], dependencies=[Depends(require_token)])
_ERRORS = {404: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def _loaded(state) -> None:
    if not state.predictor.is_ready():
        raise NotReady("model is loading; retry shortly")


async def model_status(request: Request, state: StateDep) -> dict[str, Any]:
    """TF Serving's GetModelStatus body."""
    wanted = served_model(state, request.path_params["model"], request.path_params.get("version"))
    _loaded(state)
    return await state.predictor.status(wanted)


async def model_metadata(request: Request, state: StateDep) -> dict[str, Any]:
    """TF Serving's GetModelMetadata body: the signatures."""
    wanted = served_model(state, request.path_params["model"], request.path_params.get("version"))
    _loaded(state)
    return await state.predictor.metadata(wanted)


for _prefix in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}"):
    router.add_api_route(_prefix, model_status, methods=["GET"], responses=_ERRORS)
    router.add_api_route(_prefix + "/metadata", model_metadata, methods=["GET"], responses=_ERRORS)
