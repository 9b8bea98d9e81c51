"""Open Inference Protocol v2 over REST, with Triton's own HTTP client (JSON and binary tensor
data) and raw requests for the refusals, against the live gateway (tiny model)."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import numpy as np
import pytest

tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from service import timing  # noqa: E402
from tests.conftest import body  # noqa: E402


@pytest.fixture(scope="module")
def client(gateway):
    with tritonclient_http.InferenceServerClient(gateway.url.removeprefix("http://")) as c:
        yield c


def _image_input(photo: bytes, binary: bool):
    image = tritonclient_http.InferInput("input_image_bytes", [1], "BYTES")
    value = photo if binary else base64.b64encode(photo)  # base64 text in JSON, as KServe
    image.set_data_from_numpy(np.array([value], dtype=object), binary_data=binary)
    return image


def _predicted(gateway, photo: bytes) -> dict:
    r = httpx.post(f"{gateway.url}/v1/models/saccader:predict", json=body(photo), timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]


def test_health_and_metadata(client, gateway):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("saccader") and client.is_model_ready("saccader", "1")
    assert not client.is_model_ready("nope")
    server = client.get_server_metadata()
    assert server["name"] == "glimpse" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("saccader")
    assert meta["name"] == "saccader" and meta["versions"] == ["1"]
    assert {"name": "input_image_bytes", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["class_names"]["datatype"] == "BYTES"
    assert outputs["scores"] == {"name": "scores", "datatype": "FP32", "shape": [-1, -1]}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_gives_the_class_predict_gives(client, gateway, photo_bytes, binary):
    expected = _predicted(gateway, photo_bytes)
    outputs = [
        tritonclient_http.InferRequestedOutput("class_names", binary_data=binary),
        tritonclient_http.InferRequestedOutput("scores", binary_data=binary),
        tritonclient_http.InferRequestedOutput("glimpse_boxes", binary_data=binary),
    ]
    result = client.infer("saccader", [_image_input(photo_bytes, binary)], outputs=outputs)
    names = result.as_numpy("class_names")
    assert names.shape == (1, 5)
    top = names[0, 0]
    assert (top.decode() if isinstance(top, bytes) else top) == expected["top_class"]["label"]
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float32
    assert scores[0, 0] == pytest.approx(expected["top_class"]["score"], rel=1e-4, abs=1e-5)
    assert result.as_numpy("glimpse_boxes").shape == (1, 6, 4)
    assert result.get_response()["model_version"] == "1"


def test_parameters_choose_the_options_signature(client, photo_bytes):
    outputs = [tritonclient_http.InferRequestedOutput(n) for n in ("glimpse_boxes", "classes")]
    result = client.infer(
        "saccader",
        [_image_input(photo_bytes, True)],
        outputs=outputs,
        parameters={"num_glimpses": 2, "top_k": 3},
        model_version="1",
    )
    assert result.as_numpy("glimpse_boxes").shape == (1, 2, 4)
    assert result.as_numpy("classes").shape == (1, 3)


def test_every_output_by_default_and_images_as_base64(gateway, photo_bytes):
    request = {
        "id": "r1",
        "inputs": [
            {
                "name": "input_image_bytes",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(photo_bytes).decode()],
            }
        ],
    }
    r = httpx.post(f"{gateway.url}/v2/models/saccader/infer", json=request, timeout=60)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["id"] == "r1" and answer["model_name"] == "saccader"
    by_name = {o["name"]: o for o in answer["outputs"]}
    picture = base64.b64decode(by_name["annotated_image_bytes"]["data"][0])
    assert picture.startswith(b"\xff\xd8")  # the SavedModel's JPEG


def _raw(gateway, header: dict, tail: bytes = b"", **headers) -> httpx.Response:
    head = json.dumps(header).encode()
    return httpx.post(
        f"{gateway.url}/v2/models/saccader/infer",
        content=head + tail,
        headers={"Inference-Header-Content-Length": str(len(head)), **headers},
        timeout=60,
    )


def _image_entry(photo: bytes) -> tuple[dict, bytes]:
    element = struct.pack("<I", len(photo)) + photo
    entry = {
        "name": "input_image_bytes",
        "datatype": "BYTES",
        "shape": [1],
        "parameters": {"binary_data_size": len(element)},
    }
    return entry, element


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: {**e, "name": "image"}, "unknown input 'image'"),
        (lambda e: {**e, "datatype": "FP32"}, "input_image_bytes is BYTES, not 'FP32'"),
        (lambda e: {**e, "shape": [2]}, "holds 2 values, not 1"),
        (lambda e: {**e, "shape": [1, 1]}, "does not fit input_image_bytes's [-1]"),
        (
            lambda e: {**e, "parameters": {"binary_data_size": 10**9}},
            "binary_data_size 1000000000 is past",
        ),
    ],
)
def test_bad_inputs_are_400_in_v2_shape(gateway, photo_bytes, change, message):
    entry, tail = _image_entry(photo_bytes)
    r = _raw(gateway, {"inputs": [change(entry)]}, tail)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_binary_sizes_that_do_not_add_up_are_400(gateway, photo_bytes):
    entry, tail = _image_entry(photo_bytes)
    r = _raw(gateway, {"inputs": [entry]}, tail + b"extra")
    assert r.status_code == 400 and "add up to" in r.json()["error"]


def test_unknown_output_and_model_and_version(gateway, photo_bytes):
    entry, tail = _image_entry(photo_bytes)
    r = _raw(gateway, {"inputs": [entry], "outputs": [{"name": "logits"}]}, tail)
    assert r.status_code == 400 and "unknown outputs ['logits']" in r.json()["error"]
    r = httpx.post(f"{gateway.url}/v2/models/nope/infer", json={"inputs": []})
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = httpx.get(f"{gateway.url}/v2/models/saccader/versions/7")
    assert r.status_code == 404 and "error" in r.json()


def test_an_image_the_model_cannot_decode_is_400_naming_it(client):
    bad = tritonclient_http.InferInput("input_image_bytes", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"not an image"], dtype=object), binary_data=True)
    with pytest.raises(InferenceServerException, match=r"input_image_bytes\[0\]"):
        client.infer("saccader", [bad])


def test_a_body_over_the_limit_is_413_before_it_is_read(gateway):
    """The gateway's body limit (2 MB here) holds for v2 as for every route."""
    header = {"inputs": [{"name": "input_image_bytes", "datatype": "BYTES", "shape": [1]}]}
    r = _raw(gateway, header, b"\0" * 2_100_000)
    assert r.status_code == 413 and "error" in r.json()


def test_server_timing_parts_the_models_time_from_the_gateways(gateway, photo_bytes):
    """Every answer says where its time went (service/timing.py): the model's own call on
    the version's thread, inside the gateway's total; the labelled path (micro-batcher) too."""
    entry, tail = _image_entry(photo_bytes)
    r = _raw(gateway, {"inputs": [entry], "outputs": [{"name": "classes"}]}, tail)
    assert r.status_code == 200, r.text
    spent = timing.parse(r.headers["server-timing"])
    assert spent["model"] > 0 and spent["decode"] > 0
    assert spent["total"] >= spent["model"] + spent["decode"]
    r = httpx.post(f"{gateway.url}/v1/models/saccader:predict", json=body(photo_bytes), timeout=60)
    spent = timing.parse(r.headers["server-timing"])
    assert spent["total"] >= spent["model"] > 0 and spent["queue"] >= 0
