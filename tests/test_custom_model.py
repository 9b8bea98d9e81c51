"""A model trained on a user's labels, through every surface of a running gateway: it is
trained while the gateway serves the ImageNet model and served beside it without a restart;
then TF Serving's, AI Platform's and Vertex AI's predict, the tensor path, explanations
(every family, SAG, the user's own boxes), a batch job naming the model, the Python client and
`glimpse predict` all answer with the user's labels and no invented synset."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import body
from tests.servers import live_server, wait_until
from tests.test_training import COLOURS, _dataset, _spec

LABELS = sorted(COLOURS)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_export, gateway_settings):
    """A gateway on a model base holding the tiny ImageNet model; `colours` is trained into
    that base while it runs. Yields (gateway, photo folder, seconds until served)."""
    from model_export.training.trainer import train

    tmp = tmp_path_factory.mktemp("custom")
    base = tmp / "models"
    (base / "saccader").mkdir(parents=True)
    (base / "saccader" / "1").symlink_to(tiny_export, target_is_directory=True)
    import_file = _dataset(tmp)
    settings = gateway_settings(
        model_dir=base, jobs_db=tmp / "jobs.sqlite3", jobs_local_root=tmp, model_poll_s=0.5
    )
    with live_server(settings) as gw:
        assert httpx.get(f"{gw.url}/v1/models").json()["models"] == ["saccader"]
        report = train(_spec(tmp, import_file))
        published = time.monotonic()

        def available() -> bool:
            r = httpx.get(f"{gw.url}/v1/models/colours")
            return r.status_code == 200 and r.json()["model_version_status"][0]["state"] == (
                "AVAILABLE"
            )

        wait_until(available, timeout=30)
        assert report.path == base / "colours" / "1"
        yield gw, tmp / "photos", time.monotonic() - published


@pytest.fixture
def red(served) -> bytes:
    return (served[1] / "red0.png").read_bytes()


def _post(gw, path: str, payload: dict) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", json=payload, timeout=120)


def _check_labels(prediction: dict) -> None:
    assert prediction["top_class"]["label"] in LABELS
    assert prediction["top_class"]["synset"] == ""
    assert [c["label"] for c in prediction["top_k"]] and len(prediction["top_k"]) <= 3
    assert {c["label"] for c in prediction["top_k"]} <= set(LABELS)
    assert prediction["full_image"]["label"] in LABELS
    assert set(prediction["class_names"]) <= set(LABELS)


def test_served_beside_the_imagenet_model_without_a_restart(served):
    gw, _, seconds = served
    assert httpx.get(f"{gw.url}/v1/models").json()["models"] == ["colours", "saccader"]
    assert seconds < 30


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/colours:predict",
        "/v1/models/colours/versions/1:predict",
        "/v1/projects/p/models/colours:predict",
        "/v1/projects/p/locations/l/endpoints/colours:predict",
    ],
)
def test_every_predict_route_answers_with_the_users_labels(served, red, path):
    r = _post(served[0], path, body(red))  # top_k left out: every one of the 3 labels
    assert r.status_code == 200, r.text[:300]
    _check_labels(r.json()["predictions"][0])


def test_top_k_above_the_number_of_labels_is_a_400_naming_the_limit(served, red):
    r = _post(served[0], "/v1/models/colours:predict", body(red, top_k=4))
    assert r.status_code == 400 and "top_k" in r.json()["error"]


def test_the_tensor_path_and_metadata(served, red):
    gw = served[0]
    payload = {"signature_name": "serving_default", "instances": [{"b64": "x"}]}
    import base64

    payload["instances"] = [{"input_image_bytes": {"b64": base64.b64encode(red).decode()}}]
    r = _post(gw, "/v1/models/colours:predict", payload)
    assert r.status_code == 200, r.text[:300]
    assert set(r.json()["predictions"][0]["class_names"]) <= set(LABELS)
    meta = httpx.get(f"{gw.url}/v1/models/colours/metadata").json()
    assert "serving_default" in json.dumps(meta)


def test_the_users_own_glimpse_boxes(served, red):
    boxes = [[0, 0, 64, 64], [100, 100, 164, 164]]
    r = _post(served[0], "/v1/models/colours:predict", body(red, glimpse_boxes=boxes))
    assert r.status_code == 200, r.text[:300]
    prediction = r.json()["predictions"][0]
    _check_labels(prediction)
    assert [g["box"] for g in prediction["glimpses"]][0]["ymax"] == 64


@pytest.mark.parametrize("method", ["glimpses", "sag", "integrated_gradients", "grad_cam"])
def test_explanations_name_the_users_labels(served, red, method):
    r = _post(served[0], "/v1/models/colours:explain", body(red, method=method, faithfulness=False))
    assert r.status_code == 200, r.text[:300]
    [e] = r.json()["explanations"][0]["attributions_by_label"]
    assert e["label_name"] in LABELS and e["synset"] == ""
    assert 0 <= e["label_index"] < 3


def test_a_label_index_beyond_the_users_labels_is_a_400(served, red):
    r = _post(served[0], "/v1/models/colours:explain", body(red, label_index=3))
    assert r.status_code == 400
    assert "3 is not a class of this model (it has 3: 0..2)" in r.json()["error"]


def test_a_batch_job_and_the_python_client_on_the_model(served, red):
    from glimpse_client import Client

    gw, photos, _ = served
    root = photos.parent
    lines = [json.dumps({"input_image_bytes": {"b64": body(red)["instances"][0][
        "input_image_bytes"]["b64"]}, "key": f"k{i}"}) for i in range(3)]  # fmt: skip
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    with Client(gw.url, model="colours", project="p") as client:
        prediction = client.predict(red, top_k=3)
        assert prediction.top_class.label in LABELS and prediction.top_class.synset == ""
        client.submit_job("in.jsonl", "out", "colours_job", num_glimpses=2, top_k=2)
        job = client.wait_job("colours_job", timeout=120, poll_interval=0.1)
    assert job.succeeded, job.body
    rows = [
        json.loads(line)
        for path in sorted((root / "out").glob("prediction.results-*"))
        for line in path.read_text().splitlines()
    ]
    assert len(rows) == 3
    for row in rows:
        assert row["top_class"]["label"] in LABELS and row["key"].startswith("k")


def test_glimpse_predict_prints_the_users_label(served):
    gw, photos, _ = served
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "predict", str(photos / "red0.png"),
         "--url", gw.url, "--model", "colours"],
        capture_output=True, text=True, timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert any(label in done.stdout for label in LABELS)
    assert "()" not in done.stdout


def test_the_demo_picks_the_model_and_shows_its_labels(served, page):
    """The demo's model picker: the user's model answers with its own three labels (the
    page leaves top_k at the model's own when the field is untouched)."""
    from playwright.sync_api import expect

    from tests.test_demo_browser import open_demo, wait_done

    gw, photos, _ = served
    open_demo(page, gw.url)
    expect(page.locator("#model-row")).to_be_visible()
    page.select_option("#model", "colours")
    page.set_input_files("#photo", str(photos / "green0.png"))
    wait_done(page)
    assert page.locator("#top-class").inner_text() in LABELS
    expect(page.locator("#top-k-list li")).to_have_count(3)
    expect(page.locator("#error")).to_be_hidden()
