"""AI Platform's model and version resources (ml v1 `projects.models.get`,
`projects.models.versions.get` and `projects.models.versions.list`) for the one model this
gateway serves, so that clients and tools written for ml.googleapis.com can look it up.

The versions are those the gateway can tell of (service/versions.py): the embedded backend's
version directories, or the versions TF Serving lists. One deployment serves one version, the
default: it is READY, CREATING while loading or FAILED with the load error; any other is
listed as found, state UNKNOWN, its description saying which version serves. A version name
is `vN`, `N` or a version label, as in the predict and explain URLs. No server path is shown
(there is no `deploymentUri`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from service import serving, versions
from service.errors import InvalidInput
from service.routes.deps import StateDep, error_responses, require_token
from service.schemas import GoogleJson
from service.state import GatewayState
from service.versions import VersionForm

router = APIRouter(tags=["models"], dependencies=[Depends(require_token)])
_ERRORS = error_responses(
    {
        400: "Invalid page token or page size, or a version past int64",
        401: "Missing or invalid bearer token",
        404: "Unknown model or version",
        503: "The model server cannot be asked (loading, or unreachable)",
    }
)
DESCRIPTION = "ImageNet classification that shows the glimpses it decided from (hard attention)"
PAGE_SIZE, MAX_PAGE_SIZE = 20, 100  # ml v1's default and maximum for list methods


class Version(GoogleJson):
    """ml v1 `Version`, with what the gateway knows of one version of its model."""

    name: str  # projects/{p}/models/{m}/versions/v{N}
    description: str | None = None
    is_default: Literal[True] | None = None  # proto3 JSON leaves out a false bool
    state: Literal["UNKNOWN", "READY", "CREATING", "FAILED"]
    error_message: str | None = None
    create_time: str | None = None  # the version directory's time, when the gateway has it
    framework: Literal["TENSORFLOW"] = "TENSORFLOW"
    runtime_version: str | None = None  # TensorFlow's major.minor, when it runs in-process
    python_version: str
    # Google's user labels: here the gateway's version labels that name this version, each
    # as `<label>: version-label` (TF Serving's own labels cannot be listed).
    labels: dict[str, str] | None = None


class Model(GoogleJson):
    """ml v1 `Model`."""

    name: str  # projects/{p}/models/{m}
    description: str
    default_version: Version | None = None


class VersionList(GoogleJson):
    """ml v1 `ListVersionsResponse` (`{}` when there are none, as Google answers)."""

    versions: list[Version] | None = None
    next_page_token: str | None = None


def _create_time(state: GatewayState, version: int) -> str | None:
    path = state.settings.model_base / str(version)
    if not path.is_dir():
        return None
    when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.cache
def _tensorflow() -> str | None:
    """The installed TensorFlow's major.minor (a package-metadata search: once a process)."""
    try:
        return ".".join(metadata.version("tensorflow").split(".")[:2])
    except metadata.PackageNotFoundError:
        return None


def _runtime(state: GatewayState) -> str | None:
    """The TensorFlow that runs the model, for the embedded backend (TF Serving's own is not
    known to the gateway)."""
    return _tensorflow() if state.settings.backend == "embedded" else None


def _state(state: GatewayState) -> tuple[str, str | None]:
    """The default version's state and error, from the gateway's own load and readiness."""
    if state.load_error:
        return "FAILED", f"model failed to load: {state.load_error}"
    if not state.predictor.is_ready():
        return "CREATING", None
    return "READY", None


def version_resource(
    state: GatewayState, project: str, version: int, default: int | None
) -> Version:
    """One version, as ml v1's `Version`; `default` is the version requests without one get
    (versions.default_version, asked once per request)."""
    model = state.settings.model_name
    if version == default:
        status, error = _state(state)
        backend = "in-process" if state.settings.backend == "embedded" else "by TF Serving"
        description = f"Served {backend}: requests without a version get this one"
    else:
        status, error = "UNKNOWN", None
        description = (
            f"Not served: this gateway serves version {default} (one deployment serves one"
            " version; GLIMPSE_MODEL_VERSION chooses it)"
        )
    labels = {
        name: "version-label"
        for name, labelled in sorted(state.settings.version_labels.items())
        if labelled == version
    }
    return Version(
        name=f"projects/{project}/models/{model}/versions/v{version}",
        description=description,
        is_default=True if version == default else None,
        state=status,
        error_message=error,
        create_time=_create_time(state, version),
        runtime_version=_runtime(state),
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        labels=labels or None,
    )


def _token(version: int) -> str:
    """An opaque page token: the last version seen, so a version that comes or goes between
    two pages shifts nothing."""
    return base64.urlsafe_b64encode(f"v{version}".encode()).decode().rstrip("=")


def _read_token(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not re.fullmatch(r"v[0-9]{1,19}", text):
        raise InvalidInput("pageToken: not a token this server issued")
    return int(text[1:])


@router.get(
    "/v1/projects/{project}/models/{model}",
    response_model=Model,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="The model, with its default version (ml v1 projects.models.get)",
)
async def get_model(project: str, model: str, state: StateDep) -> Model:
    serving.check_model(state, model)
    default = versions.default_version(state)
    return Model(
        name=f"projects/{project}/models/{model}",
        description=DESCRIPTION,
        default_version=(
            None if default is None else version_resource(state, project, default, default)
        ),
    )


@router.get(
    "/v1/projects/{project}/models/{model}/versions",
    response_model=VersionList,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="The model's versions, lowest first (ml v1 projects.models.versions.list)",
)
async def list_versions(
    project: str,
    model: str,
    state: StateDep,
    page_size: Annotated[int, Query(alias="pageSize", ge=0, le=2**31 - 1)] = 0,
    page_token: Annotated[str | None, Query(alias="pageToken", max_length=64)] = None,
    filter_: Annotated[str | None, Query(alias="filter", max_length=1024)] = None,
) -> VersionList:
    serving.check_model(state, model)
    if filter_:
        raise InvalidInput("filter: not supported here; every version is listed")
    size = min(page_size or PAGE_SIZE, MAX_PAGE_SIZE)  # 0 is proto3's "not set"
    after = _read_token(page_token) if page_token else -1
    remaining = [v for v in await versions.known_versions(state) if v > after]
    page = remaining[:size]
    default = versions.default_version(state)
    return VersionList(
        versions=[version_resource(state, project, v, default) for v in page] or None,
        next_page_token=_token(page[-1]) if len(remaining) > size else None,
    )


@router.get(
    "/v1/projects/{project}/models/{model}/versions/{version}",
    response_model=Version,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="One version, by `vN`, `N` or a version label (ml v1 projects.models.versions.get)",
)
async def get_version(project: str, model: str, version: str, state: StateDep) -> Version:
    named = await versions.resolve(state, model, version, VersionForm.NAME)
    number = serving.parse_version(named)
    if number not in await versions.known_versions(state):
        raise versions.no_such_version(model, str(number))
    return version_resource(state, project, number, versions.default_version(state))
