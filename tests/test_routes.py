"""The fast tier: every route through the app factory with a fake backend (no TensorFlow).

Each status the API can answer, and its exact JSON body, as a client sees it. The same routes
against the real model and real servers are tested end to end in test_gateway_*.py.
"""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import BackendError, BackendUnavailable, InvalidInput, Overloaded
from service.settings import GatewaySettings
from tests.conftest import body, encode
from tests.errors import error_message
from tests.fake_backend import INFO, PNG_1X1, FakeBackend

pytestmark = pytest.mark.fast

PREDICT = "/v1/models/saccader:predict"
EXPLAIN = "/v1/models/saccader:explain"


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    import numpy as np

    rng = np.random.default_rng(0)
    return encode(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), "JPEG")


def settings(tmp_path, **overrides) -> GatewaySettings:
    """Settings for the fake: an empty model directory, so explanations have no local copy."""
    return GatewaySettings(
        **{"model_dir": tmp_path, "log_format": "text", "jobs_enabled": False, **overrides}
    )


def failed_to_load(client: TestClient) -> None:
    deadline = time.monotonic() + 10
    while "failed to load" not in client.get("/healthz/startup").text:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def started(client: TestClient) -> TestClient:
    deadline = time.monotonic() + 10
    while client.get("/healthz/startup").status_code != 200:
        assert time.monotonic() < deadline, client.get("/healthz/startup").json()
        time.sleep(0.005)
    return client


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def client(tmp_path, fake):
    with TestClient(create_app(settings(tmp_path), fake)) as c:
        yield started(c)


def test_predict_answers_from_the_predictor(client, fake, jpeg):
    r = client.post(PREDICT, json=body(jpeg, num_glimpses=2, top_k=2))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    (p,) = r.json()["predictions"]
    assert p["top_class"] == {"index": 0, "synset": "n00000000", "label": "class 0", "score": 0.5}
    assert [c["index"] for c in p["top_k"]] == [0, 1]
    assert p["glimpses"] == [
        {
            "order": 1,
            "box": {"ymin": 0.0, "xmin": 0.0, "ymax": 64.0, "xmax": 64.0},
            "box_original": {"ymin": 3.0, "xmin": 11.0, "ymax": 15.0, "xmax": 23.0},
            "centre": {"y": 32.0, "x": 32.0},
            "new_pixels": 1.0,
        },
        {
            "order": 2,
            "box": {"ymin": 16.0, "xmin": 16.0, "ymax": 80.0, "xmax": 80.0},
            "box_original": {"ymin": 6.0, "xmin": 14.0, "ymax": 18.0, "xmax": 26.0},
            "centre": {"y": 48.0, "x": 48.0},
            "new_pixels": 0.4375,
        },
    ]
    assert p["annotated_image_bytes"] == {"b64": base64.b64encode(PNG_1X1).decode()}
    assert p["preprocessing"]["original_size"] == [48, 64]
    (_, _, images, options) = fake.calls[-1]
    assert [o.num_glimpses for o in options] == [2] and images[0].original_size == (48, 64)


def test_given_boxes_reach_the_predictor_as_given(client, fake, jpeg):
    boxes = [[10.0, 20.0, 74.0, 84.0], [0.0, 0.0, 32.0, 32.0]]
    r = client.post(PREDICT, json=body(jpeg, glimpse_boxes=boxes))
    assert r.status_code == 200, r.text
    options = fake.calls[-1][3][0]
    assert options.boxes == tuple(tuple(b) for b in boxes) and options.num_glimpses == 2
    assert [g["order"] for g in r.json()["predictions"][0]["glimpses"]] == [1, 2]


error = error_message


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        (
            "/v1/models/nope:predict",
            404,
            "Servable not found for request: Latest(nope)",
        ),
        ("/v1/models/saccader/versions/x:predict", 404, "Could not find version x"),
        (
            "/v1/models/saccader/versions/2:predict",
            404,
            "Could not find version 2 of model saccader",
        ),
        (
            "/v1/projects/p/models/saccader/versions/v2:predict",
            404,
            "Could not find version 2 of model saccader",
        ),
    ],
)
def test_unknown_model_or_version_is_404(client, jpeg, path, status, message):
    assert error(client.post(path, json=body(jpeg)), status) == message


