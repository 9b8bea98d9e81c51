"""A real HTTP server speaking TF Serving's REST API over a SavedModel, for client tests.

No TF Serving binary exists here; this implements the routes a client uses
(https://www.tensorflow.org/tfx/serving/api_rest) with TF Serving's semantics: row-format
`instances` (named inputs per object, or bare values for a one-input signature) and columnar
`inputs`, `{"b64": ...}` decoded for string inputs, outputs whose name ends in `_bytes` encoded
as `{"b64": ...}`, other strings as UTF-8, one object per instance when the signature has
several outputs, and errors as `{"error": ...}` with 400 (invalid argument) or 404 (unknown
model, version or signature input). It has no `/healthz/*` routes, as TF Serving has none.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.savedmodel import load, metadata_body, signature_def_map, status_body


class BadRequest(Exception):
    """TF Serving's INVALID_ARGUMENT, which its REST layer answers with 400."""


class NotFoundError(Exception):
    """TF Serving's NOT_FOUND (404)."""


def _decode(value: Any) -> Any:
    """`{"b64": ...}` anywhere in a value -> bytes, as TF Serving does for string tensors."""
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise BadRequest(f"JSON object: does not have named input: {sorted(value)}")
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _encode(name: str, value: Any) -> Any:
    """A tensor (or one row of it) -> JSON as TF Serving writes it. String tensors come from
    `.numpy()` as object arrays of bytes (never numpy's "S" dtype, which drops trailing NULs)."""
    if isinstance(value, bytes) or (isinstance(value, np.ndarray) and value.dtype == object):
        values = value.tolist() if isinstance(value, np.ndarray) else value
        if name.endswith("_bytes"):
            return _map(values, lambda b: {"b64": base64.b64encode(b).decode("ascii")})
        return _map(values, lambda b: b.decode("utf-8"))
    return np.asarray(value).tolist()


def _map(value: Any, fn) -> Any:
    if isinstance(value, bytes):
        return fn(value)
    return [_map(v, fn) for v in value]


class SavedModelServable:
    def __init__(self, name: str, version_dir: Path):
        self.name, self.version = name, int(version_dir.name)
        self.model = load(version_dir)  # shared with every gateway of the test process
        self.signature_map = signature_def_map(version_dir)
        self.calls = 0

    def check(self, model: str, version: str | None) -> None:
        if model != self.name:
            raise NotFoundError(f"Servable not found for request: Latest({model})")
        if version is not None and version != str(self.version):
            raise NotFoundError(f"Servable not found for request: Specific({model}, {version})")

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("signature_name") or "serving_default"
        if name not in self.model.signatures:
            raise BadRequest(f'Serving signature name: "{name}" not found in signature def')
        fn = self.model.signatures[name]
        specs = fn.structured_input_signature[1]
        if ("instances" in body) == ("inputs" in body):
            raise BadRequest("Missing 'inputs' or 'instances' key")
        row_format = "instances" in body
        if row_format:
            rows = body["instances"]
            if not isinstance(rows, list) or not rows:
                raise BadRequest("'instances' must be a non-empty list")
            if all(isinstance(r, dict) for r in rows):
                columns = {k: [r.get(k) for r in rows] for k in specs}
                for i, r in enumerate(rows):
                    if set(r) != set(specs):
                        raise BadRequest(
                            f"instances[{i}]: expected inputs {sorted(specs)}, got {sorted(r)}"
                        )
            elif len(specs) == 1:
                columns = {next(iter(specs)): rows}
            else:
                raise BadRequest(f"signature has inputs {sorted(specs)}; name them per instance")
        else:
            given = body["inputs"]
            columns = given if isinstance(given, dict) else {next(iter(specs)): given}
        tensors = {}
        for key, spec in specs.items():
            if key not in columns:
                raise BadRequest(f"input size does not match signature: missing {key}")
            try:
                tensors[key] = tf.constant(_decode(columns[key]), dtype=spec.dtype)
            except (TypeError, ValueError) as e:
                raise BadRequest(f"{key}: {e}") from None
        try:
            outputs = {k: v.numpy() for k, v in fn(**tensors).items()}
        except tf.errors.InvalidArgumentError as e:
            raise BadRequest(e.message) from None
        self.calls += 1
        if not row_format:
            return {"outputs": {k: _encode(k, v) for k, v in outputs.items()}}
        n = len(next(iter(tensors.values())))
        if len(outputs) == 1:
            ((k, v),) = outputs.items()
            return {"predictions": [_encode(k, v[i]) for i in range(n)]}
        return {
            "predictions": [{k: _encode(k, v[i]) for k, v in outputs.items()} for i in range(n)]
        }


def create_app(servable: SavedModelServable) -> Starlette:
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def model_status(request: Request) -> JSONResponse:
        p = request.path_params
        try:
            servable.check(p["model"], p.get("version"))
        except NotFoundError as e:
            return error(404, str(e))
        return JSONResponse(status_body([(servable.version, "AVAILABLE", None)]))

    async def model_metadata(request: Request) -> JSONResponse:
        p = request.path_params
        try:
            servable.check(p["model"], p.get("version"))
        except NotFoundError as e:
            return error(404, str(e))
        return JSONResponse(metadata_body(servable.name, servable.version, servable.signature_map))

    async def predict(request: Request) -> JSONResponse:
        p = request.path_params
        try:
            servable.check(p["model"], p.get("version"))
            body = await request.json()
            if not isinstance(body, dict):
                raise BadRequest("JSON Value: is not an object")
            return JSONResponse(await run_in_threadpool(servable.predict, body))
        except NotFoundError as e:
            return error(404, str(e))
        except BadRequest as e:
            return error(400, str(e))
        except ValueError:
            return error(400, "JSON Parse error: Invalid value")

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error(404, f"Malformed request: {request.method} {request.url.path}")

    routes = []
    for prefix in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}"):
        routes += [
            Route(prefix, model_status, methods=["GET"]),
            Route(prefix + "/metadata", model_metadata, methods=["GET"]),
            Route(prefix + ":predict", predict, methods=["POST"]),
        ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


@contextmanager
def tfserving_rest_server(version_dir: Path, name: str = "saccader"):
    """Serve `version_dir` (a `<name>/<version>/` SavedModel) on a free 127.0.0.1 port;
    yields (url, servable)."""
    servable = SavedModelServable(name, version_dir)
    config = uvicorn.Config(
        create_app(servable), host="127.0.0.1", port=0, log_config=None, loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("TF Serving REST test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", servable
    finally:
        server.should_exit = True
        thread.join(timeout=30)
