"""Vertex AI online prediction: `endpoints/{e}:predict`, `:rawPredict`, `:explain`, and the
Endpoint resource that google-cloud-aiplatform reads before it predicts.

The gateway is one Vertex endpoint with one deployed model, the model it serves: the endpoint
id is GLIMPSE_VERTEX_ENDPOINT_ID (default: the model name, `.../endpoints/saccader`), any other
is a 404 NOT_FOUND naming it. Any location is accepted unless GLIMPSE_VERTEX_LOCATION names one
(clients must send a real region: the SDK checks it), and the project is not checked (one
deployment serves one project, as on the ml v1 routes).

These routes are adapters over service/serving.py, exactly as `:predict` and `:explain` are:
the same admission, limits and errors (answered as google.rpc.Status JSON on `/v1/projects/`,
service/error_body.py). The deployed model's id is `<model>-v<version>`, its model resource
`projects/{p}/locations/{l}/models/<model>` and its `modelVersionId` the served version; a new
version is a new deployed model, as a redeploy is on Vertex. How an explanation maps onto
Vertex's `Attribution`: service/vertex_schemas.py. Batch prediction stays on the ml v1 jobs
API (service/routes/jobs.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel

from service import serving
from service.errors import InvalidInput, ModelNotFound, NotReady
from service.routes import predict as predict_route
from service.routes.deps import StateDep, error_responses, require_token
from service.schemas import (
    PredictParameters,
    PredictRequest,
    PredictResponse,
    TensorResponse,
)
from service.state import GatewayState
from service.vertex_schemas import (
    VertexDeployedModel,
    VertexEndpoint,
    VertexExplainRequest,
    VertexExplainResponse,
    VertexExplanation,
    VertexPredictRequest,
    VertexPredictResponse,
)

router = APIRouter(tags=["vertex"], dependencies=[Depends(require_token)])

ENDPOINT = "/v1/projects/{project}/locations/{location}/endpoints/{endpoint}"


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
    deployed_model_id: str
    model: str  # projects/{p}/locations/{l}/models/{name}
    version: str | None  # None: TF Serving picks, and the gateway cannot tell which
    display_name: str

    def headers(self) -> dict[str, str]:
        """What Vertex's rawPredict answers beside the container's body (the SDK reads the
        deployed model and model from them)."""
        found = {
            "X-Vertex-AI-Endpoint-Id": self.endpoint.rsplit("/", 1)[1],
            "X-Vertex-AI-Deployed-Model-Id": self.deployed_model_id,
            "X-Vertex-AI-Model": self.model,
            "X-Vertex-AI-Model-Version-Id": self.version,
        }
        return {k: v for k, v in found.items() if v is not None}


# Google's project ids and numbers, and region names: what may appear in resource names.
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_LOCATION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def _endpoint(state: GatewayState, project: str, location: str, endpoint: str) -> str:
    """The endpoint's resource name, or ModelNotFound (404) for one this gateway is not."""
    settings = state.settings
    if not (_PROJECT.fullmatch(project) and _LOCATION.fullmatch(location)):
        # They are echoed in names and rawPredict's headers: ids only.
        raise ModelNotFound(f"Endpoint not found: project or location {project!r}/{location!r}")
    name = f"projects/{project}/locations/{location}/endpoints/{endpoint}"
    wanted_id = settings.vertex_endpoint_id or settings.model_name
    if endpoint != wanted_id or location != (settings.vertex_location or location):
        raise ModelNotFound(
            f"Endpoint `{name}` not found (this gateway serves endpoint {wanted_id}"
            f"{f' in {settings.vertex_location}' if settings.vertex_location else ''})"
        )
    return name


def _deployment(state: GatewayState, endpoint: str) -> Deployment:
    """The deployed model, once admission has said the model is served."""
    name = state.settings.model_name
    version = state.predictor.served_version(None)
    project_location = endpoint.rsplit("/endpoints/", 1)[0]
    return Deployment(
        endpoint=endpoint,
        deployed_model_id=name if version is None else f"{name}-v{version}",
        model=f"{project_location}/models/{name}",
        version=None if version is None else str(version),
        display_name=name,
    )


def endpoint_name(project: str, location: str, endpoint: str, state: StateDep) -> str:
    """A route dependency: the endpoint's resource name, or 404 (every Vertex route checks it
    before anything else)."""
    return _endpoint(state, project, location, endpoint)


