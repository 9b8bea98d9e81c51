"""The fast tier of Open Inference Protocol v2: the REST and gRPC adapters through the app
factory with a fake backend (no TensorFlow), so every model and version the data plane serves,
each limit the other tensor forms have, and each refusal's v2 shape are checked in seconds.
The same adapters against the real model are in test_oip_rest.py and test_oip_grpc.py."""

from __future__ import annotations

import struct
import time

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service import timing
from service.app import create_app
from service.errors import Overloaded
from service.settings import GatewaySettings
from tests.conftest import encode
from tests.fake_backend import FakeBackend

pytestmark = pytest.mark.fast


CONFIG = """
model_config_list {
  config { name: "saccader" base_path: "%(base)s/saccader" model_platform: "tensorflow" }
  config { name: "parts" base_path: "%(base)s/parts" model_platform: "tensorflow"
           model_version_policy { all {} } }
}
"""


def _settings(tmp_path, **overrides) -> GatewaySettings:
    """Two models, `parts` with both its versions served (TF Serving's model config)."""
    config = tmp_path / "models.config"
    config.write_text(CONFIG % {"base": tmp_path})
    given = {"model_dir": tmp_path, "model_config_file": config, "log_format": "text"}
    return GatewaySettings(**{**given, "jobs_enabled": False, **overrides})


def _started(client: TestClient) -> TestClient:
    deadline = time.monotonic() + 10
    for path in ("/v2/health/ready", "/v2/models/parts/versions/1/ready", "/v2/models/parts/ready"):
        while client.get(path).status_code != 200:
            assert time.monotonic() < deadline, client.get(path).text
            time.sleep(0.005)
    return client


@pytest.fixture(scope="module")
def jpeg_bytes() -> bytes:
    return encode(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8), "JPEG")


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(versions={"saccader": [1], "parts": [1, 2]})


@pytest.fixture
def client(tmp_path, fake):
    with TestClient(create_app(_settings(tmp_path, grpc_port=0), fake)) as c:
        yield _started(c)


def _double(x: list[list[float]], **extra) -> dict:
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [len(x), 2], "data": x}],
        "parameters": {"signature_name": "double"},
        **extra,
    }


