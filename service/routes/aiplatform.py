"""AI Platform (ml v1) online prediction and model resources, for every served model:
`projects/{p}/models/{m}[/versions/{v}]` with `:predict` and `:explain` (TF Serving's bodies,
so the TF Serving adapter's handlers answer them), and `models.list`, `models.get`,
`versions.list`, `versions.get`, so that clients and tools written for ml.googleapis.com can
look models up.

A version name is `vN`, `N` or a version label. A version's state is the data plane's: READY
(serving), CREATING (loading), FAILED (with the load error), DELETING (draining before it is
unloaded), UNKNOWN (on disk but not served by the version policy, or unloaded). No server path
is shown (there is no `deploymentUri`). The project is not checked: one deployment serves one.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, Query

from service.admission import VersionRef
from service.dataplane import DataPlane
from service.errors import InvalidInput
from service.explain.schemas import ExplainResponse
from service.model_config import MODEL_NAME
from service.routes import tfserving
from service.routes.deps import (
    AI_PLATFORM_FORMS,
    PlaneDep,
    add_model_routes,
    error_responses,
    require_token,
)
from service.schemas import GoogleJson, PredictResponse, TensorResponse
from service.served_model import ServedModel, VersionState, no_such_version

router = APIRouter(tags=["AI Platform"], dependencies=[Depends(require_token)])

add_model_routes(
    router,
    AI_PLATFORM_FORMS,
    ":predict",
    tfserving.predict,
    "Classify photos and return the glimpses",
    tfserving.PREDICT_ERRORS,
    response_model=PredictResponse | TensorResponse,
)
add_model_routes(
    router,
    AI_PLATFORM_FORMS,
    ":explain",
    tfserving.explain,
    "Explain the classification of photos",
    tfserving.EXPLAIN_ERRORS,
    response_model=ExplainResponse,
)

_ERRORS = error_responses(
    {
        400: "Invalid page token or page size, or a version past int64",
        401: "Missing or invalid bearer token",
        404: "Unknown model or version",
        503: "The model server cannot be asked (loading, or unreachable)",
    }
)
T = TypeVar("T", int, str)
DESCRIPTION = "Image classification that shows the glimpses it decided from (hard attention)"
PAGE_SIZE, MAX_PAGE_SIZE = 20, 100  # ml v1's default and maximum for list methods
_STATES = {
    VersionState.AVAILABLE: "READY",
    VersionState.LOADING: "CREATING",
    VersionState.UNLOADING: "DELETING",
}


class Version(GoogleJson):
    """ml v1 `Version`, with what the gateway knows of one version of a model."""

    name: str  # projects/{p}/models/{m}/versions/v{N}
    description: str | None = None
    is_default: Literal[True] | None = None  # proto3 JSON leaves out a false bool
    state: Literal["UNKNOWN", "READY", "CREATING", "FAILED", "DELETING"]
    error_message: str | None = None
    create_time: str | None = None  # the version folder's time, when the gateway has it
    framework: Literal["TENSORFLOW"] = "TENSORFLOW"
    runtime_version: str | None = None  # TensorFlow's major.minor, when it runs in-process
    python_version: str
    # Google's user labels: here the model config's version labels that name this version,
    # each as `<label>: version-label` (TF Serving's own labels cannot be listed).
    labels: dict[str, str] | None = None


class Model(GoogleJson):
    """ml v1 `Model`."""

    name: str  # projects/{p}/models/{m}
    description: str
    default_version: Version | None = None


class ModelList(GoogleJson):
    """ml v1 `ListModelsResponse`."""

    models: list[Model] | None = None
    next_page_token: str | None = None


class VersionList(GoogleJson):
    """ml v1 `ListVersionsResponse` (`{}` when there are none, as Google answers)."""

    versions: list[Version] | None = None
    next_page_token: str | None = None


@functools.cache
def _tensorflow() -> str | None:
    """The installed TensorFlow's major.minor (a package-metadata search: once a process)."""
    try:
        return ".".join(metadata.version("tensorflow").split(".")[:2])
    except metadata.PackageNotFoundError:
        return None


