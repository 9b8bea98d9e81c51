"""Kubernetes probes and Prometheus metrics.

live: the process answers (never touches the model, so a long inference cannot get the pod
killed); startup: the model has loaded and answered a warm-up inference; ready: started, not
shutting down, and the backend can serve right now.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.errors import NotReady
from service.routes.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


def _started(state) -> None:
    if state.load_error:
        raise NotReady(f"model failed to load: {state.load_error}")
    if not state.started:
        raise NotReady("model is loading")


@router.get("/healthz/startup")
async def startup(state: StateDep) -> dict[str, str]:
    _started(state)
    return {"status": "started"}


@router.get("/healthz/ready")
async def ready(state: StateDep) -> dict[str, str]:
    if state.shutting_down:
        raise NotReady("shutting down")
    _started(state)
    await state.predictor.check()
    return {"status": "ready", "model": state.settings.model_name}


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