EndpointDep = Annotated[str, Depends(endpoint_name)]


async def _encoded(answer: BaseModel, items: int) -> Response:
    """Vertex's camelCase JSON, encoded as every route encodes (serving.off_loop)."""

    def encode() -> bytes:
        return answer.model_dump_json(by_alias=True, exclude_none=True).encode()

    return Response(await serving.off_loop(items == 1, encode), media_type="application/json")


@router.get(
    ENDPOINT,
    response_model=VertexEndpoint,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="The Vertex Endpoint resource: one deployed model, all the traffic",
)
async def get_endpoint(name: EndpointDep, state: StateDep) -> VertexEndpoint:
    serving.admit(state, state.settings.model_name, None)
    deployed = _deployment(state, name)
    # The endpoint exists while this gateway runs: its create and update times are the start.
    started = state.started_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return VertexEndpoint(
        name=name,
        display_name=name.rsplit("/", 1)[1],
        description=f"Glimpse gateway serving {deployed.display_name}",
        deployed_models=[
            VertexDeployedModel(
                id=deployed.deployed_model_id,
                model=deployed.model,
                model_version_id=deployed.version,
                display_name=deployed.display_name,
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
async def predict(name: EndpointDep, body: VertexPredictRequest, state: StateDep) -> Response:
    model = state.settings.model_name
    serving.admit_prediction(state, model, None, len(body.instances), body.parameters)
    predictions = await serving.predict(state, body.instances, body.parameters)
    deployed = _deployment(state, name)
    answer = VertexPredictResponse(
        predictions=predictions,
        deployed_model_id=deployed.deployed_model_id,
        model=deployed.model,
        model_version_id=deployed.version,
        model_display_name=deployed.display_name,
    )
    return await _encoded(answer, len(predictions))


@router.post(
    ENDPOINT + ":rawPredict",
    response_model=PredictResponse | TensorResponse,
    responses=_ERRORS,
    summary="The body as the model's container takes it (:predict's), and its answer",
)
async def raw_predict(name: EndpointDep, body: PredictRequest, state: StateDep) -> Response:
    """The model's container is the gateway itself: its own :predict answers the body,
    whatever form of :predict body it is, and Vertex's headers are added."""
    answer = await predict_route.answer(state, state.settings.model_name, None, body)
    answer.headers.update(_deployment(state, name).headers())
    return answer


@router.post(
    ENDPOINT + ":explain",
    response_model=VertexExplainResponse,
    responses=_ERRORS,
    summary="Explain the classification of photos (Vertex AI's explanation shape)",
)
async def explain(name: EndpointDep, body: VertexExplainRequest, state: StateDep) -> Response:
    if body.explanation_spec_override is not None:
        raise InvalidInput(
            "explanationSpecOverride is not supported: choose the method and its settings in"
            " parameters (parameters.method, parameters.steps, ...)"
        )
    model, count, params = state.settings.model_name, len(body.instances), body.parameters
    # Vertex answers an explanation with the predictions too: :predict's objects, at the
    # explanation's glimpse count, without the annotated image (the explanation has one).
    predict_params = PredictParameters(num_glimpses=params.num_glimpses, annotated_image=False)
    serving.admit_explanation(state, model, None, count, params)
    serving.admit_prediction(state, model, None, count, predict_params)
    deployed = _deployment(state, name)
    explained = state.explainer.served_version(None)
    if deployed.version is not None and str(explained) != deployed.version:
        # TF Serving may serve a version the gateway's local copy is not: one answer must
        # not mix the two under one deployedModelId.
        raise NotReady(
            f"explanations are of version {explained}, predictions of version"
            f" {deployed.version}; the gateway needs the served version's SavedModel"
        )
    if body.deployed_model_id and body.deployed_model_id != deployed.deployed_model_id:
        raise ModelNotFound(
            f"DeployedModel {body.deployed_model_id} not found on endpoint `{name}`"
            f" (its one deployed model is {deployed.deployed_model_id})"
        )
    # One decode and one deadline for both answers.
    images, deadline = await serving.decode(state, body.instances)
    predictions = await serving.predict_images(state, images, predict_params, deadline)
    explanations = await serving.explain_images(state, images, params)
    answer = VertexExplainResponse(
        explanations=[VertexExplanation.of(e) for e in explanations],
        deployed_model_id=deployed.deployed_model_id,
        predictions=predictions,
    )
    return await _encoded(answer, count)
