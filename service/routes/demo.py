"""The browser demo: one page at `/`, its assets under `/demo/`, and the little it must know.

Plain files from service/static/ with no build step and nothing fetched from the internet, so
the demo works in a cluster without egress. Assets are looked up in a fixed table, so no part of
a URL ever becomes a file-system path. Every response carries the security headers: the CSP
allows scripts and styles from this origin only (no inline script), so a class label or an error
message can never run as code, and the page cannot be framed (clickjacking).

The page calls the public API (`:predict`, `:explain`) like any other client; it holds no
privilege of its own, which is why it needs no token: the API still asks for one.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse, Response

from service.routes.deps import PlaneDep

STATIC = Path(__file__).resolve().parent.parent / "static"

# name -> media type. ES modules need a JavaScript media type, which nosniff then enforces.
ASSETS = {
    "demo.css": "text/css; charset=utf-8",
    "demo.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "photo.js": "text/javascript; charset=utf-8",
    "glimpses.js": "text/javascript; charset=utf-8",
    "explain.js": "text/javascript; charset=utf-8",
    "own.js": "text/javascript; charset=utf-8",
}

# img-src: `blob:` shows the user's own photo without uploading it anywhere; `data:` shows the
# explanation images the API returns as base64.
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    # Revalidate each load: a deploy must never pair a new page with a cached old script.
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["demo"], include_in_schema=False)


@lru_cache(maxsize=len(ASSETS) + 1)
def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _file(name: str, media_type: str) -> Response:
    """The whole file, whatever Range the client sends (RFC 9110 lets a server ignore it):
    these files are a few kB, and Starlette would answer a malformed Range in plain text."""
    return Response(_read(name), media_type=media_type, headers=SECURITY_HEADERS)


@router.get("/")
async def page() -> Response:
    """The demo page."""
    return _file("index.html", "text/html; charset=utf-8")


@router.get("/demo/config.json")
async def config(plane: PlaneDep) -> JSONResponse:
    """What the page must know before its first request: which models it can call (the
    default first chosen), whether to ask for a token, and the body limit (larger photos are
    scaled down in the browser to fit)."""
    settings = plane.settings
    body = {
        "model": plane.default_model,
        "models": sorted(plane.models),
        "auth_required": settings.auth_token is not None,
        "max_payload_bytes": settings.max_payload_bytes,
    }
    return JSONResponse(body, headers=SECURITY_HEADERS)


@router.get("/demo/{name}")
async def asset(name: str) -> Response:
    """A script or style sheet of the page."""
    if name not in ASSETS:
        raise HTTPException(404, f"no demo asset named {name!r}")
    return _file(name, ASSETS[name])
