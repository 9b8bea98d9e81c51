"""Dependencies shared by the routers: the gateway state, the jobs manager, auth, and the URL
forms of the model verbs."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, params

from service import versions
from service.batch.job_manager import JobManager
from service.errors import Unauthorized
from service.state import GatewayState
from service.versions import VersionForm


def get_state(request: Request) -> GatewayState:
    return request.app.state.gateway


StateDep = Annotated[GatewayState, Depends(get_state)]


def get_jobs(request: Request) -> JobManager:
    """The batch jobs manager: the app factory builds it (when jobs are enabled) beside the
    gateway state, which knows nothing of batch."""
    return request.app.state.jobs


JobsDep = Annotated[JobManager, Depends(get_jobs)]


def require_token(request: Request, state: StateDep) -> None:
    expected = state.settings.auth_token
    if expected is None:
        return
    given = request.headers.get("authorization", "")
    if not secrets.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        raise Unauthorized("missing or invalid bearer token")


_PATH_PARAMETERS = {
    "project": "Cloud project (AI Platform URL form); not checked, one deployment serves one",
    "model": "Model name",
    "version": "Model version: `N` or `vN` (AI Platform's URL form: also a version label)",
}
_LABEL = "Version label: the gateway's (GLIMPSE_VERSION_LABELS), else TF Serving's own"


def path_parameters(path: str, form: VersionForm | None = None) -> dict:
    """OpenAPI `parameters` for a route whose handler reads `request.path_params` itself (one
    handler serves several URL forms), so that the documented path templates are complete."""
    names = re.findall(r"{(\w+)}", path)
    described = dict(_PATH_PARAMETERS)
    if form is VersionForm.LABEL:  # TF Serving's label form (see version_named)
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
            for name in names
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


def version_named(form: VersionForm) -> params.Depends:
    """A route dependency: the URL's `{version}` (a label on TF Serving's `/labels/{version}`,
    a version name on AI Platform's `versions/{version}`) replaced, in the request's path
    parameters, by the version number it names (service/versions.py).

    One handler serves every URL form and reads the path itself, so each form reaches it, and
    admission, as a number. The label form keeps the parameter's name `version` so that a
    handler without this dependency could never take a label for "no version" (the default).
    """

    async def resolve(request: Request, state: StateDep) -> None:
        path = request.path_params  # the scope's own dict, which the handler reads next
        path["version"] = await versions.resolve(state, path["model"], path.get("version"), form)

    return Depends(resolve)


# The URL forms of one model: (prefix, how `{version}` names a version when it is resolved
# before the handler (version_named), summary of a verb's route in that form).
TF_SERVING_FORMS = [
    ("/v1/models/{model}", None, None),
    ("/v1/models/{model}/versions/{version}", None, "The same, with a given version"),
    ("/v1/models/{model}/labels/{version}", VersionForm.LABEL, "The same, with a version label"),
]
AI_PLATFORM_FORMS = [
    ("/v1/projects/{project}/models/{model}", None, "The same, AI Platform URL form"),
    (
        "/v1/projects/{project}/models/{model}/versions/{version}",
        VersionForm.NAME,
        "The same, AI Platform URL form with a version (`v<N>`, `N` or a version label)",
    ),
]


def add_model_routes(
    router: APIRouter,
    suffix: str,
    endpoint: Callable,
    summary: str,
    responses: dict[int, dict],
    *,
    method: str = "POST",
    response_model: Any = None,
    ai_platform: bool = True,
) -> None:
    """Register `endpoint` on every URL form of one model resource + `suffix` (`:predict`,
    `/metadata`, ...): TF Serving's with a version or a version label, and (`ai_platform`)
    AI Platform's with a version name.

    AI Platform's project is not checked (one deployment serves one project); its version
    names are `v<N>`, `N` or a version label. The endpoint reads the path parameters itself,
    `version` already resolved to a number (version_named).
    """
    forms = TF_SERVING_FORMS + (AI_PLATFORM_FORMS if ai_platform else [])
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
            dependencies=[] if form is None else [version_named(form)],
        )
