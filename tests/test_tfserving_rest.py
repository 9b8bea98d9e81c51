"""TF Serving's REST forms against the live gateway, with `requests` as a TF Serving user sends
them (no content type, `data=json.dumps(...)`), compared key by key and value by value with
what the SavedModel's signatures return in-process: the row form of the default signature, the
columnar form, and every signature that `/metadata` lists."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests

from service.savedmodel import load
from tests.conftest import b64, encode
from tests.errors import error_message
from tests.servers import live_server

MODEL = "/v1/models/saccader"
PREDICT = MODEL + ":predict"
FLOAT_TOL = 1e-4  # batched on the gateway, one call in-process: float noise, never more


@pytest.fixture(scope="module")
def gateway(gateway_settings):
    settings = gateway_settings(max_payload_bytes=3_000_000, version_labels={"stable": 1})
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def saved_model(tiny_export):

    return load(tiny_export)  # the process's one load of it (service/savedmodel.py)


@pytest.fixture(scope="module")
def photos(photo_bytes) -> list[bytes]:
    rng = np.random.default_rng(3)
    other = encode(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8), "JPEG")
    return [photo_bytes, other]


def post(server, payload: dict, path: str = PREDICT) -> requests.Response:
    return requests.post(server.url + path, data=json.dumps(payload), timeout=120)


def in_process(saved_model, signature: str, inputs: dict) -> dict[str, np.ndarray]:
    import tensorflow as tf

    fn = saved_model.signatures[signature]
    out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def assert_tensor_equal(name: str, given, expected: np.ndarray) -> None:
    """A JSON value TF Serving wrote against the tensor: `_bytes` strings as b64 objects,
    other strings as text, numbers within float tolerance, shapes exact."""
    expected = np.asarray(expected)
    if expected.dtype == object or expected.dtype.kind == "S":
        flat = np.asarray(expected, object).reshape(-1)
        values = np.asarray(given, object).reshape(-1) if expected.ndim else [given]
        assert len(values) == len(flat), name
        for got, want in zip(values, flat, strict=True):
            if name.endswith("_bytes"):
                assert got == {"b64": base64.b64encode(want).decode()}, name
            else:
                assert got == want.decode(), name
        return
    got = np.asarray(given)
    assert got.shape == expected.shape, (name, got.shape, expected.shape)
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(got, expected, atol=FLOAT_TOL, err_msg=name)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_rows_carry_every_output_of_the_default_signature(gateway, saved_model, photos):
    r = post(gateway, {"instances": [{"b64": b64(p)} for p in photos]})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    expected = in_process(saved_model, "serving_default", {"input_image_bytes": photos})
    for i, row in enumerate(rows):
        for name, tensor in expected.items():
            assert name in row, name
            assert_tensor_equal(name, row[name], tensor[i])
        assert row["top_class"]["index"] == row["classes"][0]  # the labelled fields beside
        assert len(row["glimpses"]) == len(row["glimpse_boxes"])


@pytest.mark.parametrize("path", [f"{MODEL}/versions/1:predict", f"{MODEL}/labels/stable:predict"])
def test_version_and_label_routes_answer_the_same_rows(gateway, saved_model, photos, path):
    r = post(gateway, {"instances": [{"b64": b64(photos[1])}]}, path)
    assert r.status_code == 200, r.text
    expected = in_process(saved_model, "serving_default", {"input_image_bytes": photos[1:]})
    row = r.json()["predictions"][0]
    for name, tensor in expected.items():
        assert_tensor_equal(name, row[name], tensor[0])
    r = post(gateway, {"inputs": [{"b64": b64(photos[1])}], "signature_name": "classify"}, path)
    expected = in_process(saved_model, "classify", {"input_image_bytes": photos[1:]})
    for name, tensor in expected.items():
        assert_tensor_equal(name, r.json()["outputs"][name], tensor)


def test_an_unknown_label_is_tf_servings_400(gateway, photos):
    r = post(gateway, {"instances": [{"b64": b64(photos[0])}]}, f"{MODEL}/labels/canary:predict")
    assert error_message(r, 400) == "Unrecognized servable version label: canary"


def test_the_columnar_form_answers_outputs(gateway, saved_model, photos):
    expected = in_process(saved_model, "serving_default", {"input_image_bytes": photos})
    named = {"inputs": {"input_image_bytes": [{"b64": b64(p)} for p in photos]}}
    bare = {"inputs": [{"b64": b64(p)} for p in photos]}  # one input: its value alone
    for payload in (named, bare):
        r = post(gateway, payload)
        assert r.status_code == 200, r.text
        outputs = r.json()["outputs"]
        assert set(outputs) == set(expected)
        for name, tensor in expected.items():
            assert_tensor_equal(name, outputs[name], tensor)


def _inputs_for(signature: str, spec: dict, photo: bytes) -> tuple[dict, dict]:
    """Valid inputs for a signature from its metadata: (JSON, in-process tensors)."""
    samples = {
        "input_image_bytes": ([{"b64": b64(photo)}], [photo]),
        "num_glimpses": ([2], np.array([2], np.int32)),
        "top_k": ([3], np.array([3], np.int32)),
        "class_index": ([7], np.array([7], np.int32)),
        "glimpse_boxes": (
            [[[10.0, 10.0, 74.0, 74.0], [90.0, 100.0, 154.0, 164.0]]],
            np.array([[[10, 10, 74, 74], [90, 100, 154, 164]]], np.float32),
        ),
        "glimpse_sets": ([[True, False], [True, True]], np.array([[1, 0], [1, 1]], bool)),
    }
    view = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).round(1).astype(np.float32)
    samples["pixels"] = (view.tolist(), view)
    missing = set(spec["inputs"]) - set(samples)
    assert not missing, f"{signature}: no sample for {missing}"
    return (
        {name: samples[name][0] for name in spec["inputs"]},
        {name: samples[name][1] for name in spec["inputs"]},
    )


def test_every_signature_in_the_metadata_answers_as_the_savedmodel(
    gateway, saved_model, photo_bytes
):
    metadata = requests.get(gateway.url + MODEL + "/metadata", timeout=30).json()
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "classify", "explain_logits"} <= set(signatures)
    for name, spec in signatures.items():
        if name == "__saved_model_init_op":
            continue
        payload, tensors = _inputs_for(name, spec, photo_bytes)
        r = post(gateway, {"signature_name": name, "inputs": payload})
        assert r.status_code == 200, (name, r.text[:300])
        outputs = r.json()["outputs"]
        expected = in_process(saved_model, name, tensors)
        if len(expected) == 1:  # one output: TF Serving writes its value alone
            outputs = {next(iter(expected)): outputs}
        assert set(outputs) == set(expected), name
        for key, tensor in expected.items():
            assert_tensor_equal(f"{name}.{key}", outputs[key], tensor)


def test_row_form_of_another_signature(gateway, saved_model, photos):
    instances = [
        {"input_image_bytes": {"b64": b64(p)}, "top_k": 2, "num_glimpses": 3} for p in photos
    ]
    r = post(gateway, {"signature_name": "serving_options", "instances": instances})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    expected = in_process(
        saved_model,
        "serving_options",
        {
            "input_image_bytes": photos,
            "top_k": np.array([2, 2], np.int32),
            "num_glimpses": np.array([3, 3], np.int32),
        },
    )
    assert [set(row) for row in rows] == [set(expected)] * 2  # TF Serving's keys, nothing added
    for i, row in enumerate(rows):
        for name, tensor in expected.items():
            assert_tensor_equal(name, row[name], tensor[i])


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (
            {"signature_name": "nope", "instances": [1]},
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        (
            {"inputs": [{"b64": "AA=="}], "instances": [{"b64": "AA=="}]},
            400,
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        (
            {"signature_name": "serving_options", "inputs": {"top_k": [1]}},
            400,
            "Missing named input: input_image_bytes in 'inputs' object.",
        ),
        (
            {"signature_name": "classify", "instances": [{"b64": "AA=="}, [{"b64": "AA=="}]]},
            400,
            "Failed to process element: 1 of 'instances' list. Error: Expecting shape [] but"
            " got: [1]",
        ),
        (
            {"signature_name": "explain_logits", "inputs": [[[[0.5, 0.5]]]]},
            400,
            "input pixels has shape [1, 1, 1, 2], the signature expects [?,224,224,3]",
        ),
        (
            {"signature_name": "serving_options", "instances": [{"top_k": "x"}]},
            400,
            "Failed to process element: 0 key: top_k of 'instances' list. Error: JSON Value:"
            ' "x" Type: string is not of expected type: int32',
        ),
        (
            {"signature_name": "classify", "inputs": [{"b64": b64(b"not an image")}]},
            400,
            "inputs.input_image_bytes[0]: not a decodable image",
        ),
    ],
)
def test_tensor_form_errors_are_tf_servings(gateway, payload, status, message):
    r = post(gateway, payload)
    assert message in error_message(r, status)


def _nested(depth: int) -> list:
    value: list = [0.5]
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"signature_name": "explain_logits", "inputs": _nested(70)}, "nested deeper than 8"),
        (
            {
                "signature_name": "serving_options",
                "instances": [
                    {"input_image_bytes": {"b64": "AA=="}, "top_k": 10**400, "num_glimpses": 1}
                ],
            },
            "out of range for int32",
        ),
        (
            {
                "signature_name": "serving_options",
                "instances": [
                    {"input_image_bytes": {"b64": "AA=="}, "top_k": None, "num_glimpses": 1}
                ],
            },
            "Type: null is not of expected type: int32",
        ),
        (
            {
                "signature_name": "explain_glimpse_sets",
                "inputs": {
                    "input_image_bytes": [{"b64": "AA=="}],
                    "glimpse_boxes": [[[0, 0, 10, 10]] * 40],
                    "glimpse_sets": [[True] * 40],
                },
            },
            "glimpse_boxes: 40 glimpses is over the model's max_glimpses (16)",
        ),
        (
            {"signature_name": "explain_view", "inputs": [{"b64": "AA=="}] * 40},
            "would answer",
        ),
        ({"inputs": [{"b64": "AA=="}], "parameters": {"top_k": 3}}, "parameters apply"),
    ],
)
def test_small_bodies_cannot_buy_large_work_or_a_500(gateway, payload, message):
    """Deep nesting, huge numbers, nulls, glimpse axes and answers past their limits: a 400
    naming the problem, before the model runs."""
    r = post(gateway, payload)
    assert message in error_message(r, 400)


def test_json_nested_past_the_parser_is_a_400(gateway):
    deep = '{"signature_name": "explain_logits", "inputs": ' + "[" * 5000 + "]" * 5000 + "}"
    r = requests.post(gateway.url + PREDICT, data=deep, timeout=60)
    assert error_message(r, 400) == "JSON Parse error: nested deeper than the parser allows"


def test_a_json_body_is_read_whatever_the_content_type(gateway, photos):
    payload = json.dumps({"instances": [{"b64": b64(photos[0])}]})
    for headers in (
        {},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "text/plain"},
    ):
        r = requests.post(gateway.url + PREDICT, data=payload, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        assert "classes" in r.json()["predictions"][0]
    r = requests.post(gateway.url + PREDICT, data="instances=1", timeout=60)
    assert error_message(r, 400).startswith("JSON Parse error")


def test_the_tfserving_backend_runs_any_signature(gateway_settings, tfserving, saved_model, photos):
    settings = gateway_settings(
        backend="tfserving", tfserving_address=f"127.0.0.1:{tfserving.port}"
    )
    with live_server(settings) as server:
        request = {"signature_name": "classify", "inputs": [{"b64": b64(p)} for p in photos]}
        r = post(server, request)
        assert r.status_code == 200, r.text
        asked = tfserving.metadata_calls
        assert post(server, request).status_code == 200
        assert tfserving.metadata_calls == asked  # the version's signatures were kept
        expected = in_process(saved_model, "classify", {"input_image_bytes": photos})
        for name, tensor in expected.items():
            assert_tensor_equal(name, r.json()["outputs"][name], tensor)
        r = post(server, {"instances": [{"b64": b64(photos[0])}]})
        row = r.json()["predictions"][0]
        expected = in_process(saved_model, "serving_default", {"input_image_bytes": photos[:1]})
        for name, tensor in expected.items():
            assert_tensor_equal(name, row[name], tensor[0])


@pytest.mark.parametrize("verb", ["classify", "regress"])
def test_classify_and_regress_are_refused_as_tf_serving_refuses_them(gateway, verb):
    """The model has predict signatures only: TF Serving's 400 for that, not a 404/405."""
    kind = {"classify": "classification", "regress": "regression"}[verb]
    body = {"examples": [{"x": 1.0}]}
    message = error_message(post(gateway, body, f"{MODEL}:{verb}"), 400)
    assert message == (
        f"Expected {kind} signature method_name to be tensorflow/serving/{verb}."
        " Was: tensorflow/serving/predict"
    )
    named = {**body, "signature_name": "nope"}
    r = post(gateway, named, f"{MODEL}/versions/1:{verb}")
    assert error_message(r, 400) == "No signature was found with the name: nope"
    assert post(gateway, body, f"/v1/models/other:{verb}").status_code == 404