def _create_time(model: ServedModel, number: int) -> str | None:
    path = model.config.base_path / str(number)
    if not path.is_dir():
        return None
    when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def version_resource(
    model: ServedModel, project: str, number: int, default: int | None, in_process: bool
) -> Version:
    """One version, as ml v1's `Version`; `default` is the version requests without one get
    (asked once per request)."""
    served = model.versions.get(number)
    error = None
    if served is not None and served.error:
        status, error = "FAILED", f"model failed to load: {served.error}"
    elif served is not None and served.state in _STATES:
        status = _STATES[served.state]
    else:
        status = "UNKNOWN"
    if status in ("READY", "CREATING"):
        where = "in-process" if in_process else "by TF Serving"
        description = f"Served {where}" + (
            ": requests without a version get this one" if number == default else ""
        )
    else:
        description = (
            f"Not served: this gateway serves version {default} (version policy"
            f" {model.config.policy.describe()})"
        )
    labels = {
        name: "version-label" for name, v in sorted(model.config.labels.items()) if v == number
    }
    return Version(
        name=f"projects/{project}/models/{model.name}/versions/v{number}",
        description=description,
        is_default=True if number == default else None,
        state=status,
        error_message=error,
        create_time=_create_time(model, number),
        runtime_version=_tensorflow() if in_process else None,
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        labels=labels or None,
    )


@dataclass(frozen=True)
class Paging:
    """ml v1's list parameters, for any list of items kept in their order."""

    size: int
    token: str | None
    filter: str | None

    def page(
        self, items: list[T], prefix: str, after: Callable[[str], T], what: str
    ) -> tuple[list[T], str | None]:
        """One page of `items` and the next page's token. A token is opaque to clients: the
        last item listed (`prefix` + the item), so an item that comes or goes between two
        pages shifts nothing; `after` reads the item back, ValueError if it cannot. `filter`
        is refused: every `what` is listed."""
        if self.filter:
            raise InvalidInput(f"filter: not supported here; every {what} is listed")
        size = min(self.size or PAGE_SIZE, MAX_PAGE_SIZE)  # 0 is proto3's "not set"
        remaining = items
        if self.token:
            token = self.token
            try:
                text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
                if not text.startswith(prefix):
                    raise ValueError(text)
                last = after(text.removeprefix(prefix))
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise InvalidInput("pageToken: not a token this server issued") from None
            remaining = [i for i in items if i > last]  # type: ignore[operator]
        page = remaining[:size]
        if len(remaining) <= size:
            return page, None
        last = f"{prefix}{page[-1]}".encode()
        return page, base64.urlsafe_b64encode(last).decode().rstrip("=")


async def paging(
    page_size: Annotated[int, Query(alias="pageSize", ge=0, le=2**31 - 1)] = 0,
    page_token: Annotated[str | None, Query(alias="pageToken", max_length=64)] = None,
    filter_: Annotated[str | None, Query(alias="filter", max_length=1024)] = None,
) -> Paging:
    return Paging(page_size, page_token, filter_)


PagingDep = Annotated[Paging, Depends(paging)]


def _version_number(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,19}", text):
        raise ValueError(text)
    return int(text)


def _model_name(text: str) -> str:
    if not re.fullmatch(MODEL_NAME, text):
        raise ValueError(text)
    return text


def _model(plane: DataPlane, project: str, model: ServedModel) -> Model:
    default = model.default_number()
    return Model(
        name=f"projects/{project}/models/{model.name}",
        description=DESCRIPTION,
        default_version=(
            None
            if default is None
            else version_resource(model, project, default, default, plane.in_process)
        ),
    )


@router.get(
    "/v1/projects/{project}/models",
    response_model=ModelList,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="The served models, by name (ml v1 projects.models.list)",
)
async def list_models(project: str, plane: PlaneDep, paging: PagingDep) -> ModelList:
    page, token = paging.page(sorted(plane.models), "m/", _model_name, "model")
    return ModelList(
        models=[_model(plane, project, plane.model(name)) for name in page] or None,
        next_page_token=token,
    )


@router.get(
    "/v1/projects/{project}/models/{model}",
    response_model=Model,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="The model, with its default version (ml v1 projects.models.get)",
)
async def get_model(project: str, model: str, plane: PlaneDep) -> Model:
    return _model(plane, project, plane.model(model))


@router.get(
    "/v1/projects/{project}/models/{model}/versions",
    response_model=VersionList,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="The model's versions, lowest first (ml v1 projects.models.versions.list)",
)
async def list_versions(
    project: str, model: str, plane: PlaneDep, paging: PagingDep
) -> VersionList:
    served = plane.model(model)
    page, token = paging.page(await plane.versions(model), "v", _version_number, "version")
    default = served.default_number()
    return VersionList(
        versions=[version_resource(served, project, v, default, plane.in_process) for v in page]
        or None,
        next_page_token=token,
    )


@router.get(
    "/v1/projects/{project}/models/{model}/versions/{version}",
    response_model=Version,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="One version, by `vN`, `N` or a version label (ml v1 projects.models.versions.get)",
)
async def get_version(project: str, model: str, version: str, plane: PlaneDep) -> Version:
    served = plane.model(model)
    number = await served.number_of(VersionRef.name(version))
    if number not in await plane.versions(model):
        raise no_such_version(model, number)
    return version_resource(served, project, number, served.default_number(), plane.in_process)
