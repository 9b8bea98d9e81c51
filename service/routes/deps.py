"""Dependencies shared by the routers: the gateway state, auth, content type, model lookup."""

from __future__ import annotations

import re
import secrets
from typing import Annotated

from fastapi import Depends, Request

from service.errors import ModelNotFound, NotReady, Unauthorized, UnsupportedMediaType
from service.state import GatewayState


def get_state(request: Request) -> GatewayState:
    return request.app.state.gateway


StateDep = Annotated[GatewayState, Depends(get_state)]


def require_token(request: Request, state: StateDep) -> None:
    expected = state.settings.auth_token
    if expected is None:
        return
    given = request.headers.get("authorization", "")
    if not secrets.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        raise Unauthorized("missing or invalid bearer token")


def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"content type must be application/json, not {content_type or 'missing'}"
        )


_PATH_PARAMETERS = {
    "project": "Cloud project (AI Platform URL form); not checked, one deployment serves one",
    "model": "Model name",
    "version": "Model version: `N` or `vN`",
}


def path_parameters(path: str) -> dict:
    """OpenAPI `parameters` for a route whose handler reads `request.path_params` itself (one
    handler serves several URL forms), so that the documented path templates are complete."""
    names = re.findall(r"{(\w+)}", path)
    return {
        "parameters": [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": _PATH_PARAMETERS[name],
            }
            for name in names
        ]
    }


_VERSION = re.compile(r"^v?(\d{1,18})$")


def parse_version(text: str | None) -> int | None:
    """TF Serving versions are numbers; AI Platform's are names, accepted here as `v<N>`."""
    if text is None:
        return None
    match = _VERSION.match(text)
    if not match:
        raise ModelNotFound(f"Could not find version {text}")
    return int(match.group(1))


def served_model(state: GatewayState, model: str, version: str | None) -> int | None:
    """Check the model name and version against what is served; return the version asked."""
    if model != state.settings.model_name:
        raise ModelNotFound(f"Servable not found for request: Latest({model})")
    wanted = parse_version(version)
    if state.load_error:
        raise NotReady(f"model failed to load: {state.load_error}")
    return wanted
