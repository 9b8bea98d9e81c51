"""kserve's own clients (`InferenceRESTClient`, `InferenceGRPCClient`) against a gateway, as
a script: kserve's generated `inference` protos and Triton's (tritonclient, imported by the
other tests) register the same proto symbols, so one process cannot hold both. The test runs
this in a subprocess, writes what to call as JSON on its stdin (importing kserve parses the
process's own command line with the model server's options) and reads one JSON object from
its stdout:

    echo '{"url": "http://127.0.0.1:8080", "grpc": "127.0.0.1:8081", "photo": "cat.png",
           "models": ["saccader"], "token": null}' | python -m tests.kserve_clients

For each model: server and model readiness over REST and gRPC, then `class_names[0]` and
`classes[0]` of one photo over REST with JSON data (base64 text, as KServe's image examples
send it), REST with binary data, gRPC, and kserve's v1 client (TF Serving's `:predict`); and
what each client raises for an unknown model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


async def run(url: str, address: str, photo: bytes, models: list[str], token: str | None):
    import grpc
    import httpx
    from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

    headers = {"authorization": f"Bearer {token}"} if token else None
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", timeout=120))
    out: dict[str, Any] = {
        "rest_server_ready": await rest.is_server_ready(url, headers=headers),
        "models": {},
    }

    def request(model: str, binary: bool) -> InferRequest:
        image = InferInput("input_image_bytes", [1], "BYTES")
        value = photo if binary else base64.b64encode(photo)
        image.set_data_from_numpy(np.array([value], dtype=object), binary_data=binary)
        wanted = [RequestedOutput("class_names"), RequestedOutput("classes")]
        return InferRequest(model, [image], request_outputs=wanted)

    def top(response) -> dict[str, Any]:
        by_name = {o.name: o.as_numpy() for o in response.outputs}
        name = by_name["class_names"].reshape(-1)[0]
        return {
            "class_name": name.decode() if isinstance(name, bytes) else str(name),
            "class": int(by_name["classes"].reshape(-1)[0]),
            "model_version": response.model_version,
        }

    async with InferenceGRPCClient(address, timeout=120, retries=0) as rpc:
        out["grpc_server_ready"] = await rpc.is_server_ready(headers=metadata)
        for model in models:
            answers: dict[str, Any] = {
                "rest_model_ready": await rest.is_model_ready(url, model, headers=headers),
                "grpc_model_ready": await rpc.is_model_ready(model, headers=metadata),
            }
            json_body = request(model, False)
            answers["rest_json"] = top(await rest.infer(url, json_body, model, headers=headers))
            binary = request(model, True)
            answers["rest_binary"] = top(await rest.infer(url, binary, model, headers=headers))
            answers["grpc"] = top(await rpc.infer(request(model, True), headers=metadata))
            instances = {
                "instances": [{"input_image_bytes": {"b64": base64.b64encode(photo).decode()}}]
            }
            predicted = await v1.infer(url, instances, model, headers=headers)
            first = predicted["predictions"][0]
            answers["v1"] = {
                "class_name": first["top_class"]["label"],
                "class": first["classes"][0],
            }
            out["models"][model] = answers
        try:
            await rest.infer(url, request("nope", True), "nope", headers=headers)
        except httpx.HTTPStatusError as e:
            out["rest_unknown_model"] = {"status": e.response.status_code, "message": str(e)}
        try:
            await rpc.infer(request("nope", True), headers=metadata)
        except grpc.RpcError as e:
            out["grpc_unknown_model"] = {"code": e.code().name, "message": e.details()}
    return out


def main() -> None:
    given = json.loads(sys.stdin.read())
    photo = Path(given["photo"]).read_bytes()
    result = asyncio.run(
        run(given["url"], given["grpc"], photo, given["models"], given.get("token"))
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
