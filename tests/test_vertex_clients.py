"""Vertex AI online prediction, driven by google-cloud-aiplatform itself against a live gateway.

The GAPIC clients take the gateway as `api_endpoint` with its `http://` scheme (their REST
transport keeps a scheme it is given), and the SDK takes the same through `aiplatform.init`.
The SDK's `Endpoint.raw_predict` cannot be pointed anywhere: it builds
`https://{location}-aiplatform.googleapis.com/...` itself (google/cloud/aiplatform/models.py,
`Endpoint.raw_predict`), so `:rawPredict` is tested over plain HTTP.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform
from google.cloud.aiplatform import initializer
from google.cloud.aiplatform_v1 import EndpointServiceClient, PredictionServiceClient
from google.protobuf import json_format

from tests.conftest import b64, encode
from tests.servers import live_server

PROJECT, LOCATION = "demo", "us-central1"
ENDPOINT = f"projects/{PROJECT}/locations/{LOCATION}/endpoints/saccader"
MODEL = f"projects/{PROJECT}/locations/{LOCATION}/models/saccader"
DEPLOYED = "saccader-v1"  # the tiny model is exported as version 1
VERTEX_KEYS = {
    "baselineOutputValue",
    "instanceOutputValue",
    "featureAttributions",
    "outputIndex",
    "outputDisplayName",
    "outputName",
}


@pytest.fixture(scope="module")
def server(gateway_settings):
    with live_server(gateway_settings()) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def photo() -> bytes:
    rng = np.random.default_rng(5)
    return encode(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), "JPEG")


def instance(image: bytes, key: str | None = None) -> dict:
    out: dict = {"input_image_bytes": {"b64": b64(image)}}
    return out if key is None else {**out, "key": key}


def gapic(cls, server):
    """A GAPIC client as a user builds one, REST transport, aimed at the gateway."""
    return cls(
        transport="rest",
        client_options={"api_endpoint": server.url},
        credentials=AnonymousCredentials(),
    )


def direct(server, path: str, payload: dict) -> dict:
    r = httpx.post(server.url + path, json=payload, timeout=120)
    assert r.status_code == 200, r.text[:300]
    return r.json()


def as_dicts(values) -> list[dict]:
    """Repeated google.protobuf.Value -> plain JSON, as the SDK converts them."""
    return [json_format.MessageToDict(v) for v in values.pb]


def test_gapic_predict_answers_the_gateway_prediction(server, photo):
    client = gapic(PredictionServiceClient, server)
    params = {"num_glimpses": 3, "top_k": 2, "annotated_image": False}
    response = client.predict(
        endpoint=ENDPOINT, instances=[instance(photo, "cat-1")], parameters=params
    )
    assert response.deployed_model_id == DEPLOYED
    assert (response.model, response.model_version_id) == (MODEL, "1")
    assert response.model_display_name == "saccader"
    [got] = as_dicts(response.predictions)
    ml = direct(
        server,
        "/v1/projects/demo/models/saccader:predict",
        {"instances": [instance(photo, "cat-1")], "parameters": params},
    )
    [expected] = ml["predictions"]
    # JSON numbers come back as doubles through protobuf's Value; otherwise the same object.
    assert got["key"] == "cat-1"
    assert got["top_class"]["index"] == expected["top_class"]["index"]
    assert got["top_class"]["synset"] == expected["top_class"]["synset"]
    assert got["top_class"]["score"] == pytest.approx(expected["top_class"]["score"], abs=1e-6)
    assert [g["order"] for g in got["glimpses"]] == [1, 2, 3]
    for mine, theirs in zip(got["glimpses"], expected["glimpses"], strict=True):
        assert mine["box"] == pytest.approx(theirs["box"], abs=1e-6)
    assert "annotated_image_bytes" not in got


def test_gapic_explain_has_vertex_shape(server, photo):
    client = gapic(PredictionServiceClient, server)
    params = {"method": "integrated_gradients", "steps": 4, "faithfulness": False}
    response = client.explain(
        endpoint=ENDPOINT, instances=[instance(photo, "cat-2")], parameters=params
    )
    assert response.deployed_model_id == DEPLOYED
    [explanation] = response.explanations
    [attribution] = explanation.attributions
    raw = json_format.MessageToDict(attribution._pb)
    assert VERTEX_KEYS <= set(raw), raw.keys()
    assert attribution.output_name == "logits"
    [label] = attribution.output_index
    assert attribution.approximation_error >= 0.0
    image = raw["featureAttributions"]["input_image_bytes"]
    assert image["b64_jpeg"]
    # The same numbers as the ml v1 route's legacy shape, under Vertex's names.
    legacy = direct(
        server,
        "/v1/projects/demo/models/saccader:explain",
        {"instances": [instance(photo)], "parameters": params},
    )
    [entry] = legacy["explanations"][0]["attributions_by_label"]
    assert label == entry["label_index"]
    assert attribution.output_display_name == entry["label_name"]
    assert attribution.instance_output_value == pytest.approx(entry["example_score"], abs=1e-4)
    assert attribution.baseline_output_value == pytest.approx(entry["baseline_score"], abs=1e-4)
    # Vertex answers the predictions beside the explanations: :predict's objects.
    [prediction] = as_dicts(response.predictions)
    assert prediction["key"] == "cat-2" and "top_class" in prediction and prediction["glimpses"]


def test_gapic_explain_glimpses_carry_per_glimpse_attributions(server, photo):
    client = gapic(PredictionServiceClient, server)
    params = {"num_glimpses": 4, "faithfulness": False, "attribution_map": True}
    response = client.explain(endpoint=ENDPOINT, instances=[instance(photo)], parameters=params)
    [attribution] = response.explanations[0].attributions
    features = json_format.MessageToDict(attribution._pb)["featureAttributions"]
    image = features["input_image_bytes"]
    assert [g["order"] for g in image["glimpses"]] == [1, 2, 3, 4]
    assert all(0.0 <= g["probability"] <= 1.0 for g in image["glimpses"])
    assert image["attribution_map"]["shape"] == [224, 224]
    assert attribution.baseline_output_value == 0.0  # no glimpse seen: zero logits
    [prediction] = as_dicts(response.predictions)
    assert prediction["top_class"]["index"] == attribution.output_index[0]
    assert len(prediction["glimpses"]) == 4


def test_explain_json_keeps_the_gateway_keys_beside_vertex_ones(server, photo):
    """Proto parsers drop what Vertex does not define; the JSON has it."""
    path = f"/v1/{ENDPOINT}:explain"
    answer = direct(server, path, {"instances": [instance(photo, "k")], "parameters": {}})
    [explanation] = answer["explanations"]
    [attribution] = explanation["attributions"]
    assert VERTEX_KEYS <= set(attribution) and "approximationError" not in attribution
    assert attribution["method"] == "glimpses" and 0.0 <= attribution["probability"] <= 1.0
    assert attribution["faithfulness"]["metric"] == "equal_area_cells"
    assert explanation["key"] == "k" and explanation["model_evaluations"] > 0
    assert answer["deployedModelId"] == DEPLOYED


def test_get_endpoint_has_one_deployed_model(server):
    endpoint = gapic(EndpointServiceClient, server).get_endpoint(name=ENDPOINT)
    assert endpoint.name == ENDPOINT and endpoint.display_name == "saccader"
    [deployed] = endpoint.deployed_models
    assert (deployed.id, deployed.model, deployed.model_version_id) == (DEPLOYED, MODEL, "1")
    assert dict(endpoint.traffic_split) == {DEPLOYED: 100}
    assert endpoint.create_time and endpoint.update_time and deployed.create_time


@pytest.fixture
def sdk(server):
    """`aiplatform.init` as a user writes it, the gateway as api_endpoint; reset afterwards
    (the SDK's configuration is global)."""
    aiplatform.init(
        project=PROJECT,
        location=LOCATION,
        api_endpoint=server.url,
        api_transport="rest",
        credentials=AnonymousCredentials(),
    )
    yield aiplatform
    initializer.global_config.__init__()


@pytest.mark.parametrize("name", [ENDPOINT, "saccader"])
def test_sdk_endpoint_predict(sdk, photo, name):
    """The SDK reads the endpoint resource first (GET), then predicts on its name."""
    endpoint = sdk.Endpoint(name)
    result = endpoint.predict(
        instances=[instance(photo, "a"), instance(photo, "b")],
        parameters={"num_glimpses": 2, "annotated_image": False},
    )
    assert result.deployed_model_id == DEPLOYED
    assert (result.model_resource_name, result.model_version_id) == (MODEL, "1")
    assert [p["key"] for p in result.predictions] == ["a", "b"]
    for p in result.predictions:
        assert 0 <= p["top_class"]["index"] < 1000 and len(p["glimpses"]) == 2
    assert endpoint.traffic_split == {DEPLOYED: 100}


def test_sdk_endpoint_explain(sdk, photo):
    result = sdk.Endpoint(ENDPOINT).explain(
        instances=[instance(photo)], parameters={"num_glimpses": 2, "faithfulness": False}
    )
    assert result.deployed_model_id == DEPLOYED
    [explanation] = result.explanations
    [attribution] = explanation.attributions
    assert attribution.output_index[0] == result.predictions[0]["top_class"]["index"]


def test_sdk_unknown_endpoint_is_not_found(sdk):
    with pytest.raises(exceptions.NotFound, match="endpoints/nope` not found"):
        sdk.Endpoint("nope").predict(instances=[{"b64": "aGk="}])


def test_raw_predict_is_the_container_answer(server, photo):
    payload = {"instances": [instance(photo, "r")], "parameters": {"annotated_image": False}}
    r = httpx.post(f"{server.url}/v1/{ENDPOINT}:rawPredict", json=payload, timeout=120)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["X-Vertex-AI-Deployed-Model-Id"] == DEPLOYED
    assert r.headers["X-Vertex-AI-Model"] == MODEL
    assert r.headers["X-Vertex-AI-Model-Version-Id"] == "1"
    assert r.headers["X-Vertex-AI-Endpoint-Id"] == "saccader"
    expected = direct(server, "/v1/models/saccader:predict", payload)
    assert r.json() == expected


def test_gapic_raw_predict_sends_an_http_body_and_gets_one_back(server, photo):
    """PredictionServiceClient.raw_predict over REST wraps the body in google.api.HttpBody
    (`{"httpBody": {"contentType", "data": base64}}`, `?$alt=json;enum-encoding=int`) and
    parses the answer as an HttpBody: the container's answer, in that envelope."""
    import json

    from google.api import httpbody_pb2

    payload = {"instances": [instance(photo, "r")], "parameters": {"annotated_image": False}}
    client = gapic(PredictionServiceClient, server)
    sent = httpbody_pb2.HttpBody(data=json.dumps(payload).encode(), content_type="application/json")
    answer = client.raw_predict(endpoint=ENDPOINT, http_body=sent)
    assert answer.content_type == "application/json"
    assert json.loads(answer.data) == direct(server, "/v1/models/saccader:predict", payload)


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        ({"httpBody": {"contentType": "text/csv", "data": "YQ=="}}, "takes application/json"),
        ({"httpBody": {"contentType": "application/json", "data": "%%%"}}, "invalid base64"),
        ({"httpBody": {"data": "bm90IGpzb24="}}, "httpBody.data: JSON Parse error"),
        ({"httpBody": {"data": "e30="}}, "Missing 'inputs' or 'instances' key"),  # {}
        ({"httpBody": {"data": "e30="}, "instances": []}, "either the model's JSON"),
    ],
)
def test_a_bad_http_body_envelope_is_400_naming_it(server, envelope, message):
    r = httpx.post(f"{server.url}/v1/{ENDPOINT}:rawPredict", json=envelope, timeout=30)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]
