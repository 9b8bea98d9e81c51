"""Many models on one data plane, through every protocol's adapter, with a fake backend: each
model's versions, labels, readiness and status are its own; new versions and models are served
without a restart, old ones drained before they unload, and a model that fails does not take
the others down."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import GatewaySettings
from tests.conftest import body, encode
from tests.errors import error_message as error
from tests.fake_backend import FakeBackend

pytestmark = pytest.mark.fast

CONFIG = """
model_config_list {
  config { name: "saccader" base_path: "%(base)s/saccader" model_platform: "tensorflow"
           version_labels { key: "stable" value: 1 } }
  config { name: "parts" base_path: "%(base)s/parts" model_platform: "tensorflow"
           model_version_policy { all {} } }
}
"""


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    import numpy as np

    return encode(np.full((32, 48, 3), 120, np.uint8), "JPEG")


def settings(tmp_path, **overrides) -> GatewaySettings:
    config = tmp_path / "models.config"
    config.write_text(CONFIG % {"base": tmp_path})
    given = {
        "model_dir": tmp_path,
        "model_config_file": config,
        "model_poll_s": 0.05,
        "log_format": "text",
        "jobs_enabled": False,
        **overrides,
    }
    return GatewaySettings(**given)


def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.01)


def states(client: TestClient, model: str) -> list[tuple[str, str]]:
    status = client.get(f"/v1/models/{model}").json()["model_version_status"]
    return [(v["version"], v["state"]) for v in status]


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(versions={"saccader": [1], "parts": [1, 2]})


@pytest.fixture
def client(tmp_path, fake):
    with TestClient(create_app(settings(tmp_path), fake)) as c:
        until(lambda: c.get("/healthz/startup").status_code == 200)
        yield c


def test_two_models_on_every_protocol(client, fake, jpeg):
    assert client.get("/v1/models").json() == {"models": ["parts", "saccader"]}
    assert states(client, "saccader") == [("1", "AVAILABLE")]
    assert states(client, "parts") == [("2", "AVAILABLE"), ("1", "AVAILABLE")]  # policy: all
    routes = [
        "/v1/models/parts:predict",  # TF Serving: the latest version
        "/v1/models/parts/versions/1:predict",
        "/v1/projects/p/models/parts/versions/v2:predict",  # AI Platform
        "/v1/models/saccader/labels/stable:predict",
        "/v1/projects/p/locations/us-central1/endpoints/parts:predict",  # Vertex
        "/v1/projects/p/locations/us-central1/endpoints/parts:rawPredict",
    ]
    for route in routes:
        r = client.post(route, json=body(jpeg, top_k=1))
        assert r.status_code == 200, (route, r.text)
    answered = [(model, version) for model, version, _, _ in fake.calls]
    assert answered == [
        ("parts", 2),
        ("parts", 1),
        ("parts", 2),
        ("saccader", 1),
        ("parts", 2),
        ("parts", 2),
    ]
    vertex = client.post(routes[4], json=body(jpeg, top_k=1)).json()
    assert vertex["deployedModelId"] == "parts-v2" and vertex["modelVersionId"] == "2"
    listed = client.get("/v1/projects/p/models").json()["models"]
    assert [(m["name"], m["defaultVersion"]["name"]) for m in listed] == [
        ("projects/p/models/parts", "projects/p/models/parts/versions/v2"),
        ("projects/p/models/saccader", "projects/p/models/saccader/versions/v1"),
    ]
    versions = client.get("/v1/projects/p/models/parts/versions").json()["versions"]
    assert [(v["name"][-2:], v["state"]) for v in versions] == [("v1", "READY"), ("v2", "READY")]
    metadata = client.get("/v1/models/parts/versions/1/metadata").json()
    assert metadata["model_spec"] == {"name": "parts", "signature_name": "", "version": "1"}
    endpoint = client.get("/v1/projects/p/locations/us-central1/endpoints/saccader").json()
    assert endpoint["deployedModels"][0]["id"] == "saccader-v1"


def test_each_model_has_its_own_labels_and_versions(client, jpeg):
    assert error(client.post("/v1/models/parts/labels/stable:predict", json=body(jpeg)), 400) == (
        "Unrecognized servable version label: stable"
    )
    assert error(client.post("/v1/models/saccader/versions/2:predict", json=body(jpeg)), 404) == (
        "Could not find version 2 of model saccader"
    )
    r = client.post("/v1/projects/p/locations/l1/endpoints/nope:predict", json=body(jpeg))
    assert error(r, 404).endswith("(this gateway serves endpoints parts, saccader)")


def holding(client: TestClient, model: str) -> tuple[threading.Event, Future]:
    """A request on the model's default version that has not reached the model yet (still
    decoding its images, say): it holds the version until the event is set."""
    release = threading.Event()
    version = client.app.state.plane.model(model).default()

    async def hold() -> None:
        with version.use():
            while not release.is_set():
                await asyncio.sleep(0.01)

    return release, client.portal.start_task_soon(hold)


def test_a_new_version_is_served_and_the_old_one_drained_then_unloaded(client, fake, jpeg):
    release, held = holding(client, "saccader")
    fake.versions["saccader"] = [2, 1]  # `glimpse export --version 2` wrote a new folder
    until(lambda: states(client, "saccader") == [("2", "AVAILABLE"), ("1", "UNLOADING")])
    [old] = [p for p in fake.opened if (p.model_name, p.version) == ("saccader", 1)]
    time.sleep(0.3)  # several polls: version 1 waits for the request that holds it
    assert states(client, "saccader")[1] == ("1", "UNLOADING") and not old.closed
    release.set()
    held.result(timeout=10)
    until(lambda: states(client, "saccader") == [("2", "AVAILABLE"), ("1", "END")])
    assert old.closed
    assert client.post("/v1/models/saccader:predict", json=body(jpeg)).status_code == 200
    assert fake.calls[-1][:2] == ("saccader", 2)
    assert error(client.post("/v1/models/saccader/versions/1:predict", json=body(jpeg)), 404)


def test_a_model_that_fails_to_load_is_reported_and_the_others_serve(tmp_path, jpeg):
    fake = FakeBackend(
        versions={"saccader": [1], "parts": [1]},
        fail_versions={("parts", 1): OSError("bad SavedModel at /models/parts/1")},
    )
    with TestClient(create_app(settings(tmp_path), fake)) as c:
        until(lambda: c.get("/healthz/startup").status_code == 200)
        assert c.get("/healthz/ready").json() == {"status": "ready", "model": "saccader"}
        failed = c.get("/v1/models/parts").json()["model_version_status"]
        assert failed == [
            {
                "version": "1",
                "state": "END",
                "status": {
                    "error_code": "UNKNOWN",
                    "error_message": "OSError: bad SavedModel at <path>",
                },
            }
        ]
        assert error(c.post("/v1/models/parts:predict", json=body(jpeg)), 503) == (
            "model failed to load: OSError: bad SavedModel at <path>"
        )
        assert c.post("/v1/models/saccader:predict", json=body(jpeg)).status_code == 200


@pytest.mark.parametrize("in_process", [True, False])
def test_a_failed_version_is_tried_again_when_it_may_work(tmp_path, jpeg, in_process):
    """In-process, a folder that failed is loaded again only once it changes (each try keeps
    TensorFlow's share of a load); beside a model server, at every poll."""
    fake = FakeBackend(
        versions={"saccader": [1], "parts": [1]},
        fail_versions={("parts", 1): OSError("not yet")},
        in_process=in_process,
    )
    with TestClient(create_app(settings(tmp_path), fake)) as c:
        until(lambda: c.get("/healthz/startup").status_code == 200)
        until(lambda: states(c, "parts") == [("1", "END")])
        fake.fail_versions.clear()  # the cause went away
        if in_process:
            time.sleep(0.3)  # several polls: the unchanged folder is not loaded again
            assert states(c, "parts") == [("1", "END")]
            (tmp_path / "parts" / "1").mkdir(parents=True)  # the folder changes
            (tmp_path / "parts" / "1" / "saved_model.pb").write_bytes(b"new")
        until(lambda: states(c, "parts") == [("1", "AVAILABLE")])
        assert c.post("/v1/models/parts:predict", json=body(jpeg)).status_code == 200


def test_models_come_and_go_with_the_config(tmp_path, jpeg):
    fake = FakeBackend(versions={"saccader": [1], "parts": [1], "birds": [4]})
    given = settings(tmp_path)
    with TestClient(create_app(given, fake)) as c:
        until(lambda: c.get("/healthz/startup").status_code == 200)
        assert error(c.post("/v1/models/birds:predict", json=body(jpeg)), 404)
        text = given.model_config_file.read_text().rstrip().removesuffix("}")
        given.model_config_file.write_text(
            text + f'config {{ name: "birds" base_path: "{tmp_path}/birds" }} }}'
        )
        until(lambda: c.post("/v1/models/birds:predict", json=body(jpeg)).status_code == 200)
        release, held = holding(c, "saccader")  # a request on it when it leaves the config
        given.model_config_file.write_text(
            f'model_config_list {{ config {{ name: "birds" base_path: "{tmp_path}/b" }} }}'
        )
        until(lambda: c.get("/v1/models").json() == {"models": ["birds"]})
        [saccader] = [p for p in fake.opened if p.model_name == "saccader"]
        time.sleep(0.3)  # several polls: it drains, not cut off
        assert not saccader.closed
        release.set()
        held.result(timeout=10)
        until(lambda: all(p.closed for p in fake.opened if p.model_name != "birds"))
        assert error(c.post("/v1/models/saccader:predict", json=body(jpeg)), 404) == (
            "Servable not found for request: Latest(saccader)"
        )
        assert c.get("/healthz/ready").status_code == 200
        # A config that cannot be read keeps the models served as they were.
        given.model_config_file.write_text("model_config_list { config {")
        time.sleep(0.2)
        assert c.post("/v1/models/birds:predict", json=body(jpeg)).status_code == 200


def test_without_a_config_every_model_folder_is_served(tmp_path, jpeg):
    fake = FakeBackend(versions={"saccader": [1], "parts": [3]})
    given = GatewaySettings(
        model_dir=tmp_path, model_poll_s=0.05, log_format="text", jobs_enabled=False
    )
    with TestClient(create_app(given, fake)) as c:
        until(lambda: c.get("/healthz/startup").status_code == 200)
        assert c.get("/v1/models").json() == {"models": ["saccader"]}
        (tmp_path / "parts" / "3").mkdir(parents=True)  # a new model folder appears,
        (tmp_path / "parts" / "3" / "saved_model.pb").write_bytes(b"")  # once it is whole
        until(lambda: c.post("/v1/models/parts:predict", json=body(jpeg)).status_code == 200)
        assert fake.calls[-1][:2] == ("parts", 3)


def test_a_model_server_that_cannot_be_asked_makes_its_models_unready(client, fake, jpeg):
    from service.errors import BackendUnavailable

    fake.discover_error = BackendUnavailable("model server: UNAVAILABLE: gone")
    until(lambda: client.get("/healthz/ready").status_code == 503)
    assert error(client.get("/healthz/ready"), 503) == "model server: UNAVAILABLE: gone"
    assert error(client.post("/v1/models/parts:predict", json=body(jpeg)), 503) == (
        "model server: UNAVAILABLE: gone"
    )
    fake.discover_error = None
    until(lambda: client.get("/healthz/ready").status_code == 200)


def test_jobs_name_their_model(tmp_path, jpeg):
    import json

    from tests.conftest import b64

    fake = FakeBackend(versions={"saccader": [1], "parts": [1]})
    given = settings(tmp_path, jobs_enabled=True, jobs_local_root=tmp_path)
    (tmp_path / "in.jsonl").write_text(json.dumps({"input_image_bytes": {"b64": b64(jpeg)}}))
    job = {
        "jobId": "j1",
        "predictionInput": {
            "dataFormat": "JSON",
            "inputPaths": ["in.jsonl"],
            "outputPath": "out",
            "region": "us-central1",
            "modelName": "projects/p/models/nope",
        },
    }
    with TestClient(create_app(given, fake)) as c:
        until(lambda: c.get("/healthz/startup").status_code == 200)
        assert error(c.post("/v1/projects/p/jobs", json=job), 400) == (
            "predictionInput.modelName: 'nope' is not served here (parts, saccader)"
        )
        job["predictionInput"]["modelName"] = "projects/p/models/parts"
        assert c.post("/v1/projects/p/jobs", json=job).status_code == 200
        until(lambda: c.get("/v1/projects/p/jobs/j1").json()["state"] == "SUCCEEDED")
        assert [call[:2] for call in fake.calls] == [("parts", 1)]