def test_known_version_forms_are_served(client, jpeg):
    for path in (
        "/v1/models/saccader/versions/1:predict",
        "/v1/projects/p/models/saccader:predict",
        "/v1/projects/p/models/saccader/versions/v1:predict",
    ):
        assert client.post(path, json=body(jpeg)).status_code == 200, path


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            {"num_glimpses": 17},
            "parameters.num_glimpses: Input should be less than or equal to 16 (the model's"
            " max_glimpses)",
        ),
        (
            {"top_k": 21},
            "parameters.top_k: Input should be less than or equal to 20 (the model's max_top_k)",
        ),
        (
            {"glimpse_boxes": [[0, 0, 10, 10]] * 17},
            "parameters.glimpse_boxes: List should have at most 16 items, not 17 (the model's"
            " max_glimpses)",
        ),
        (
            {"num_glimpses": 0},
            "parameters.num_glimpses: Input should be greater than or equal to 1",
        ),
        ({"glimpses": 3}, "parameters.glimpses: Extra inputs are not permitted"),
    ],
)
def test_parameters_are_checked_against_the_models_own_limits(client, jpeg, parameters, message):
    assert error(client.post(PREDICT, json=body(jpeg, **parameters)), 400) == message


def test_the_limits_are_the_models_not_the_gateways(tmp_path, jpeg):
    small = FakeBackend(info=INFO.__class__(**{**INFO.__dict__, "max_glimpses": 4}))
    with TestClient(create_app(settings(tmp_path), small)) as c:
        started(c)
        message = error(c.post(PREDICT, json=body(jpeg, num_glimpses=5)), 400)
        assert "less than or equal to 4" in message
        assert c.post(PREDICT, json=body(jpeg, num_glimpses=4)).status_code == 200
    unknown = FakeBackend(info=None)  # TF Serving without a local copy: the model checks
    with TestClient(create_app(settings(tmp_path), unknown)) as c:
        started(c)
        assert c.post(PREDICT, json=body(jpeg, num_glimpses=17)).status_code == 200


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"instances": []}, "instances: List should have at least 1 item after validation, not 0"),
        ({"instances": [{"b64": "!!!"}]}, "instances[0].input_image_bytes: invalid base64"),
        (
            {"instances": [{"b64": base64.b64encode(b"hello").decode()}]},
            "instances[0].input_image_bytes: not a decodable image (JPEG, PNG, WebP, BMP, GIF)",
        ),
        (
            {"instances": [{"image": {"b64": "aGk="}}]},
            "instances[0].input_image_bytes: Field required; instances[0].image: Extra inputs are"
            " not permitted",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_instance(client, payload, message):
    assert error(client.post(PREDICT, json=payload), 400) == message


def test_instances_over_the_limit_are_400(tmp_path, jpeg):
    with TestClient(create_app(settings(tmp_path, max_instances=2), FakeBackend())) as c:
        started(c)
        r = c.post(PREDICT, json=body(jpeg, jpeg, jpeg))
        assert error(r, 400) == "3 instances is over the limit of 2"


def test_body_that_is_not_json_is_400_whatever_its_type(client):
    for content_type in ("application/json", "text/plain"):
        r = client.post(PREDICT, content=b"{", headers={"content-type": content_type})
        message = "JSON Parse error: Expecting property name enclosed in double quotes"
        assert error(r, 400) == message


def test_payload_over_the_limit_is_413(tmp_path):
    with TestClient(create_app(settings(tmp_path, max_payload_bytes=2048), FakeBackend())) as c:
        started(c)
        r = c.post(PREDICT, content=b"x" * 4096, headers={"content-type": "application/json"})
        assert error(r, 413) == "request body of 4096 bytes is over the limit of 2048 bytes"


def test_token_is_required_when_set(tmp_path, jpeg):
    with TestClient(create_app(settings(tmp_path, auth_token="s3cret"), FakeBackend())) as c:
        started(c)
        assert error(c.post(PREDICT, json=body(jpeg)), 401) == "missing or invalid bearer token"
        ok = c.post(PREDICT, json=body(jpeg), headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/healthz/live").status_code == 200  # probes need no token


@pytest.mark.parametrize(
    ("failure", "status", "message", "retry_after"),
    [
        (
            InvalidInput("the model rejected the image: bad"),
            400,
            "instances[0].input_image_bytes: the model rejected the image: bad",
            None,
        ),
        (Overloaded("256 instances are waiting"), 429, None, "1"),
        (BackendUnavailable("model server: UNAVAILABLE: gone"), 503, None, "5"),
        (BackendError("model error: InternalError"), 500, None, None),
        (
            RuntimeError("boom at /secret/path"),
            500,
            "internal error (RuntimeError); see the server log",
            None,
        ),
    ],
)
def test_backend_errors_map_to_statuses(tmp_path, jpeg, failure, status, message, retry_after):
    with TestClient(
        create_app(settings(tmp_path), FakeBackend(fail_with=failure)),
        raise_server_exceptions=False,
    ) as c:
        started(c)
        r = c.post(PREDICT, json=body(jpeg))
        assert error(r, status) == (message or failure.args[0])
        assert r.headers.get("retry-after") == retry_after


def test_a_model_slower_than_the_deadline_is_504(tmp_path, jpeg):
    fake = FakeBackend()
    with TestClient(create_app(settings(tmp_path, request_timeout_s=0.2), fake)) as c:
        started(c)
        fake.delay_s = 1.0  # the model slows down once warmed up
        assert error(c.post(PREDICT, json=body(jpeg)), 504) == (
            "no answer from the model within 0.2 s"
        )


def test_loading_then_ready(tmp_path, jpeg):
    fake = FakeBackend(hold_start=asyncio.Event())
    with TestClient(create_app(settings(tmp_path), fake)) as c:
        assert error(c.get("/healthz/startup"), 503) == "model is loading"
        assert error(c.get("/healthz/ready"), 503) == "model is loading"
        assert error(c.post(PREDICT, json=body(jpeg)), 503) == "model is loading; retry shortly"
        # TF Serving's status answers while loading, with the version's state.
        status = c.get("/v1/models/saccader").json()["model_version_status"]
        assert [(v["version"], v["state"]) for v in status] == [("1", "LOADING")]
        assert c.get("/healthz/live").json() == {"status": "alive"}
        c.portal.call(fake.hold_start.set)
        started(c)
        assert c.get("/healthz/ready").json() == {"status": "ready", "model": "saccader"}
        assert c.post(PREDICT, json=body(jpeg)).status_code == 200
    assert [p.closed for p in fake.opened] == [True]


def test_a_model_that_failed_to_load_says_why_without_paths(tmp_path, jpeg):
    fake = FakeBackend(fail_start=OSError("SavedModel file does not exist at: /models/x/1"))
    with TestClient(create_app(settings(tmp_path), fake)) as c:
        failed_to_load(c)
        expected = "model failed to load: OSError: SavedModel file does not exist at: <path>"
        assert error(c.get("/healthz/startup"), 503) == expected
        assert error(c.post(PREDICT, json=body(jpeg)), 503) == expected
        assert error(c.post(EXPLAIN, json=body(jpeg)), 503) == expected


def test_shutting_down_refuses_work_but_not_status(client, jpeg):
    client.app.state.plane.shutting_down = True
    assert error(client.post(PREDICT, json=body(jpeg)), 503) == "the service is shutting down"
    assert error(client.get("/healthz/ready"), 503) == "shutting down"
    assert client.get("/v1/models/saccader").status_code == 200


def test_status_and_metadata(client):
    assert client.get("/v1/models/saccader").json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert client.get("/v1/models/saccader/versions/1/metadata").json()["model_spec"] == {
        "name": "saccader",
        "signature_name": "",
        "version": "1",
    }
    assert error(client.get("/v1/models/saccader/versions/3"), 404) == (
        "Could not find version 3 of model saccader"
    )
    assert error(client.get("/v1/models/other/metadata"), 404) == (
        "Servable not found for request: Latest(other)"
    )


def test_explain_without_a_local_copy_is_503_naming_the_setting(tmp_path, jpeg):
    """Beside TF Serving (a backend not in this process), explanations need the gateway's
    own copy of the version."""
    with TestClient(create_app(settings(tmp_path), FakeBackend(in_process=False))) as c:
        message = error(started(c).post(EXPLAIN, json=body(jpeg)), 503)
    assert message.startswith("no local copy of model saccader version 1 in the gateway")
    assert message.endswith("explanations need the SavedModel there (GLIMPSE_MODEL_DIR)")
    assert "/" not in message.split("(")[0]  # no server path


def test_explain_admission_is_the_same_admission(client, jpeg):
    assert error(client.post("/v1/models/nope:explain", json=body(jpeg)), 404) == (
        "Servable not found for request: Latest(nope)"
    )
    too_many = body(*[jpeg] * 65)
    assert error(client.post(EXPLAIN, json=too_many), 400) == (
        "65 instances is over the limit of 64"
    )
    client.app.state.plane.shutting_down = True
    assert error(client.post(EXPLAIN, json=body(jpeg)), 503) == "the service is shutting down"


def test_jobs_routes_exist_only_when_enabled(client, tmp_path):
    assert error(client.get("/v1/projects/p/jobs"), 404) == "Not Found"
    with TestClient(create_app(settings(tmp_path, jobs_enabled=True), FakeBackend())) as c:
        started(c)
        assert c.get("/v1/projects/p/jobs").json() == {"jobs": []}
        assert error(c.get("/v1/projects/p/jobs/none"), 404) == "job none not found"


def test_unknown_route_and_method(client):
    assert error(client.get("/v2/nothing"), 404) == "Not Found"
    assert error(client.delete("/healthz/live"), 405) == "Method Not Allowed"
    # TF Serving's status route takes any model name, so a GET on a verb asks for a model
    # named "saccader:predict".
    assert error(client.get(PREDICT), 404) == (
        "Servable not found for request: Latest(saccader:predict)"
    )


@pytest.mark.parametrize("byte_range", ["bytes=999999-", "bytes=abc", "bytes=5-1", "items=0-1"])
def test_demo_assets_ignore_any_range(client, byte_range):
    """The files are a few kB: served whole, never a plain-text range error."""
    whole = client.get("/demo/demo.js")
    r = client.get("/demo/demo.js", headers={"Range": byte_range})
    assert r.status_code == 200 and r.content == whole.content
    assert r.headers["content-security-policy"] == whole.headers["content-security-policy"]


# Version labels (service/served_model.py): the config's own, and one only the "model server"
# knows, as TF Serving's models.config would (the fake resolves it like TF Serving).
LABELS = {"stable": 1, "canary": 2}


@pytest.fixture
def labelled(tmp_path):
    fake = FakeBackend(labels={"served": 1})
    with TestClient(create_app(settings(tmp_path, version_labels=LABELS), fake)) as c:
        yield started(c)


def test_labels_and_version_names_reach_the_served_version(labelled, jpeg):
    for path in (
        "/v1/models/saccader/labels/stable:predict",
        "/v1/models/saccader/labels/served:predict",
        "/v1/projects/p/models/saccader/versions/stable:predict",
        "/v1/projects/p/models/saccader/versions/served:predict",
        "/v1/projects/p/models/saccader/versions/1:predict",
    ):
        assert labelled.post(path, json=body(jpeg)).status_code == 200, path
    status = labelled.get("/v1/models/saccader/labels/stable").json()
    assert [v["version"] for v in status["model_version_status"]] == ["1"]
    meta = labelled.get("/v1/models/saccader/labels/served/metadata").json()
    assert meta["model_spec"] == {"name": "saccader", "signature_name": "", "version": "1"}


TFS, AIP = "/v1/models/saccader", "/v1/projects/p/models/saccader"
NO_LABEL = "Unrecognized servable version label: nope"  # TF Serving's words (server_core.cc)
NO_V2 = "Could not find version 2 of model saccader"
NOT_FOUND = "Could not find version {} of model saccader"
TOO_BIG = "9223372036854775808"  # int64's maximum + 1


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("POST", f"{TFS}/labels/nope:predict", 400, NO_LABEL),
        ("POST", f"{TFS}/labels/nope:explain", 400, NO_LABEL),
        ("GET", f"{TFS}/labels/nope", 400, NO_LABEL),
        ("POST", f"{TFS}/labels/canary:predict", 404, NO_V2),
        ("GET", f"{TFS}/labels/canary/metadata", 404, NO_V2),
        (
            "POST",
            "/v1/models/nope/labels/stable:predict",
            404,
            "Servable not found for request: Latest(nope)",
        ),
        ("POST", f"{TFS}/versions/stable:predict", 404, "Could not find version stable"),
        (
            "POST",
            f"{TFS}/versions/{TOO_BIG}:predict",
            400,
            f"Failed to convert version: {TOO_BIG} to numeric.",
        ),
        ("POST", f"{AIP}/versions/nope:predict", 404, NOT_FOUND.format("nope")),
        ("POST", f"{AIP}/versions/a.b:explain", 404, NOT_FOUND.format("a.b")),
        ("GET", f"{AIP}/versions/nope", 404, NOT_FOUND.format("nope")),
        ("GET", f"{AIP}/versions/canary", 404, NO_V2),
    ],
)
def test_unknown_labels_and_version_names(labelled, jpeg, method, path, status, message):
    """TF Serving's refusals on its routes (an unknown label is its 400), a 404 for a version
    name that names nothing on AI Platform's."""
    payload = body(jpeg) if method == "POST" else None
    assert error(labelled.request(method, path, json=payload), status) == message


