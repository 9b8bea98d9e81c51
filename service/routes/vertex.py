"""Vertex AI online prediction: `endpoints/{e}:predict`, `:rawPredict`, `:explain`, and the
Endpoint resource that google-cloud-aiplatform reads before it predicts.

Each served model is one Vertex endpoint with one deployed model: the endpoint id is the
model's name, and GLIMPSE_VERTEX_ENDPOINT_ID gives the default model another id. Any other id
is a 404 NOT_FOUND naming it. Any location is accepted unless GLIMPSE_VERTEX_LOCATION names one
(clients must send a real region: the SDK checks it), and the project is not checked (one
deployment serves one project, as on the ml v1 routes).

An adapter over the data plane, exactly as TF Serving's and AI Platform's routes are: the same
admission, limits and errors (answered as google.rpc.Status JSON on `/v1/projects/`,
service/error_body.py). The deployed model's id is `<model>-v<version>`, its model resource
`projects/{p}/locations/{l}/models/<model>` and its `modelVersionId` the version that answers
requests without one; a new version is a new deployed model, as a redeploy is on Vertex. How an
explanation maps onto Vertex's `Attribution`: service/vertex_schemas.py. Batch prediction
and training stay on the ml v1 jobs API (service/routes/jobs.py).

A model's evaluations are Vertex's `models/{m}/evaluations`: one per version that `glimpse
train` evaluated on its test split, its id the version number.
"""

from __future__ import annotations

import json
import re
from base64 import b64encode
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from service.admission import VersionRef
from service.dataplane import DataPlane, off_loop
from service.errors import InvalidInput, ModelNotFound, clip
from service.routes import tfserving
from service.routes.aiplatform import PagingDep
from service.routes.deps import (
    ChecksFirst,
    ModelRef,
    PlaneDep,
    error_responses,
    require_token,
)
from service.schemas import (
    PredictParameters,
    PredictResponse,
    TensorResponse,
)
from service.vertex_schemas import (
    RawPredictRequest,
    VertexDeployedModel,
    VertexEndpoint,
    VertexExplainRequest,
    VertexExplainResponse,
    VertexExplanation,
    VertexModelEvaluation,
    VertexModelEvaluationList,
    VertexPredictRequest,
    VertexPredictResponse,
)


class EndpointFirst(ChecksFirst):
    """Vertex's order of checks: the endpoint a URL names, before the body."""

    async def check(self, request: Request, plane: DataPlane) -> None:
        path = request.path_params
        if "endpoint" in path:
            await deployment(path["project"], path["location"], path["endpoint"], plane)


router = APIRouter(
    tags=["vertex"], dependencies=[Depends(require_token)], route_class=EndpointFirst
)

ENDPOINT = "/v1/projects/{project}/locations/{location}/endpoints/{endpoint}"
MODEL = "/v1/projects/{project}/locations/{location}/models/{model}"


_ERRORS = error_responses(
    {
        400: "Invalid request or instance (the message names it)",
        401: "Missing or invalid bearer token",
        404: "Unknown endpoint, or deployed model",
        413: "Body over the payload limit",
        429: "Queue full, or too many explanations queued; retry after Retry-After",
        503: "Model not ready (loading, or shutting down)",
        504: "The model did not answer in time",
    }
)


@dataclass(frozen=True)
class Deployment:
    """The endpoint asked for, and the one model deployed on it."""

    endpoint: str  # projects/{p}/locations/{l}/endpoints/{e}
    model_name: str  # the served model's name
    version: int | None  # the version requests without one get (None: not known yet)

    @property
    def deployed_model_id(self) -> str:
        name = self.model_name
        return name if self.version is None else f"{name}-v{self.version}"

    @property
    def model(self) -> str:
        """projects/{p}/locations/{l}/models/{name}"""
        return f"{self.endpoint.rsplit('/endpoints/', 1)[0]}/models/{self.model_name}"

    def answered_by(self, version: int) -> Deployment:
        return Deployment(self.endpoint, self.model_name, version)

    def headers(self) -> dict[str, str]:
        """What Vertex's rawPredict answers beside the container's body (the SDK reads the
        deployed model and model from them)."""
        found = {
            "X-Vertex-AI-Endpoint-Id": self.endpoint.rsplit("/", 1)[1],
            "X-Vertex-AI-Deployed-Model-Id": self.deployed_model_id,
            "X-Vertex-AI-Model": self.model,
            "X-Vertex-AI-Model-Version-Id": None if self.version is None else str(self.version),
        }
        return {k: v for k, v in found.items() if v is not None}


