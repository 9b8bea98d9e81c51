"""Model status and metadata in TF Serving's shapes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from service.errors import NotReady
from service.routes.deps import StateDep, require_token, served_model
from service.schemas import ErrorBody

router = APIRouter(tags=["models"], dependencies=[Depends(require_token)])
_ERRORS = {404: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def _loaded(state) -> None:
    if not state.predictor.is_ready():
        raise NotReady("model is loading; retry shortly")


@router.get("/v1/models/{model}", responses=_ERRORS, summary="Model version status")
async def model_status(model: str, state: StateDep) -> dict[str, Any]:
    served_model(state, model, None)
    _loaded(state)
    return await state.predictor.status(None)


@router.get("/v1/models/{model}/versions/{version}", responses=_ERRORS)
async def model_version_status(model: str, version: str, state: StateDep) -> dict[str, Any]:
    wanted = served_model(state, model, version)
    _loaded(state)
    return await state.predictor.status(wanted)


@router.get("/v1/models/{model}/metadata", responses=_ERRORS, summary="Signatures")
async def model_metadata(model: str, state: StateDep) -> dict[str, Any]:
    served_model(state, model, None)
    _loaded(state)
    return await state.predictor.metadata(None)


@router.get("/v1/models/{model}/versions/{version}/metadata", responses=_ERRORS)
async def model_version_metadata(model: str, version: str, state: StateDep) -> dict[str, Any]:
    wanted = served_model(state, model, version)
    _loaded(state)
    return await state.predictor.metadata(wanted)
