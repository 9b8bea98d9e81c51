"""Open Inference Protocol v2 over gRPC (inference.GRPCInferenceService) with Triton's own gRPC
client against the live gateway (tiny model): the same class as :predict, metadata, health,
parameters, and errors as gRPC status codes."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from tests.conftest import body  # noqa: E402


@pytest.fixture(scope="module")
def client(gateway):
    port = gateway.app.state.grpc_port
    with grpcclient.InferenceServerClient(f"127.0.0.1:{port}") as c:
        yield c


def _image(photo: bytes):
    image = grpcclient.InferInput("input_image_bytes", [1], "BYTES")
    image.set_data_from_numpy(np.array([photo], dtype=object))
    return image


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("saccader") and client.is_model_ready("saccader", "1")
    assert not client.is_model_ready("nope")
    assert "binary_tensor_data" in client.get_server_metadata().extensions
    meta = client.get_model_metadata("saccader")
    assert meta.name == "saccader" and list(meta.versions) == ["1"]
    inputs = {t.name: (t.datatype, list(t.shape)) for t in meta.inputs}
    assert inputs == {"input_image_bytes": ("BYTES", [-1])}


def test_infer_gives_the_class_predict_gives(client, gateway, photo_bytes):
    r = httpx.post(f"{gateway.url}/v1/models/saccader:predict", json=body(photo_bytes), timeout=60)
    expected = r.json()["predictions"][0]["top_class"]
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("class_names", "scores")]
    result = client.infer("saccader", [_image(photo_bytes)], outputs=outputs, request_id="g1")
    assert result.as_numpy("class_names")[0, 0].decode() == expected["label"]
    assert result.as_numpy("scores")[0, 0] == pytest.approx(expected["score"], rel=1e-4)
    response = result.get_response()
    assert response.id == "g1" and response.model_version == "1"
    assert [o.name for o in response.outputs] == ["class_names", "scores"]


def test_parameters_and_every_output_by_default(client, photo_bytes):
    result = client.infer(
        "saccader", [_image(photo_bytes)], parameters={"num_glimpses": 3, "top_k": 2}
    )
    assert result.as_numpy("glimpse_boxes").shape == (1, 3, 4)
    assert result.as_numpy("classes").shape == (1, 2)
    assert result.as_numpy("annotated_image_bytes")[0].startswith(b"\xff\xd8")


@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        (lambda c, p: c.infer("nope", [_image(p)]), "StatusCode.NOT_FOUND", "nope"),
        (
            lambda c, p: c.infer("saccader", [_image(p)], model_version="7"),
            "StatusCode.NOT_FOUND",
            "7",
        ),
        (
            lambda c, p: c.infer("saccader", [_image(b"not an image")]),
            "StatusCode.INVALID_ARGUMENT",
            "input_image_bytes[0]",
        ),
        (
            lambda c, p: c.infer(
                "saccader", [_image(p)], outputs=[grpcclient.InferRequestedOutput("logits")]
            ),
            "StatusCode.INVALID_ARGUMENT",
            "unknown outputs ['logits']",
        ),
    ],
)
def test_errors_are_grpc_status_codes_naming_the_problem(client, photo_bytes, call, code, message):
    with pytest.raises(InferenceServerException) as caught:
        call(client, photo_bytes)
    assert caught.value.status() == code and message in caught.value.message()


def test_a_wrong_datatype_is_invalid_argument(client):
    wrong = grpcclient.InferInput("input_image_bytes", [1], "FP32")
    wrong.set_data_from_numpy(np.zeros(1, np.float32))
    with pytest.raises(InferenceServerException, match="is BYTES, not 'FP32'") as caught:
        client.infer("saccader", [wrong])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


@pytest.mark.parametrize(("text", "port"), [("", None), ("off", None), ("0", 0), ("9001", 9001)])
def test_the_grpc_port_setting(monkeypatch, text, port):
    from service.settings import GatewaySettings

    monkeypatch.setenv("GLIMPSE_GRPC_PORT", text)
    assert GatewaySettings().grpc_port == port


def test_a_port_in_use_is_a_clear_start_up_error(gateway):
    """A second gateway on the same machine must move its gRPC port; it says so."""
    import asyncio

    from service.routes.oip_grpc import start_server

    taken = gateway.app.state.grpc_port
    plane = gateway.app.state.plane
    with pytest.raises(RuntimeError, match=f"cannot listen for gRPC on 127.0.0.1:{taken}"):
        asyncio.run(start_server(plane, "127.0.0.1", taken))