def test_version_labels_are_checked_at_start_up(monkeypatch):
    from pydantic import ValidationError

    for bad in ({"v1": 1}, {"7": 7}, {"a-b": 1}, {"é": 1}, {"x": -1}):
        with pytest.raises(ValidationError):
            GatewaySettings(version_labels=bad)
    monkeypatch.setenv("GLIMPSE_VERSION_LABELS", '{"stable": 3, "Canary_2": 4}')
    assert GatewaySettings().version_labels == {"stable": 3, "Canary_2": 4}


def _on_disk(tmp_path, *numbers: int) -> None:
    for n in numbers:
        (tmp_path / "saccader" / str(n)).mkdir(parents=True)
        (tmp_path / "saccader" / str(n) / "saved_model.pb").write_bytes(b"")


def test_model_and_version_resources(tmp_path):
    _on_disk(tmp_path, 1, 2, 3)
    fake = FakeBackend()
    with TestClient(create_app(settings(tmp_path, version_labels=LABELS), fake)) as c:
        started(c)
        model = c.get("/v1/projects/p/models/saccader").json()
        default = model["defaultVersion"]
        assert model["name"] == "projects/p/models/saccader" and model["description"]
        assert default["name"] == "projects/p/models/saccader/versions/v1"
        assert default["isDefault"] is True and default["state"] == "READY"
        assert default["framework"] == "TENSORFLOW" and default["labels"] == {
            "stable": "version-label"
        }
        assert default["createTime"].endswith("Z") and default["pythonVersion"].startswith("3.")
        assert c.get("/v1/projects/p/models/saccader/versions/stable").json() == default
        assert c.get("/v1/projects/p/models/saccader/versions/1").json() == default

        first = c.get("/v1/projects/p/models/saccader/versions", params={"pageSize": 2}).json()
        assert [v["name"][-2:] for v in first["versions"]] == ["v1", "v2"]
        second = c.get(
            "/v1/projects/p/models/saccader/versions",
            params={"pageSize": 2, "pageToken": first["nextPageToken"]},
        ).json()
        assert [v["name"][-2:] for v in second["versions"]] == ["v3"]
        assert "nextPageToken" not in second
        other = second["versions"][0]
        assert other["state"] == "UNKNOWN" and "isDefault" not in other
        assert "serves version 1" in other["description"]
        assert str(tmp_path) not in c.get("/v1/projects/p/models/saccader/versions").text
        # A version on disk but not served answers 404 to work, as before.
        r = c.post(f"{AIP}/versions/v3:predict", json={"instances": [{"b64": "aGk="}]})
        assert error(r, 404) == "Could not find version 3 of model saccader"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"pageToken": "nope"}, "pageToken: not a token this server issued"),
        ({"pageSize": -1}, "query.pageSize: Input should be greater than or equal to 0"),
        ({"filter": "state=READY"}, "filter: not supported here; every version is listed"),
    ],
)
def test_version_list_refusals(client, params, message):
    r = client.get("/v1/projects/p/models/saccader/versions", params=params)
    assert error(r, 400) == message
    assert error(client.get("/v1/projects/p/models/other/versions"), 404) == (
        "Servable not found for request: Latest(other)"
    )