def _sizes(images: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A binary `sizes` request: the images as one BYTES tensor after the JSON header."""
    import json

    tail = b"".join(struct.pack("<I", len(b)) + b for b in images)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input_image_bytes",
                    "datatype": "BYTES",
                    "shape": [len(images)],
                    "parameters": {"binary_data_size": len(tail)},
                }
            ],
            "parameters": {"signature_name": "sizes"},
        }
    ).encode()
    return header + tail, {"Inference-Header-Content-Length": str(len(header))}


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    return body["error"]


def test_every_model_and_version_is_reachable(client):
    for path, version in [
        ("/v2/models/saccader/infer", "1"),
        ("/v2/models/parts/infer", "2"),  # the default: the newest
        ("/v2/models/parts/versions/1/infer", "1"),
    ]:
        r = client.post(path, json=_double([[1.0, 2.0], [3.0, -1.0]]))
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["model_version"] == version
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert outputs["y"] == {
            "name": "y",
            "datatype": "FP32",
            "shape": [2, 2],
            "data": [2.0, 4.0, 6.0, -2.0],
        }
        assert outputs["total"]["data"] == [6.0, 4.0]
    metadata = client.get("/v2/models/parts").json()
    assert metadata["versions"] == ["1", "2"] and metadata["parameters"]["served_version"] == "2"
    # No serving_default in this model: its first signature, named.
    assert metadata["parameters"]["signature_name"] == "double"
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
    assert client.get("/v2/models/parts/versions/1/ready").json() == {
        "name": "parts",
        "ready": True,
    }


def test_binary_images_and_the_outputs_asked_for(client, jpeg_bytes):
    body, headers = _sizes([jpeg_bytes, jpeg_bytes])
    r = client.post("/v2/models/saccader/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"  # no output asked in binary
    size = {o["name"]: o for o in r.json()["outputs"]}["size"]
    assert size["data"] == [len(jpeg_bytes)] * 2 and size["datatype"] == "INT64"


def test_server_timing_says_where_the_time_went(client, jpeg_bytes):
    body, headers = _sizes([jpeg_bytes])
    r = client.post("/v2/models/saccader/infer", content=body, headers=headers)
    spent = timing.parse(r.headers["server-timing"])
    assert {"decode", "queue", "total"} <= set(spent)
    assert spent["total"] >= spent["decode"] >= 0
    refused = timing.parse(client.post("/v2/models/nope/infer", json={}).headers["server-timing"])
    assert set(refused) == {"total"}  # refused before any stage ran


@pytest.mark.parametrize(
    ("path", "payload", "status", "message"),
    [
        ("/v2/models/nope/infer", _double([[1.0, 2.0]]), 404, "nope"),
        ("/v2/models/parts/versions/9/infer", _double([[1.0, 2.0]]), 404, "9"),
        ("/v2/models/parts/versions/x/infer", _double([[1.0, 2.0]]), 404, "version x"),
        ("/v2/models/parts/versions/99999999999999999999/infer", _double([]), 400, "numeric"),
        (
            "/v2/models/saccader/infer",
            {
                "inputs": [{"name": "x", "datatype": "INT8", "shape": [1, 2], "data": [1, 2]}],
                "parameters": {"signature_name": "double"},
            },
            400,
            "x is FP32, not 'INT8'",
        ),  # fmt: skip
        (
            "/v2/models/saccader/infer",
            {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}],
                "parameters": {"signature_name": "double"},
            },
            400,
            "does not fit x's [-1, 2]",
        ),  # fmt: skip
        (
            "/v2/models/saccader/infer",
            _double([[1.0, 2.0]], outputs=[{"name": "logits"}]),
            400,
            "unknown outputs ['logits']",
        ),
        (
            "/v2/models/saccader/infer",
            {"inputs": [], "parameters": {"signature_name": "nothing"}},
            400,
            '"nothing" not found',
        ),
    ],
)
def test_refusals_are_v2_errors_naming_the_problem(client, path, payload, status, message):
    assert message in _error(client.post(path, json=payload), status)


def test_the_tensor_forms_limits_hold(tmp_path, fake):
    """The same bounds as TF Serving's tensor forms (one check, DataPlane.infer): instances
    per request, counted before any image is read."""
    settings = _settings(tmp_path, grpc_port=None, max_instances=4)
    with TestClient(create_app(settings, fake)) as client:
        _started(client)
        r = client.post("/v2/models/saccader/infer", json=_double([[1.0, 2.0]] * 5))
        assert "5 instances" in _error(r, 400)
        r = client.post("/v2/models/saccader/infer", json=_double([[1.0, 2.0]] * 4))
        assert r.status_code == 200, r.text
        body, headers = _sizes([b"\xff\xd8\xff" + b"\0" * 10] * 60)
        r = client.post("/v2/models/saccader/infer", content=body, headers=headers)
        assert "60 instances" in _error(r, 400)  # not one of these "images" was read


def test_an_overloaded_model_is_429_with_retry_after(tmp_path, fake):
    fake.fail_with = Overloaded("busy; retry")
    with TestClient(create_app(_settings(tmp_path, grpc_port=None), fake)) as client:
        _started(client)
        r = client.post("/v2/models/saccader/infer", json=_double([[1.0, 2.0]]))
        assert "busy" in _error(r, 429) and "retry-after" in r.headers


def test_grpc_answers_every_model_with_server_timing(client):
    port = client.app.state.grpc_port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="parts", model_version="1")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        request.parameters["signature_name"].string_param = "double"
        request.raw_input_contents.append(np.array([[1.5, 2.0]], "<f4").tobytes())
        response, call = stub.ModelInfer.with_call(request)
        assert response.model_version == "1"
        names = [o.name for o in response.outputs]
        y = np.frombuffer(response.raw_output_contents[names.index("y")], "<f4")
        assert y.tolist() == [3.0, 4.0]
        spent = timing.parse(dict(call.trailing_metadata())["server-timing"])
        assert spent["total"] >= spent["queue"] >= 0
        request.model_name = "nope"
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert "nope" in refused.value.details()


def _refused_jpeg() -> bytes:
    """A valid JPEG the fake model refuses (its comment says REFUSE): the gateway's decoder
    passes it, the model's call fails on it."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(buf, "JPEG", comment=b"REFUSE")
    return buf.getvalue()


def test_concurrent_image_requests_share_model_calls(client, fake, jpeg_bytes):
    """A signature that reads only the images batches rows of concurrent requests (as TF
    Serving's and Triton's dynamic batching): while one call runs, the requests that arrive
    meanwhile ride the next one together, and each still gets exactly its own rows. An
    image the model refuses fails its own request alone."""
    from concurrent.futures import ThreadPoolExecutor

    fake.signature_delay_s = 0.3
    fake.signature_calls.clear()
    bodies = [_sizes([jpeg_bytes] * n) for n in (1, 2, 3, 1, 2)] + [_sizes([_refused_jpeg()])]

    def post(i: int):
        time.sleep(0.0 if i == 0 else 0.1)  # the first call holds the model
        body, headers = bodies[i]
        return client.post("/v2/models/saccader/infer", content=body, headers=headers)

    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(post, range(len(bodies))))
    for n, r in zip((1, 2, 3, 1, 2), answers, strict=False):
        assert r.status_code == 200, r.text
        size = {o["name"]: o for o in r.json()["outputs"]}["size"]
        assert size["shape"] == [n] and size["data"] == [len(jpeg_bytes)] * n
    assert "REFUSE" in _error(answers[-1], 400)
    rows = [n for name, n in fake.signature_calls if name == "sizes"]
    assert rows[0] == 1 and max(rows) >= 4, rows  # later requests shared a call
    assert rows.count(1) >= 9, rows  # the refused one's call, then each of its rows alone