# Google's project ids and numbers, and region names: what may appear in resource names.
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_LOCATION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def _endpoints(plane: DataPlane) -> dict[str, str]:
    """Endpoint id -> the served model it deploys: each model's name, but the default
    model's when GLIMPSE_VERTEX_ENDPOINT_ID gives it another."""
    alias = plane.settings.vertex_endpoint_id
    ids = {name: name for name in plane.models}
    if alias is not None and plane.default_model in ids:
        del ids[plane.default_model]
        ids[alias] = plane.default_model
    return dict(sorted(ids.items()))


async def deployment(project: str, location: str, endpoint: str, plane: PlaneDep) -> Deployment:
    """A route dependency: the endpoint's deployment, or 404 (every Vertex route checks it
    before anything else)."""
    settings = plane.settings
    if not (_PROJECT.fullmatch(project) and _LOCATION.fullmatch(location)):
        # They are echoed in names and rawPredict's headers: ids only.
        raise ModelNotFound(
            f"Endpoint not found: project or location {clip(project)!r}/{clip(location)!r}"
        )
    name = f"projects/{project}/locations/{location}/endpoints/{clip(endpoint)}"
    endpoints = _endpoints(plane)
    where = settings.vertex_location
    if endpoint not in endpoints or location != (where or location):
        raise ModelNotFound(
            f"Endpoint `{name}` not found (this gateway serves endpoint"
            f"{'s' if len(endpoints) > 1 else ''} {', '.join(endpoints)}"
            f"{f' in {where}' if where else ''})"
        )
    model = endpoints[endpoint]
    return Deployment(name, model, plane.model(model).default_number())


DeploymentDep = Annotated[Deployment, Depends(deployment)]


async def _encoded(answer: BaseModel, items: int) -> Response:
    """Vertex's camelCase JSON, encoded as every route encodes (dataplane.off_loop)."""

    def encode() -> bytes:
        return answer.model_dump_json(by_alias=True, exclude_none=True).encode()

    return Response(await off_loop(items == 1, encode), media_type="application/json")


@router.get(
    ENDPOINT,
    response_model=VertexEndpoint,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="The Vertex Endpoint resource: one deployed model, all the traffic",
)
async def get_endpoint(deployed: DeploymentDep, plane: PlaneDep) -> VertexEndpoint:
    await plane.metadata(deployed.model_name, VersionRef())  # 503 while it cannot serve
    # The endpoint exists while this gateway runs: its create and update times are the start.
    started = plane.started_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    version = None if deployed.version is None else str(deployed.version)
    return VertexEndpoint(
        name=deployed.endpoint,
        display_name=deployed.endpoint.rsplit("/", 1)[1],
        description=f"Glimpse gateway serving {deployed.model_name}",
        deployed_models=[
            VertexDeployedModel(
                id=deployed.deployed_model_id,
                model=deployed.model,
                model_version_id=version,
                display_name=deployed.model_name,
                create_time=started,
            )
        ],
        traffic_split={deployed.deployed_model_id: 100},
        create_time=started,
        update_time=started,
    )


@router.post(
    ENDPOINT + ":predict",
    response_model=VertexPredictResponse,
    responses=_ERRORS,
    summary="Classify photos (Vertex AI): each prediction is :predict's object",
)
async def predict(deployed: DeploymentDep, body: VertexPredictRequest, plane: PlaneDep) -> Response:
    answered = await plane.predict(
        deployed.model_name, VersionRef(), body.instances, body.parameters
    )
    by = deployed.answered_by(answered.version)
    answer = VertexPredictResponse(
        predictions=answered.items,
        deployed_model_id=by.deployed_model_id,
        model=by.model,
        model_version_id=str(answered.version),
        model_display_name=by.model_name,
    )
    return await _encoded(answer, len(answered.items))


@router.post(
    ENDPOINT + ":rawPredict",
    response_model=PredictResponse | TensorResponse,
    responses=_ERRORS,
    summary="The body as the model's container takes it (:predict's), and its answer",
)
async def raw_predict(
    deployed: DeploymentDep, body: RawPredictRequest, plane: PlaneDep
) -> Response:
    """The model's container is the gateway itself: its own :predict answers the body,
    whatever form of :predict body it is, and Vertex's headers are added. A body in an
    HttpBody envelope (Google's client) is answered in one."""
    ref = ModelRef(deployed.model_name, VersionRef())
    answer = await tfserving.answer_predict(plane, ref, body.root)
    if body.enveloped:
        wrapped = {"contentType": "application/json", "data": b64encode(answer.body).decode()}
        answer = Response(json.dumps(wrapped).encode(), media_type="application/json")
    answer.headers.update(deployed.headers())
    return answer


