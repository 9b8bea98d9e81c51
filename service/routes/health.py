"""Kubernetes probes, the served models, and Prometheus metrics.

live: the process answers (never touches a model, so a long inference cannot get the pod
killed); startup: the first loads finished and a model serves; ready: started and not
shutting down. What they answer is the data plane's decision (service/dataplane.py); a model
that cannot serve is reported in its own status and readiness, and does not take the others
down.

The probes need no token even when GLIMPSE_AUTH_TOKEN is set: the kubelet cannot send a
secret header (httpGet probe headers are plain text in the pod spec), and their bodies say no
more than "up or not, and why" (no paths or settings). /metrics does need it: Prometheus
scrape configs take a bearer token from a file.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from service.routes.deps import PlaneDep, require_token
from service.schemas import ErrorBody

router = APIRouter(tags=["health"])
_NOT_READY = {503: {"model": ErrorBody, "description": "Not (yet) able to serve; the reason"}}


@router.get("/healthz/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/healthz/startup", responses=_NOT_READY)
async def startup(plane: PlaneDep) -> dict[str, str]:
    plane.startup()
    return {"status": "started"}


@router.get("/healthz/ready", responses=_NOT_READY)
async def ready(plane: PlaneDep) -> dict[str, str]:
    plane.ready()
    return {"status": "ready", "model": plane.default_model}


class ServedModels(BaseModel):
    """KServe's v1 model list: every served model, ready or not."""

    models: list[str]


@router.get(
    "/v1/models",
    response_model=ServedModels,
    dependencies=[Depends(require_token)],
    summary="The served models (KServe v1's list; TF Serving has none)",
)
async def served_models(plane: PlaneDep) -> ServedModels:
    return ServedModels(models=sorted(plane.models))


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_token)])
async def metrics(plane: PlaneDep) -> Response:
    return Response(generate_latest(plane.metrics.registry), media_type=CONTENT_TYPE_LATEST)
