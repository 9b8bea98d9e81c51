"""The gateway application: `create_app(settings)` wires the data plane, the protocol
adapters, errors, middleware and lifespan.

Nothing happens at import time; the models load in the background after start-up so that
liveness answers at once and readiness turns green only after a real warm-up inference.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import errors, priority
from service.backends import Backend, make_backend
from service.batch.job_manager import JobManager
from service.dataplane import DataPlane
from service.error_body import error_body
from service.instances import explain_validation
from service.metrics import Metrics
from service.middleware import GatewayMiddleware
from service.routes import aiplatform, demo, health, jobs, oip, tfserving, vertex
from service.settings import GatewaySettings

log = logging.getLogger(__name__)

# The one place where domain errors become HTTP.
ERROR_STATUS: dict[type[errors.GlimpseError], int] = {
    errors.InvalidInput: 400,
    errors.Unauthorized: 401,
    errors.ModelNotFound: 404,
    errors.JobNotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.Overloaded: 429,
    errors.BackendError: 500,
    errors.NotReady: 503,
    errors.BackendUnavailable: 503,
    errors.BackendTimeout: 504,
}
RETRY_AFTER_S = {429: "1", 503: "5"}


def _error(request: Request, status: int, message: str) -> JSONResponse:
    """Every HTTP error's one way out: the message bounded (validation messages too)."""
    headers = {"Retry-After": RETRY_AFTER_S[status]} if status in RETRY_AFTER_S else None
    body = error_body(request.url.path, status, errors.clip(message, errors.MESSAGE_LIMIT))
    return JSONResponse(body, status_code=status, headers=headers)


def _openapi_as_answered(app: FastAPI) -> None:
    """Validation errors are answered 400 `{"error": ...}` (`invalid_body` below), never with
    FastAPI's 422 body, so the document must not promise one."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema

    app.openapi = openapi


def create_app(settings: GatewaySettings, backend: Backend | None = None) -> FastAPI:
    """The gateway for `settings`; `backend` replaces the configured one (tests)."""
    metrics = Metrics()
    plane = DataPlane(settings, backend or make_backend(settings), metrics)
    manager = JobManager(settings, plane) if settings.jobs_enabled else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # asyncio.to_thread's pool (body parsing, storage, file reads) below the event loop.
        asyncio.get_running_loop().set_default_executor(
            priority.worker_threads(
                min(32, (os.cpu_count() or 1) + 4), "worker", settings.worker_nice
            )
        )
        grpc_server = None
        if settings.grpc_port is not None:
            from service.routes.oip_grpc import start_server

            grpc_server, app.state.grpc_port = await start_server(
                plane, settings.host, settings.grpc_port
            )
        loading = asyncio.create_task(plane.start(), name="model-load")
        if manager is not None:
            await manager.start()
        yield
        if manager is not None:
            manager.interrupt()
        plane.shutting_down = True
        if grpc_server is not None:
            await grpc_server.stop(settings.shutdown_grace_s)
        if not loading.done():
            loading.cancel()
        if manager is not None:
            await manager.close(settings.shutdown_grace_s)
        await plane.close()

    app = FastAPI(
        title="Glimpse",
        version="0.1.0",
        summary="Image classification that shows the glimpses it decided from.",
        description=(
            "TF Serving / AI Platform compatible prediction API. The class is computed from the"
            " glimpse pixels only (hard attention), so the glimpses are a faithful explanation."
        ),
        lifespan=lifespan,
    )
    app.state.plane = plane
    app.state.jobs = manager

    @app.exception_handler(errors.GlimpseError)
    async def domain_error(request: Request, exc: errors.GlimpseError):
        status = next((s for kind, s in ERROR_STATUS.items() if isinstance(exc, kind)), 500)
        return _error(request, status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        return _error(request, 400, explain_validation(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        cause = exc.__cause__
        if isinstance(cause, RecursionError):  # FastAPI's body parse, deep nesting
            return _error(request, 400, "JSON Parse error: nested deeper than the parser allows")
        if exc.status_code == 400 and cause is not None:  # FastAPI's "error parsing the body"
            if isinstance(cause, UnicodeDecodeError):
                reason = f"the body is not UTF-8 (byte {cause.start})"
            else:  # e.g. an integer of more digits than Python converts (4,300)
                reason = str(cause).split(";")[0]
            return _error(request, 400, f"JSON Parse error: {reason}")
        return _error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error")
        return _error(request, 500, f"internal error ({type(exc).__name__}); see the server log")

    # Protocol adapters over the one data plane. A request is matched against the routes in
    # this order: the prediction paths first (Vertex's and the jobs' many routes cost a
    # v2 or TF Serving request a tenth of a millisecond when matched before them).
    app.include_router(health.router)
    app.include_router(tfserving.router)
    app.include_router(oip.router)
    app.include_router(oip.models)
    app.include_router(aiplatform.router)
    app.include_router(vertex.router)
    if manager is not None:
        app.include_router(jobs.router)
    app.include_router(demo.router)
    _openapi_as_answered(app)
    app.add_middleware(
        GatewayMiddleware,
        metrics=metrics,
        max_body=settings.max_payload_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_header_bytes=settings.max_header_bytes,
    )
    return app