def test_version_state_follows_loading_and_load_errors(tmp_path):
    fake = FakeBackend(hold_start=asyncio.Event())
    with TestClient(create_app(settings(tmp_path, model_version=1), fake)) as c:
        loading = c.get("/v1/projects/p/models/saccader").json()["defaultVersion"]
        assert loading["state"] == "CREATING" and "errorMessage" not in loading
        assert error(c.get("/v1/models/saccader/labels/x"), 503) == (
            "model is loading; retry shortly"
        )
        c.portal.call(fake.hold_start.set)
        started(c)
    failing = FakeBackend(fail_start=OSError("SavedModel file does not exist at: /models/x/1"))
    with TestClient(create_app(settings(tmp_path, model_version=1), failing)) as c:
        failed_to_load(c)
        failed = c.get("/v1/projects/p/models/saccader/versions/v1").json()
        assert failed["state"] == "FAILED"
        assert failed["errorMessage"] == (
            "model failed to load: OSError: SavedModel file does not exist at: <path>"
        )


def test_label_routes_document_a_label(client):
    paths = client.app.openapi()["paths"]
    for path in (
        "/v1/models/{model}/labels/{version}:predict",
        "/v1/models/{model}/labels/{version}",
    ):
        (operation,) = paths[path].values()
        (param,) = [p for p in operation["parameters"] if p["name"] == "version"]
        assert param["description"].startswith("Version label"), path


