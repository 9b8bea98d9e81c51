"""What the protocol adapters share: the data plane, the jobs manager, auth, the URL forms of
a model's verbs and the model and version a URL names, and OpenAPI error tables."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute

from service.admission import VersionForm, VersionRef
from service.batch.job_manager import JobManager
from service.body_parsing import preparse
from service.dataplane import DataPlane
from service.errors import Unauthorized


async def get_plane(request: Request) -> DataPlane:
    """Every dependency here is `async def`: FastAPI runs a plain `def` dependency on its
    thread pool, a thread hop per dependency on every request (the v2 infer path's two took
    0.3 ms at concurrency 1)."""
    return request.app.state.plane


PlaneDep = Annotated[DataPlane, Depends(get_plane)]


async def get_jobs(request: Request) -> JobManager:
    """The batch jobs manager: the app factory builds it (when jobs are enabled) beside the
    data plane, which knows nothing of batch."""
    return request.app.state.jobs


JobsDep = Annotated[JobManager, Depends(get_jobs)]


async def require_token(request: Request, plane: PlaneDep) -> None:
    expected = plane.settings.auth_token
    if expected is None:
        return
    given = request.headers.get("authorization", "")
    if not secrets.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        raise Unauthorized("missing or invalid bearer token")


@dataclass(frozen=True)
class ModelRef:
    """The model and version a URL names, as the data plane's verbs take them."""

    name: str
    version: VersionRef


_FORM = "glimpse.version_form"  # the route's form, set by its own dependency


def _version_form(form: VersionForm) -> Callable[[Request], None]:
    async def mark(request: Request) -> None:
        request.scope[_FORM] = form

    return mark


async def model_ref(request: Request) -> ModelRef:
    """`{model}` and `{version}` of whichever URL form matched (add_model_routes)."""
    path = request.path_params
    form = request.scope.get(_FORM, VersionForm.NUMBER)
    return ModelRef(path["model"], VersionRef(path.get("version"), form))


ModelRefDep = Annotated[ModelRef, Depends(model_ref)]


_PATH_PARAMETERS = {
    "project": "Cloud project (AI Platform URL form); not checked, one deployment serves one",
    "model": "Model name",
    "version": "Model version: `N` or `vN` (AI Platform's URL form: also a version label)",
}
_LABEL = "Version label: the model config's, else TF Serving's own"


def path_parameters(path: str, form: VersionForm) -> dict:
    """OpenAPI `parameters` for a route whose handler reads `request.path_params` itself (one
    handler serves several URL forms), so that the documented path templates are complete."""
    described = dict(_PATH_PARAMETERS)
    if form is VersionForm.LABEL:  # TF Serving's label form keeps the parameter's name
        described["version"] = _LABEL
    return {
        "parameters": [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": described[name],
            }
            for name in re.findall(r"{(\w+)}", path)
        ]
    }


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}
}


def error_responses(descriptions: dict[int, str]) -> dict[int, dict]:
    """OpenAPI `responses` for error codes: the `{"error": ...}` body, Retry-After on 429/503."""
    from service.schemas import ErrorBody

    return {
        status: {"model": ErrorBody, "description": text}
        | ({"headers": _RETRY_AFTER} if status in (429, 503) else {})
        for status, text in descriptions.items()
    }


# The URL forms of one model: (prefix, how `{version}` names a version there, summary of a
# verb's route in that form, or None for the verb's own summary).
Form = tuple[str, VersionForm, str | None]
TF_SERVING_FORMS: list[Form] = [
    ("/v1/models/{model}", VersionForm.NUMBER, None),
    ("/v1/models/{model}/versions/{version}", VersionForm.NUMBER, "The same, with a version"),
    ("/v1/models/{model}/labels/{version}", VersionForm.LABEL, "The same, with a version label"),
]
AI_PLATFORM_FORMS: list[Form] = [
    ("/v1/projects/{project}/models/{model}", VersionForm.NAME, "The same, AI Platform URL form"),
    (
        "/v1/projects/{project}/models/{model}/versions/{version}",
        VersionForm.NAME,
        "The same, AI Platform URL form with a version (`v<N>`, `N` or a version label)",
    ),
]


class ChecksFirst(APIRoute):
    """A route checked in TF Serving's order: the bearer token (401), then what its URL
    names (`check`: 404), before the body is read (a big one off the event loop) and
    validated (400). FastAPI would read and validate the body before any dependency ran."""

    async def check(self, request: Request, plane: DataPlane) -> None:
        """What the URL names exists; 404 (a domain error) otherwise."""

    def get_route_handler(self) -> Callable:
        handle = super().get_route_handler()

        async def checked(request: Request) -> Response:
            plane: DataPlane = request.app.state.plane
            await require_token(request, plane)  # who asks, before what exists is told
            await self.check(request, plane)
            await preparse(request)
            return await handle(request)

        return checked


class ServableFirst(ChecksFirst):
    """The model and version a model route names; `form`: how its `{version}` names one."""

    form: VersionForm = VersionForm.NUMBER

    async def check(self, request: Request, plane: DataPlane) -> None:
        path = request.path_params
        await plane.find(path["model"], VersionRef(path.get("version"), self.form))


def servable_first(form: VersionForm) -> type[APIRoute]:
    return type(f"ServableFirst{form.name.title()}", (ServableFirst,), {"form": form})


def add_model_routes(
    router: APIRouter,
    forms: list[Form],
    suffix: str,
    endpoint: Callable,
    summary: str,
    responses: dict[int, dict],
    *,
    method: str = "POST",
    response_model: Any = None,
) -> None:
    """Register `endpoint` on each URL form of one model resource + `suffix` (`:predict`,
    `/metadata`, ...); the endpoint takes the model and version with ModelRefDep."""
    for prefix, form, text in forms:
        path = prefix + suffix
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            response_model=response_model,
            responses=responses,
            summary=text or summary,
            name=path,
            openapi_extra=path_parameters(path, form),
            dependencies=[Depends(_version_form(form))],
            route_class_override=servable_first(form) if method == "POST" else None,
        )