def test_decode_budgets_and_the_answer_estimate_hold(tmp_path, fake):
    """The decoder's budgets name the v2 input; the answer's size is estimated from the
    signature's output shapes before the model runs (as for TF Serving's tensor forms)."""
    settings = _settings(
        tmp_path, grpc_port=None, max_image_pixels=10_000, max_instances=1000,
        max_answer_values=1000,
    )  # fmt: skip
    with TestClient(create_app(settings, fake)) as client:
        _started(client)
        big = encode(np.zeros((100, 200, 3), np.uint8), "JPEG")
        body, headers = _sizes([big])
        r = client.post("/v2/models/saccader/infer", content=body, headers=headers)
        message = _error(r, 400)
        assert "inputs.input_image_bytes[0]" in message and "over the limit of 10000" in message
        fake.signature_calls.clear()
        r = client.post("/v2/models/saccader/infer", json=_double([[1.0, 2.0]] * 400))
        assert "would answer 1200 values" in _error(r, 400)
        assert fake.signature_calls == []  # refused before the model ran


def test_a_long_tensor_request_takes_turns_with_predict(client, fake, jpeg_bytes):
    """A v2 request of a signature that cannot batch runs in pieces, each one turn: a
    :predict that arrives meanwhile is answered between two pieces, not after all of them."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import body

    fake.signature_delay_s = 0.2
    finished: dict[str, float] = {}

    def v2() -> int:
        r = client.post("/v2/models/saccader/infer", json=_double([[1.0, 2.0]] * 12))
        finished["v2"] = time.monotonic()
        return r.status_code

    def predict() -> int:
        time.sleep(0.05)
        r = client.post("/v1/models/saccader:predict", json=body(jpeg_bytes, top_k=1))
        finished["predict"] = time.monotonic()
        return r.status_code

    with ThreadPoolExecutor(2) as pool:
        statuses = [f.result() for f in [pool.submit(v2), pool.submit(predict)]]
    assert statuses == [200, 200]
    assert finished["predict"] < finished["v2"] - 0.15  # at least one piece still to run


def test_nan_and_infinity_are_refused_naming_the_tensor(client):
    """Non-finite numbers never reach the model (its answer would not be JSON): in v2 JSON
    (Python's parser reads NaN and Infinity literals), v2 binary data, and TF Serving's
    tensor forms."""
    text = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [NaN, 1]}],'
    text += b' "parameters": {"signature_name": "double"}}'
    r = client.post("/v2/models/saccader/infer", content=text)
    assert "x: 1 of its values are NaN or Infinity" in _error(r, 400)
    raw = np.array([[np.inf, -np.inf]], "<f4").tobytes()
    import json

    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 2],
                 "parameters": {"binary_data_size": len(raw)}}
            ],
            "parameters": {"signature_name": "double"},
        }
    ).encode()  # fmt: skip
    r = client.post(
        "/v2/models/saccader/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert "x: 2 of its values are NaN or Infinity" in _error(r, 400)
    r = client.post(
        "/v1/models/saccader:predict",
        content=b'{"signature_name": "double", "inputs": {"x": [[1.0, Infinity]]}}',
    )
    assert r.status_code == 400 and "NaN or Infinity" in r.json()["error"]


def test_batched_rows_keep_their_bytes_whole():
    """Rows of a string tensor are joined into an object array: a fixed-width one (what
    np.stack makes of bytes) would drop trailing NUL bytes from an image or an output."""
    from service.model_runner import _stack

    images = np.empty(2, object)
    images[:] = [b"\xff\xd8\x00", b"\x89PNG\x00\x00"]
    joined = _stack([images[0], images[1]])
    assert joined.dtype == object and list(joined) == [b"\xff\xd8\x00", b"\x89PNG\x00\x00"]
    assert _stack([np.ones(2), np.zeros(2)]).shape == (2, 2)
