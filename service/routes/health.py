"""Kubernetes probes and Prometheus metrics.

live: the process answers (never touches the model, so a long inference cannot get the pod
killed); startup: the model has loaded and answered a warm-up inference; ready: started, not
shutting down, and the backend can serve right now.

The probes need no token even when GLIMPSE_AUTH_TOKEN is set: the kubelet cannot send a
secret header (httpGet probe headers are plain text in the pod spec), and their bodies say no
more than "up or not, and why" (no paths or settings). /metrics does need it: Prometheus
scrape configs take a bearer token from a file.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.errors import NotReady
from service.routes.deps import StateDep, require_token
from service.schemas import ErrorBody

router = APIRouter(tags=["health"])
_NOT_READY = {503: {"model": ErrorBody, "description": "Not (yet) able to serve; the reason"}}


@router.get("/healthz/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


def _started(state) -> None:
    if state.load_error:
        raise NotReady(f"model failed to load: {state.load_error}")
    if not state.started:
        raise NotReady("model is loading")


@router.get("/healthz/startup", responses=_NOT_READY)
async def startup(state: StateDep) -> dict[str, str]:
    _started(state)
    return {"status": "started"}


@router.get("/healthz/ready", responses=_NOT_READY)
async def ready(state: StateDep) -> dict[str, str]:
    if state.shutting_down:
        raise NotReady("shutting down")
    _started(state)
    await state.predictor.check()
    return {"status": "ready", "model": state.settings.model_name}


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_token)])
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
