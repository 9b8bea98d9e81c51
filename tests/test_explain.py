""":explain end to end: the real gateway over HTTP, embedded backend, tiny model."""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from service.explain.schemas import METHODS as ALL_METHODS
from tests.conftest import body, encode
from tests.rerun import as_list, assert_probability, rerun
from tests.servers import explainer_held, live_server, wait_until

EXPLAIN = "/v1/models/saccader:explain"
LEGACY_KEYS = {"attributions", "baseline_score", "example_score", "label_index", "output_name"}
# Cheap settings so every method runs in about a second on the tiny model.
CHEAP = {"steps": 4, "smoothgrad_samples": 3, "faithfulness_steps": 4}


@pytest.fixture(scope="module")
def photo() -> bytes:
    rng = np.random.default_rng(3)
    return encode(rng.integers(0, 255, (260, 340, 3), dtype=np.uint8), "JPEG")


def post(server, payload, path=EXPLAIN) -> httpx.Response:
    return httpx.post(server.url + path, json=payload, timeout=120)


def picture(image: dict) -> Image.Image:
    fmt, data = next((k, v) for k, v in image.items() if v)
    decoded = Image.open(io.BytesIO(base64.b64decode(data)))
    assert decoded.format == {"b64_jpeg": "JPEG", "b64_png": "PNG"}[fmt]
    return decoded