def test_vertex_ids_are_checked_before_they_reach_names_or_headers(client, jpeg):
    """The project and location are echoed in resource names and rawPredict's headers: a
    project that is no id (here non-latin-1, which no header can carry) is a 404, not a 500."""
    path = "/v1/projects/%E2%82%AC/locations/us-central1/endpoints/saccader:rawPredict"
    assert error(client.post(path, json=body(jpeg)), 404).startswith("Endpoint not found")
    ok = "/v1/projects/demo/locations/us-central1/endpoints/saccader:rawPredict"
    r = client.post(ok, json=body(jpeg))
    assert r.status_code == 200 and r.headers["x-vertex-ai-deployed-model-id"] == "saccader-v1"


@pytest.mark.parametrize(
    ("path", "content", "message"),
    [
        # TF Serving's own REST doc example, sent to a model this gateway does not serve.
        ("/v1/models/half:predict", b'{"instances": [1.0, 5.0]}', "Latest(half)"),
        ("/v1/models/half:predict", b"{not json", "Latest(half)"),
        ("/v1/models/saccader/versions/9:predict", b'{"instances": [1.0]}', "9"),
        ("/v1/models/saccader/labels/nope:classify", b"[]", "nope"),
        ("/v1/projects/p/models/half/versions/v1:predict", b"{}", "half"),
        ("/v1/models/saccader/versions/7:explain", b'{"instances": 3}', "7"),
        ("/v1/projects/p/locations/l/endpoints/half:predict", b"{", "half"),
        ("/v1/projects/p/locations/l/endpoints/half:rawPredict", b"[]", "half"),
        ("/v2/models/half/infer", b"{not json", "half"),
        ("/v2/models/saccader/versions/9/infer", b"{}", "9"),
    ],
)
def test_an_unknown_model_or_version_is_found_before_the_body_is_read(
    client, path, content, message
):
    """TF Serving's order: the servable a URL names, then its body (404 whatever the body)."""
    status = 400 if "labels/nope" in path else 404  # an unknown label: TF Serving's 400
    assert message in error_message(client.post(path, content=content), status)


