"""Which version a URL names, and which versions the gateway can tell of.

TF Serving's `/versions/{N}` takes numbers (the gateway also reads AI Platform's `vN` there),
its `/labels/{label}` takes labels, and AI Platform's `versions/{name}` takes `N`, `vN` or a
label (`versions/prod` is the version labelled `prod`). Labels are the gateway's own first
(GLIMPSE_VERSION_LABELS, as TF Serving's models.config `version_labels`); any other is asked
of the model server, so TF Serving's own labels work and TF Serving refuses the unknown ones
(the embedded backend has no others). Everything resolves to a number before admission
(service/serving.py), which then asks the backend whether it serves that version.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from service import savedmodel, serving
from service.errors import InvalidInput, ModelNotFound, NotReady
from service.settings import LABEL_NAME, VERSION_NAME

if TYPE_CHECKING:
    from service.state import GatewayState


class VersionForm(StrEnum):
    """How a URL names a version, where it is not a number (TF Serving's /versions/{N} is
    read by admission directly)."""

    LABEL = "label"  # TF Serving's /labels/{label}
    NAME = "name"  # AI Platform's versions/{name}: N, vN or a label


def no_such_version(model: str, name: str) -> ModelNotFound:
    """TF Serving's words for a version it does not have, for any name."""
    return ModelNotFound(f"Could not find version {name} of model {model}")


async def resolve(
    state: GatewayState, model: str, text: str | None, form: VersionForm
) -> str | None:
    """The version `text` names, as admission reads it: a number (numbers and `vN` as given).

    An unknown label is TF Serving's 400 "Unrecognized servable version label" on TF
    Serving's label routes; on AI Platform's routes a version name that names nothing is a
    404, as any unknown resource there. The model name is checked first, as admission does.
    """
    if text is None:
        return text
    serving.check_model(state, model)
    if form is VersionForm.NAME and VERSION_NAME.fullmatch(text):
        return text
    configured = state.settings.version_labels.get(text)
    if configured is not None:
        return str(configured)
    if form is VersionForm.NAME and not LABEL_NAME.fullmatch(text):
        raise no_such_version(model, text)
    serving.admit(state, model, None)  # the model server is asked: it must be up
    try:
        body = await state.predictor.metadata(text)
    except InvalidInput:
        if form is VersionForm.NAME:
            raise no_such_version(model, text) from None
        raise
    return str(body["model_spec"]["version"])


def default_version(state: GatewayState) -> int | None:
    """The version requests without one get: the served one once loaded, else the one that
    will be (the configured one, or the embedded backend's highest on disk); None when only
    TF Serving can say and it has not yet."""
    try:
        served = state.predictor.served_version(None)
    except (NotReady, ModelNotFound):
        served = None
    if served is not None:
        return served
    if state.settings.model_version is not None:
        return state.settings.model_version
    if state.settings.backend == "embedded":
        return next(iter(savedmodel.versions(state.settings.model_base)), None)
    return None


async def known_versions(state: GatewayState) -> list[int]:
    """Every version the gateway can tell of, lowest first: the embedded backend's version
    directories, or those TF Serving's status lists once connected; and the default one
    (which may be missing from disk, and then failed to load)."""
    found: set[int] = set()
    if state.settings.backend == "embedded":
        found.update(savedmodel.versions(state.settings.model_base))
    elif state.predictor.is_ready():
        body = await state.predictor.status(None)
        found.update(int(v["version"]) for v in body.get("model_version_status", []))
    default = default_version(state)
    if default is not None:
        found.add(default)
    return sorted(found)