def only(r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text[:300]
    [explanation] = r.json()["explanations"]
    [entry] = explanation["attributions_by_label"]
    return {**entry, "_explanation": explanation}


def test_default_is_glimpses_in_the_legacy_shape(gateway, photo):
    payload = body(photo)
    payload["instances"][0]["key"] = "photo-7"
    e = only(post(gateway, payload))
    assert e["_explanation"]["key"] == "photo-7"
    assert LEGACY_KEYS <= set(e) and e["method"] == "glimpses"
    assert e["explained_model"] == "glimpses" and e["output_name"] == "logits"
    assert picture(e["attributions"]["input_image_bytes"]).size == (224, 224)
    glimpses = e["glimpses"]
    assert [g["order"] for g in glimpses] == [1, 2, 3, 4, 5, 6]
    assert glimpses[0]["new_pixels"] == 1.0
    for g in glimpses:
        assert 0.0 <= g["probability"] <= 1.0 and 0.0 <= g["without"] <= 1.0
        assert g["drop"] == pytest.approx(e["probability"] - g["without"], abs=1e-9)
    # No glimpse seen is zero logits; the glimpses add nothing up (that is SAG's job).
    assert e["baseline_score"] == 0.0 and "approx_error" not in e
    f = e["faithfulness"]
    assert f["metric"] == "equal_area_cells" and f["blur_sigma"] == 16.0
    assert f["area"] == pytest.approx(112 * 144 / 224**2)  # the six glimpses' own area
    assert 0.0 <= f["sufficiency_probability"] <= 1.0
    assert -1.0 <= f["necessity_drop"] <= f["full_probability"] <= 1.0
    assert {
        type(f[k]) for k in ("sufficiency_keeps_prediction", "necessity_changes_prediction")
    } == {bool}
    assert "pixel_deletion_auc" not in f  # pixel curves only when asked for
    assert e["visualization"]["color_map"] == "viridis"
    assert set(e["_explanation"]["timing_ms"]) == {"attribution", "faithfulness", "visualization"}


# Every method but the default, so that a method added to the schema is tested here too.
METHODS = [m for m in ALL_METHODS if m != "glimpses"]
PATHS = [
    "/v1/models/saccader:explain",
    "/v1/models/saccader/versions/1:explain",
    "/v1/projects/demo/models/saccader:explain",
    "/v1/projects/demo/models/saccader/versions/v1:explain",
]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_every_url_form(gateway, photo, method):
    params = {"method": method, "attribution_map": True, "faithfulness_steps": 4}
    if method in ("integrated_gradients", "blur_ig", "xrai"):
        params["steps"] = 4
    if method == "smoothgrad":
        params["smoothgrad_samples"] = 3
    path = PATHS[METHODS.index(method) % len(PATHS)]
    e = only(post(gateway, body(photo, **params), path))
    assert e["method"] == method and LEGACY_KEYS <= set(e)
    assert picture(e["attributions"]["input_image_bytes"]).size == (224, 224)
    values = np.array(e["attribution_map"]["values"])
    assert values.shape == (224, 224) and np.isfinite(values).all()
    assert e["explained_model"] == ("glimpses" if method == "sag" else "full_image")
    if method in ("integrated_gradients", "blur_ig", "xrai"):
        assert e["approx_error"] is not None and e["approx_error"] >= 0.0
    assert e["_explanation"]["model_evaluations"] > 0


def test_every_glimpse_number_is_the_model_rerun_on_those_glimpses(gateway, photo):
    """Each glimpse's probability is what :predict gives from that box alone, and `without`
    what it gives from all the others: anyone can check them from outside."""
    e = only(post(gateway, body(photo, num_glimpses=4, faithfulness=False)))
    k, boxes = e["label_index"], [as_list(g["box"]) for g in e["glimpses"]]
    for i, g in enumerate(e["glimpses"]):
        assert_probability(rerun(gateway, photo, [boxes[i]]), k, g["probability"])
        others = boxes[:i] + boxes[i + 1 :]
        assert_probability(rerun(gateway, photo, others), k, g["without"])
    assert_probability(rerun(gateway, photo, boxes), k, e["probability"])


def test_pixel_curves_on_request(gateway, photo):
    e = only(post(gateway, body(photo, pixel_curves=True, faithfulness_steps=4)))
    f = e["faithfulness"]
    assert 0.0 <= f["pixel_deletion_auc"] <= 1.0 and 0.0 <= f["pixel_insertion_auc"] <= 1.0
    assert len(f["pixel_deletion_curve"]) == len(f["pixel_insertion_curve"]) == f["steps"] + 1
    # Deletion ends with everything grey and insertion starts there: the same image.
    assert f["pixel_deletion_curve"][-1] == pytest.approx(f["pixel_insertion_curve"][0], abs=1e-5)


def test_faithfulness_area_is_the_glimpses_own_unless_set(gateway, photo):
    e = only(post(gateway, body(photo, method="grad_cam", num_glimpses=2)))
    assert e["faithfulness"]["area"] == pytest.approx(2 * 64 * 64 / 224**2, abs=0.01)
    e = only(post(gateway, body(photo, method="grad_cam", faithfulness_area=0.5)))
    assert e["faithfulness"]["area"] == pytest.approx(0.5, abs=0.01)


def test_smoothgrad_modifies_any_gradient_method(gateway, photo):
    e = only(post(gateway, body(photo, method="integrated_gradients", smoothgrad=True, **CHEAP)))
    assert e["method"] == "integrated_gradients+smoothgrad"
    assert "approx_error" not in e  # completeness does not hold for averaged squares
    # 3 noisy copies x 4 steps, plus the baseline score and the faithfulness runs.
    assert e["_explanation"]["model_evaluations"] >= 12


def test_label_index_chooses_the_class(gateway, photo):
    e = only(post(gateway, body(photo, method="grad_cam", label_index=42, faithfulness=False)))
    assert e["label_index"] == 42 and e["label_name"] == "agama"
    assert e["synset"] == "n01687978" and "faithfulness" not in e


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"method": "lime"}, "parameters.method"),
        ({"method": "grad_cam", "smoothgrad": True}, "smoothgrad modifies a gradient method"),
        ({"method": "glimpses", "steps": 10}, "steps applies to"),
        ({"method": "integrated_gradients", "steps": 301}, "parameters.steps"),
        ({"method": "vanilla_gradients", "visualization": {"polarity": "both"}}, "magnitudes"),
        (
            {"visualization": {"clip_below_percentile": 90, "clip_above_percentile": 50}},
            "clip_below_percentile must be below",
        ),
        ({"visualization": {"color_map": "jet"}}, "visualization.color_map"),
        (
            {"method": "blur_ig", "steps": 300, "smoothgrad": True, "smoothgrad_samples": 10},
            "model evaluations",
        ),
        ({"num_glimpses": 17}, "parameters.num_glimpses"),
        ({"label_index": 1000}, "1000 is not a class of this model (it has 1000: 0..999)"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_parameters_are_400_naming_the_problem(gateway, photo, params, message):
    r = post(gateway, body(photo, **params))
    assert r.status_code == 400, r.text[:300]
    assert message in r.json()["error"]


def test_request_limits(gateway, photo):
    r = post(gateway, body(*[photo] * 9))
    assert r.status_code == 400 and "explain limit of 8" in r.json()["error"]
    r = post(gateway, body(*[photo] * 8, method="integrated_gradients", steps=300))
    assert r.status_code == 400 and "model evaluations" in r.json()["error"]


def test_unknown_model_and_version(gateway, photo):
    assert post(gateway, body(photo), "/v1/models/other:explain").status_code == 404
    r = post(gateway, body(photo), "/v1/models/saccader/versions/2:explain")
    assert r.status_code == 404 and "version 2" in r.json()["error"]
    r = httpx.post(gateway.url + EXPLAIN, content=b"{", timeout=30)  # no content type
    assert r.status_code == 400 and r.json()["error"].startswith("JSON Parse error")


def test_sag_graph(gateway, photo):
    params = {"method": "sag", "num_glimpses": 6, "visualization": {"output_format": "png"}}
    e = only(post(gateway, body(photo, **params)))
    g = e["sag"]
    assert g["search"] == "exact" and g["threshold"] == 0.9
    assert picture(g["image"]).format == "PNG"
    assert picture(e["attributions"]["input_image_bytes"]).format == "PNG"
    nodes = {n["id"]: n for n in g["nodes"]}
    assert g["roots"] and all(r in g["minimal_sufficient_sets"] for r in g["roots"])
    for root in g["roots"]:
        node = next(n for n in g["nodes"] if n["glimpses"] == root)
        assert node["minimal_sufficient"] and node["relative_confidence"] >= 0.9 - 1e-9
    for edge in g["edges"]:
        parent, child = nodes[edge["source"]], nodes[edge["target"]]
        assert set(child["glimpses"]) == set(parent["glimpses"]) - {edge["removed"]}
        drop = parent["relative_confidence"] - child["relative_confidence"]
        assert edge["drop"] == pytest.approx(max(drop, 0.0), abs=1e-9)
    # Every node's confidence is the model re-run on exactly its glimpses.
    boxes = [as_list(x["box"]) for x in e["glimpses"]]
    assert g["full_confidence"] == pytest.approx(e["probability"], abs=1e-4)
    for n in g["nodes"][:5]:
        chosen = [boxes[i - 1] for i in n["glimpses"]]
        assert_probability(rerun(gateway, photo, chosen), e["label_index"], n["confidence"])


def test_visualisation_settings_change_the_picture(gateway, photo):
    def image(**vis) -> np.ndarray:
        params = {"method": "occlusion", "faithfulness": False, "visualization": vis}
        e = only(post(gateway, body(photo, **params)))
        return np.asarray(picture(e["attributions"]["input_image_bytes"]), np.float64)

    plain = image(output_format="png")
    outlined = image(type="outlines", output_format="png")
    over_photo = image(overlay_type="original", color_map="red_green", output_format="png")
    masked = image(overlay_type="mask_black", polarity="both", output_format="png")
    assert not np.array_equal(plain, outlined) and not np.array_equal(plain, over_photo)
    assert not np.array_equal(masked, over_photo)


def test_a_deadline_stops_the_work_and_the_service_recovers(gateway_settings, photo):
    with live_server(gateway_settings(request_timeout_s=1.5)) as server:
        assert post(server, body(photo, faithfulness=False)).status_code == 200  # model loaded
        started = time.monotonic()
        r = post(server, body(photo, method="blur_ig", steps=300))
        assert r.status_code == 504 and "1.5 s" in r.json()["error"]
        assert time.monotonic() - started < 10
        # The abandoned work stops at its next model call, so the next request is served.
        e = only(post(server, body(photo, method="grad_cam", faithfulness=False)))
        assert e["method"] == "grad_cam"


def test_too_many_queued_explanations_is_429(gateway_settings, photo):
    with live_server(gateway_settings(explain_max_pending=2)) as server:
        slow = body(photo, method="blur_ig", steps=8, faithfulness=False)
        with ThreadPoolExecutor(2) as pool:
            with explainer_held(server) as explainer:  # two admitted, both still pending
                admitted = [pool.submit(post, server, slow) for _ in range(2)]
                wait_until(lambda: explainer.pending == 2)
                third = post(server, slow)
            assert [a.result().status_code for a in admitted] == [200, 200]
        assert third.status_code == 429, third.text
        assert "2 explanations are queued or running" in third.json()["error"]
        assert post(server, body(photo, faithfulness=False)).status_code == 200
