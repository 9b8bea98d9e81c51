"""End-to-end: the real gateway over HTTP, embedded backend, tiny model."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import b64, body, encode
from tests.predictions import assert_same_prediction

PREDICT = "/v1/models/saccader:predict"


@pytest.fixture(scope="module")
def photo() -> bytes:
    rng = np.random.default_rng(0)
    return encode(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), "JPEG")


def post(server, payload, path=PREDICT, **kw) -> httpx.Response:
    return httpx.post(server.url + path, json=payload, timeout=60, **kw)


def test_prediction_shape(gateway, photo):
    payload = body(photo, num_glimpses=4, top_k=3)
    payload["instances"][0]["key"] = "photo-1"
    r = post(gateway, payload)
    assert r.status_code == 200, r.text
    [p] = r.json()["predictions"]
    assert p["key"] == "photo-1"
    assert len(p["top_k"]) == 3 and p["top_class"] == p["top_k"][0]
    assert set(p["top_class"]) == {"index", "synset", "label", "score"}
    assert [g["order"] for g in p["glimpses"]] == [1, 2, 3, 4]
    assert set(p["glimpses"][0]) == {"order", "box", "box_original", "centre", "new_pixels"}
    assert p["glimpses"][0]["new_pixels"] == 1.0
    assert 0 < p["coverage"] <= 1 / 3 + 1e-6
    assert set(p["full_image"]) == {"index", "synset", "label", "score"}
    png = Image.open(io.BytesIO(base64.b64decode(p["annotated_image_bytes"]["b64"])))
    assert png.format == "JPEG" and png.size == (224, 224)
    assert p["preprocessing"]["original_size"] == [300, 400]


def test_boxes_in_original_pixels(gateway, photo):
    p = post(gateway, body(photo)).json()["predictions"][0]
    crop = p["preprocessing"]["crop_box"]
    scale = (crop["ymax"] - crop["ymin"]) / 224
    for g in p["glimpses"]:
        b, o = g["box"], g["box_original"]
        assert o["ymin"] == pytest.approx(crop["ymin"] + b["ymin"] * scale, abs=0.01)
        assert o["xmax"] == pytest.approx(crop["xmin"] + b["xmax"] * scale, abs=0.01)
        assert 0 <= o["ymin"] < o["ymax"] <= 300 and 0 <= o["xmin"] < o["xmax"] <= 400


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/saccader/versions/1:predict",
        "/v1/projects/demo/models/saccader:predict",
        "/v1/projects/demo/models/saccader/versions/v1:predict",
    ],
)
def test_url_forms(gateway, photo, path):
    r = post(gateway, body(photo), path=path)
    assert r.status_code == 200, r.text


def test_bare_b64_instance_and_options(gateway, photo):
    payload = {
        "instances": [{"b64": b64(photo)}],
        "parameters": {"annotated_image": False, "original_pixels": False},
    }
    p = post(gateway, payload).json()["predictions"][0]
    assert "annotated_image_bytes" not in p
    assert "box_original" not in p["glimpses"][0]


def test_given_glimpse_boxes_are_the_glimpses(gateway, photo):
    """The auditor's counterfactual: the model decides from exactly the boxes given, in the
    order given, and answers in the usual shape."""
    boxes = [[10.5, 20.0, 80.0, 90.0], [0.0, 150.0, 64.0, 224.0], [50.0, 60.0, 70.0, 80.0]]
    p = post(gateway, body(photo, glimpse_boxes=boxes, top_k=3)).json()["predictions"][0]
    assert [[g["box"][k] for k in ("ymin", "xmin", "ymax", "xmax")] for g in p["glimpses"]] == boxes
    assert [g["order"] for g in p["glimpses"]] == [1, 2, 3]
    assert p["glimpses"][2]["new_pixels"] == pytest.approx(0.0)  # inside the first box
    # Coverage counts pixels by centre: rows 10..79 x cols 20..89, plus 64 x 74.
    assert p["coverage"] == pytest.approx((70 * 70 + 64 * 74) / 224**2)
    # The same boxes give the same answer; the policy's own boxes give the policy's answer.
    again = post(gateway, body(photo, glimpse_boxes=boxes, top_k=3)).json()["predictions"][0]
    assert_same_prediction(again, p)
    policy = post(gateway, body(photo, top_k=3)).json()["predictions"][0]
    own = [[g["box"][k] for k in ("ymin", "xmin", "ymax", "xmax")] for g in policy["glimpses"]]
    given = post(gateway, body(photo, glimpse_boxes=own, top_k=3)).json()["predictions"][0]
    assert_same_prediction(given, policy)


@pytest.mark.parametrize(
    ("boxes", "extra", "message"),
    [
        ([[0, 0, 10, 10], [5, 5, 5, 30]], {}, "glimpse_boxes[1]: the box is empty"),
        ([[0, 0, 10, 300]], {}, "glimpse_boxes[0]: [ymin, xmin, ymax, xmax] must lie"),
        ([[-2, 0, 10, 10]], {}, "glimpse_boxes[0]: [ymin, xmin, ymax, xmax] must lie"),
        ([[0, 0, 10]], {}, "glimpse_boxes[0]: List should have at least 4 items"),
        ([[0, 0, 10, "x"]], {}, "glimpse_boxes[0][3]: Input should be a valid number"),
        ([[0, 0, 10, 10]] * 17, {}, "glimpse_boxes: List should have at most 16 items"),
        ([], {}, "glimpse_boxes: List should have at least 1 item"),
        ([[0, 0, 10, 10]], {"num_glimpses": 2}, "num_glimpses (2) differs from the 1"),
    ],
)
def test_bad_glimpse_boxes_are_400_naming_the_box(gateway, photo, boxes, extra, message):
    r = post(gateway, body(photo, glimpse_boxes=boxes, **extra))
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_given_and_chosen_glimpses_share_a_batch(gateway, photo):
    """Concurrent requests with and without boxes land in one micro-batch and still get their
    own answers (two signatures, one model call each)."""
    boxes = [[0.0, 0.0, 100.0, 100.0]]

    async def fire():
        async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as client:
            calls = [
                client.post(
                    PREDICT, json=body(photo, glimpse_boxes=boxes) if i % 2 else body(photo)
                )
                for i in range(8)
            ]
            return await asyncio.gather(*calls)

    answers = [r.json()["predictions"][0] for r in asyncio.run(fire())]
    for i, p in enumerate(answers):
        assert len(p["glimpses"]) == (1 if i % 2 else 6)
        assert_same_prediction(p, answers[i % 2])


def test_the_annotated_picture_is_the_models_jpeg_or_the_format_asked(gateway, photo):
    def picture(**params) -> tuple[str, str]:
        p = post(gateway, body(photo, **params)).json()["predictions"][0]
        data = base64.b64decode(p["annotated_image_bytes"]["b64"])
        return Image.open(io.BytesIO(data)).format, p["annotated_image_format"]

    assert picture() == ("JPEG", "jpeg")  # the SavedModel's own, as it is
    assert picture(annotated_image_format="jpeg") == ("JPEG", "jpeg")
    assert picture(annotated_image_format="png") == ("PNG", "png")


def _formats() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    gif = io.BytesIO()
    frames = [Image.fromarray(rgb).convert("P"), Image.fromarray(255 - rgb).convert("P")]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    return {
        "jpeg": encode(rgb, "JPEG"),
        "grey_jpeg": encode(rgb, "JPEG", mode="L"),
        "cmyk_jpeg": encode(rgb, "JPEG", mode="CMYK"),
        "png": encode(rgb, "PNG"),
        "rgba_png": encode(rgb, "PNG", mode="RGBA"),
        "palette_png": encode(rgb, "PNG", mode="P"),
        "png16": encode(rgb[..., 0].astype(np.uint16) * 257, "PNG"),
        "webp": encode(rgb, "WEBP"),
        "bmp": encode(rgb, "BMP"),
        "animated_gif": gif.getvalue(),
    }


@pytest.mark.parametrize("fmt", list(_formats()))
def test_image_formats(gateway, fmt):
    r = post(gateway, body(_formats()[fmt]))
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["preprocessing"]["original_size"] == [120, 160]
    passthrough = fmt in {"jpeg", "grey_jpeg", "png", "png16"}
    assert (p["preprocessing"].get("converted_from") is None) == passthrough


def _bomb() -> bytes:
    # 1 x 50,000,000 px of one colour: a few KB of PNG, 150 MB once decoded.
    from PIL import PngImagePlugin  # noqa: F401

    img = Image.new("L", (10_000, 5_000))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"instances": []}, "instances: List should have at least 1 item"),
        ({"nope": 1}, "Missing 'inputs' or 'instances' key"),
        ({"instances": "x"}, "instances: Input should be a valid list"),
        (
            {"instances": [{"input_image_bytes": {"b64": "!!!"}}]},
            "instances[0].input_image_bytes: invalid base64",
        ),
        (
            {"instances": [{"input_image_bytes": {"b64": b64(b"hello")}}]},
            "instances[0].input_image_bytes: not a decodable image",
        ),
        (
            {"instances": [{"image": {"b64": "aGk="}}]},
            "instances[0].input_image_bytes: Field required",
        ),
        (
            {"instances": [{"b64": "aGk="}], "parameters": {"glimpses": 3}},
            "parameters.glimpses: Extra inputs are not permitted",
        ),
        (
            {"instances": [{"b64": "aGk="}], "parameters": {"num_glimpses": 17}},
            "parameters.num_glimpses: Input should be less than or equal to 16",
        ),
        ({"instances": [{"b64": "aGk="}], "parameters": {"top_k": 0}}, "parameters.top_k"),
        (
            {"instances": [{"b64": "aGk="}], "signature_name": "explain"},
            "instances is a plain list, but expecting list of objects",
        ),
    ],
)
def test_invalid_requests_are_400_with_a_clear_message(gateway, payload, message):
    r = post(gateway, payload)
    assert r.status_code == 400
    assert set(r.json()) == {"error"}
    assert message in r.json()["error"]


def test_bad_instance_is_named_by_index(gateway, photo):
    truncated = photo[: len(photo) // 2]
    r = post(gateway, body(photo, photo, truncated))
    assert r.status_code == 400
    assert r.json()["error"].startswith("instances[2].input_image_bytes: corrupt or truncated")


def test_corrupt_png_is_named_by_index(gateway, photo):
    rng = np.random.default_rng(3)
    png = bytearray(encode(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), "PNG"))
    png[len(png) // 2] ^= 0xFF  # inside the pixel data: the chunk CRC no longer holds
    r = post(gateway, body(photo, bytes(png)))
    assert r.status_code == 400
    assert r.json()["error"].startswith("instances[1].input_image_bytes: ")


def test_decompression_bomb_is_refused(gateway):
    r = post(gateway, body(_bomb()))
    assert r.status_code == 400
    assert "over the limit" in r.json()["error"]


def test_invalid_json(gateway):
    r = httpx.post(
        gateway.url + PREDICT, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]


def test_json_is_read_whatever_the_content_type(gateway, photo):
    """As TF Serving does: its docs' `curl -d` sends a form type, `requests.post(data=...)`
    none. A body that is not JSON is a 400 naming the parse error, whatever the type."""
    raw = json.dumps(body(photo)).encode()
    for headers in ({"content-type": "application/x-www-form-urlencoded"}, {}):
        r = httpx.post(gateway.url + PREDICT, content=raw, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
    r = httpx.post(gateway.url + PREDICT, content=b"x", headers={"content-type": "image/jpeg"})
    assert r.status_code == 400 and r.json()["error"].startswith("JSON Parse error")


def test_payload_over_limit_is_413(gateway):
    big = {"instances": [{"b64": "A" * 2_100_000}]}
    assert post(gateway, big).status_code == 413

    def chunks():  # no Content-Length: the limit holds while streaming
        yield b'{"instances": [{"b64": "'
        for _ in range(30):
            yield b"A" * 100_000
        yield b'"}]}'

    r = httpx.post(
        gateway.url + PREDICT, content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "over the limit" in r.json()["error"]


def test_too_many_instances(gateway_settings, photo):
    from tests.servers import live_server

    with live_server(gateway_settings(max_instances=2)) as server:
        r = post(server, body(photo, photo, photo))
        assert r.status_code == 400 and "over the limit of 2" in r.json()["error"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/models/nope:predict", 404),
        ("/v1/models/saccader/versions/7:predict", 404),
        ("/v1/models/saccader/versions/x:predict", 404),
        ("/v1/nothing", 404),
    ],
)
def test_unknown_models_and_paths(gateway, photo, path, status):
    r = post(gateway, body(photo), path=path)
    assert r.status_code == status and set(r.json()) == {"error"}


def test_status_and_metadata_in_tf_serving_shapes(gateway):
    status = httpx.get(gateway.url + "/v1/models/saccader").json()
    assert status == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    meta = httpx.get(gateway.url + "/v1/models/saccader/metadata").json()
    assert meta["model_spec"] == {"name": "saccader", "signature_name": "", "version": "1"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    post_hoc = {"view", "logits", "gradients", "guided_gradients", "conv", "glimpse_sets"}
    served = {"serving_default", "serving_options", "serving_boxes", "explain", "classify"}
    assert set(sigs) == served | {f"explain_{name}" for name in post_hoc}
    assert sigs["serving_default"]["inputs"]["input_image_bytes"]["dtype"] == "DT_STRING"
    assert httpx.get(gateway.url + "/v1/models/other").status_code == 404
    assert httpx.get(gateway.url + "/v1/models/saccader/versions/3/metadata").status_code == 404


def test_openapi_documents_the_schema_with_examples(gateway):
    spec = httpx.get(gateway.url + "/openapi.json").json()
    op = spec["paths"]["/v1/models/{model}:predict"]["post"]
    assert "400" in op["responses"] and "503" in op["responses"]
    schemas = spec["components"]["schemas"]
    assert schemas["PredictRequest"]["examples"][0]["instances"][0]["input_image_bytes"]["b64"]
    assert "glimpses" in schemas["Prediction"]["properties"]


def test_metrics_count_requests_and_stages(gateway, photo):
    post(gateway, body(photo))
    text = httpx.get(gateway.url + "/metrics").text
    assert (
        'glimpse_requests_total{method="POST",route="/v1/models/{model}:predict",status="200"}'
        in text
    )
    for stage in ("decode", "queue", "model", "encode"):
        assert f'glimpse_stage_seconds_count{{stage="{stage}"}}' in text
    assert "glimpse_batch_size_bucket" in text and "glimpse_in_flight_requests" in text


def test_concurrent_requests_match_sequential(gateway):
    rng = np.random.default_rng(5)
    photos = [
        encode(rng.integers(0, 255, (200 + i, 260, 3), dtype=np.uint8), "JPEG") for i in range(8)
    ]
    sequential = [post(gateway, body(p)).json()["predictions"][0] for p in photos]

    async def fire():
        async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as client:
            calls = [client.post(PREDICT, json=body(photos[i % 8])) for i in range(64)]
            return await asyncio.gather(*calls)

    batches_before = _metric(gateway, "glimpse_batch_size_count")
    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    # The 64 concurrent instances shared model calls: fewer batches than instances.
    assert _metric(gateway, "glimpse_batch_size_count") - batches_before < 64
    for i, r in enumerate(responses):
        assert_same_prediction(r.json()["predictions"][0], sequential[i % 8], where=f"#{i}")


def _metric(server, name: str) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


def test_bearer_token(gateway_settings, photo):
    from tests.servers import live_server

    with live_server(gateway_settings(auth_token="s3cret")) as server:
        assert post(server, body(photo)).status_code == 401
        assert (
            post(server, body(photo), headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        ok = post(server, body(photo), headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(server.url + "/healthz/live").status_code == 200  # probes stay open


def test_overload_is_429_with_retry_after(gateway_settings, photo):
    from tests.servers import live_server

    with live_server(gateway_settings(queue_limit=2, max_batch_size=1)) as server:

        async def fire():
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                return await asyncio.gather(
                    *(client.post(PREDICT, json=body(photo)) for _ in range(24))
                )

        codes = [r.status_code for r in asyncio.run(fire())]
        assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
        limited = next(r for r in asyncio.run(fire()) if r.status_code == 429)
        assert limited.headers["retry-after"] == "1"
        assert "queue is full" in limited.json()["error"]
        assert post(server, body(photo)).status_code == 200  # not poisoned


def test_errors_never_leak_tracebacks(gateway):
    for payload in ({"instances": [[1, 2]]}, {"instances": [None]}, [1, 2], "x"):
        r = post(gateway, payload)
        assert r.status_code == 400, (payload, r.text)
        assert "Traceback" not in r.text and set(r.json()) == {"error"}


def test_clients_that_hang_up_do_not_poison_the_service(gateway, photo):
    """Abandoned requests still run (they are queued), but leave nothing stuck behind."""
    for _ in range(8):
        with pytest.raises(httpx.TimeoutException):
            httpx.post(gateway.url + PREDICT, json=body(photo), timeout=0.005)
    deadline = time.monotonic() + 30
    # The /metrics request itself is the one request in flight.
    while "glimpse_in_flight_requests 1.0" not in httpx.get(gateway.url + "/metrics").text:
        assert time.monotonic() < deadline, "in-flight requests never drained"
        time.sleep(0.05)
    assert post(gateway, body(photo)).status_code == 200
