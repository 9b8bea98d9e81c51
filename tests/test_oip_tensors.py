"""The Open Inference Protocol codec (service/oip_tensors.py) on its own: no model, no server."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from service import oip_tensors as oip
from service.errors import InvalidInput
from service.signatures import SignatureSpec, TensorSpec

pytestmark = pytest.mark.fast

OPTIONS = SignatureSpec(
    "serving_options",
    inputs={
        "input_image_bytes": TensorSpec("DT_STRING", (-1,)),
        "num_glimpses": TensorSpec("DT_INT32", (-1,)),
        "top_k": TensorSpec("DT_INT32", (-1,)),
    },
    outputs={
        "scores": TensorSpec("DT_FLOAT", (-1, -1)),
        "annotated_image_bytes": TensorSpec("DT_STRING", (-1,)),
    },
)


def _binary_request(header: dict, tail: bytes) -> oip.InferRequest:
    head = json.dumps(header).encode()
    return oip.read_request(head + tail, str(len(head)))


def _element(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def test_json_base64_images_and_parameters_fill_the_options_inputs():
    request = oip.read_request(
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "input_image_bytes",
                        "datatype": "BYTES",
                        "shape": [2],
                        "data": [base64.b64encode(b"a").decode(), base64.b64encode(b"bc").decode()],
                    }
                ],
                "parameters": {"num_glimpses": 3, "top_k": 2},
            }
        ).encode(),
        None,
    )
    assert oip.signature_name(request) == "serving_options"
    tensors = oip.input_tensors(request, OPTIONS)
    assert list(tensors["input_image_bytes"]) == [b"a", b"bc"]
    assert tensors["num_glimpses"].tolist() == [3, 3] and tensors["top_k"].dtype == np.int32


def test_binary_bytes_and_numbers_are_read_in_input_order():
    tail = _element(b"jpeg1") + np.array([2], np.int32).tobytes() + np.array([5], "<i4").tobytes()
    header = {
        "inputs": [
            {"name": "input_image_bytes", "datatype": "BYTES", "shape": [1],
             "parameters": {"binary_data_size": 9}},
            {"name": "num_glimpses", "datatype": "INT32", "shape": [1],
             "parameters": {"binary_data_size": 4}},
            {"name": "top_k", "datatype": "INT32", "shape": [1], "data": [7]},
        ]
    }  # fmt: skip
    with pytest.raises(InvalidInput, match="add up to 13 bytes, but 17"):
        oip.input_tensors(_binary_request(header, tail), OPTIONS)
    tensors = oip.input_tensors(_binary_request(header, tail[:13]), OPTIONS)
    assert tensors["input_image_bytes"].tolist() == [b"jpeg1"]
    assert tensors["num_glimpses"].tolist() == [2] and tensors["top_k"].tolist() == [7]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}, "unknown input 'x'"),
        ({"name": "input_image_bytes", "datatype": "FP32", "shape": [1], "data": [1.0]},
         "is BYTES, not 'FP32'"),
        ({"name": "input_image_bytes", "datatype": "BYTES", "shape": [1], "data": ["not b64!"]},
         "base64 text"),
        ({"name": "input_image_bytes", "datatype": "BYTES", "shape": [2], "data": ["eA=="]},
         "holds 2 values, not 1"),
        ({"name": "input_image_bytes", "datatype": "BYTES", "shape": [-1], "data": []},
         "non-negative integers"),
        ({"name": "input_image_bytes", "datatype": "BYTES", "shape": [1]}, "no data"),
    ],
)  # fmt: skip
def test_bad_inputs_name_the_problem(entry, message):
    request = oip.read_request(json.dumps({"inputs": [entry]}).encode(), None)
    with pytest.raises(InvalidInput, match=message):
        oip.input_tensors(request, OPTIONS)


def test_missing_inputs_and_bad_headers():
    image = {"name": "input_image_bytes", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}
    request = oip.read_request(json.dumps({"inputs": [image]}).encode(), None)
    with pytest.raises(InvalidInput, match=r"needs inputs \['num_glimpses', 'top_k'\]"):
        oip.input_tensors(request, OPTIONS)
    with pytest.raises(InvalidInput, match="outside the body"):
        oip.read_request(b"{}", "99")
    with pytest.raises(InvalidInput, match="not JSON"):
        oip.read_request(b"{nope", None)
    truncated = _binary_request(
        {"inputs": [{**image, "parameters": {"binary_data_size": 6}}]}, b"\x09\0\0\0ab"
    )
    with pytest.raises(InvalidInput, match="runs past the binary data"):
        oip.input_tensors(truncated, OPTIONS)


def test_answers_in_json_and_binary_with_the_outputs_asked_for():
    outputs = {
        "scores": np.array([[0.5, 0.25]], np.float32),
        "annotated_image_bytes": np.array([b"\x89PNG"], object),
    }
    plain = oip.read_request(b'{"id": "r", "inputs": []}', None)
    body, head = oip.answer("m", 3, plain, outputs)
    assert head is None
    answer = json.loads(body)
    assert answer["id"] == "r" and answer["model_version"] == "3"
    by_name = {o["name"]: o for o in answer["outputs"]}
    assert base64.b64decode(by_name["annotated_image_bytes"]["data"][0]) == b"\x89PNG"
    assert by_name["scores"] == {"name": "scores", "datatype": "FP32", "shape": [1, 2],
                                 "data": [0.5, 0.25]}  # fmt: skip

    binary = oip.read_request(
        json.dumps({"inputs": [], "outputs": [{"name": "scores", "parameters":
                                               {"binary_data": True}}]}).encode(), None
    )  # fmt: skip
    body, head = oip.answer("m", 3, binary, outputs)
    header = json.loads(body[:head])
    assert [o["name"] for o in header["outputs"]] == ["scores"]
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert np.frombuffer(body[head:], "<f4").tolist() == [0.5, 0.25]
    with pytest.raises(InvalidInput, match=r"unknown outputs \['logits'\]"):
        oip.answer("m", 3, oip.read_request(b'{"outputs": [{"name": "logits"}]}', None), outputs)


def test_metadata_uses_v2_datatypes():
    meta = oip.tensor_metadata(OPTIONS)
    assert {"name": "top_k", "datatype": "INT32", "shape": [-1]} in meta["inputs"]
    assert {"name": "scores", "datatype": "FP32", "shape": [-1, -1]} in meta["outputs"]