@pytest.mark.parametrize(
    ("path", "payload", "status"),
    [
        (
            "/v1/projects/p/locations/l/endpoints/saccader:explain",
            {"instances": [{"b64": "AA=="}], "deployedModelId": "d" * 100_000},
            404,
        ),
        ("/v1/projects/p/locations/l/endpoints/" + "e" * 8000 + ":predict", {}, 404),
        ("/v1/models/saccader:predict", {"signature_name": "s" * 10_000, "inputs": [1]}, 400),
        ("/v1/models/" + "m" * 5000 + ":predict", {}, 404),
        ("/v1/models/saccader/versions/" + "9" * 5000 + ":predict", {}, 400),
        (
            "/v2/models/saccader/infer",
            {
                "inputs": [{"name": "n" * 5000, "datatype": "BYTES", "shape": [1], "data": ["x"]}],
                "parameters": {"signature_name": "sizes"},
            },
            400,
        ),
    ],
)
def test_echoed_input_is_bounded(client, path, payload, status):
    """A message repeats at most 100 characters of any one client string, with a count of
    the rest, and no message is longer than 1,000 characters."""
    message = error(client.post(path, json=payload), status)
    assert len(message) < 400 and "more characters" in message, message[:500]


def test_body_parse_errors_say_json_parse_error(client):
    """A body that is not UTF-8, or an integer past Python's 4,300-digit conversion limit,
    is "JSON Parse error: ..." like any other unreadable JSON; no "Value error, " prefix."""
    r = client.post(PREDICT, content=b'{"instances": "\xff\xfe"}')
    assert error(r, 400).startswith("JSON Parse error: the body is not UTF-8")
    r = client.post(PREDICT, content=b'{"instances": [' + b"9" * 4301 + b"]}")
    assert error(r, 400).startswith("JSON Parse error: ")
    r = client.post(PREDICT, content=b'{"parameters": {}}')
    assert error(r, 400) == "Missing 'inputs' or 'instances' key"