@router.post(
    ENDPOINT + ":explain",
    response_model=VertexExplainResponse,
    responses=_ERRORS,
    summary="Explain the classification of photos (Vertex AI's explanation shape)",
)
async def explain(deployed: DeploymentDep, body: VertexExplainRequest, plane: PlaneDep) -> Response:
    if body.explanation_spec_override is not None:
        raise InvalidInput(
            "explanationSpecOverride is not supported: choose the method and its settings in"
            " parameters (parameters.method, parameters.steps, ...)"
        )
    if body.deployed_model_id and body.deployed_model_id != deployed.deployed_model_id:
        raise ModelNotFound(
            f"DeployedModel {clip(body.deployed_model_id)} not found on endpoint"
            f" `{deployed.endpoint}` (its one deployed model is {deployed.deployed_model_id})"
        )
    params = body.parameters
    # Vertex answers an explanation with the predictions too: :predict's objects, at the
    # explanation's glimpse count, without the annotated image (the explanation has one).
    predict_params = PredictParameters(num_glimpses=params.num_glimpses, annotated_image=False)
    predicted, explained = await plane.predict_and_explain(
        deployed.model_name, body.instances, predict_params, params
    )
    answer = VertexExplainResponse(
        explanations=[VertexExplanation.of(e) for e in explained.items],
        deployed_model_id=deployed.answered_by(predicted.version).deployed_model_id,
        predictions=predicted.items,
    )
    return await _encoded(answer, len(body.instances))


# -- model evaluations ---------------------------------------------------------------------

_EVALUATION_ERRORS = error_responses(
    {
        400: "Invalid page token, or a filter",
        401: "Missing or invalid bearer token",
        404: "Unknown model, or a version without an evaluation",
    }
)


def _model_name(project: str, location: str, model: str, plane: DataPlane) -> str:
    """projects/{p}/locations/{l}/models/{m} for a served model, else 404 NOT_FOUND."""
    name = f"projects/{project}/locations/{location}/models/{model}"
    where = plane.settings.vertex_location
    if not (_PROJECT.fullmatch(project) and _LOCATION.fullmatch(location)):
        raise ModelNotFound(f"Model not found: project or location {project!r}/{location!r}")
    if model not in plane.models or location != (where or location):
        served = ", ".join(sorted(plane.models)) + (f" in {where}" if where else "")
        raise ModelNotFound(f"Model `{name}` not found (this gateway serves {served})")
    return name


def _evaluation(name: str, model: str, number: int, body: dict) -> VertexModelEvaluation:
    return VertexModelEvaluation.model_validate(
        {**body, "name": f"{name}/evaluations/{number}", "displayName": f"{model} v{number}"}
    )


def _evaluation_number(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,18}", text):
        raise ValueError(text)
    return int(text)


@router.get(
    MODEL + "/evaluations",
    response_model=VertexModelEvaluationList,
    response_model_exclude_none=True,
    responses=_EVALUATION_ERRORS,
    summary="The model's evaluations, one per evaluated version, lowest version first",
)
async def list_evaluations(
    project: str, location: str, model: str, plane: PlaneDep, paging: PagingDep
) -> VertexModelEvaluationList:
    name = _model_name(project, location, model, plane)
    numbers = await plane.evaluated_versions(model)
    page, token = paging.page(numbers, "e", _evaluation_number, "evaluation")
    found = [(n, await plane.evaluation(model, n)) for n in page]
    return VertexModelEvaluationList(
        model_evaluations=[_evaluation(name, model, n, b) for n, b in found if b] or None,
        next_page_token=token,
    )


@router.get(
    MODEL + "/evaluations/{evaluation}",
    response_model=VertexModelEvaluation,
    response_model_exclude_none=True,
    responses=_EVALUATION_ERRORS,
    summary="A version's evaluation on its test split (id: the version number)",
)
async def get_evaluation(
    project: str, location: str, model: str, evaluation: str, plane: PlaneDep
) -> VertexModelEvaluation:
    name = _model_name(project, location, model, plane)
    try:
        body = await plane.evaluation(model, _evaluation_number(evaluation))
    except ValueError:
        body = None
    if body is None:
        raise ModelNotFound(
            f"ModelEvaluation `{name}/evaluations/{evaluation[:64]}` not found (evaluation ids"
            f" are the versions `glimpse train` evaluated: list {name}/evaluations)"
        )
    return _evaluation(name, model, int(evaluation), body)
