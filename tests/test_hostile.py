"""A hostile client against the real service: decode-cost bombs, images only the model can
find broken, poisoned jobs, slow clients. Each answer is a 4xx naming the problem within the
deadline, the probes keep answering, and good requests are answered as before."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.batch_inputs import job_body, wait_state
from tests.conftest import body
from tests.errors import error_message
from tests.hostile_images import (
    gif_canvas,
    gif_frames,
    good_jpeg,
    jpeg_with_scans,
    png_corrupt_pixels,
)
from tests.servers import live_server

PREDICT = "/v1/models/saccader:predict"
EXPLAIN = "/v1/models/saccader:explain"
JOBS = "/v1/projects/demo/jobs"
_FIXTURE = [HealthCheck.function_scoped_fixture]  # the module's server, shared on purpose


@pytest.fixture(scope="module")
def service(gateway_settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    settings = gateway_settings(
        jobs_local_root=root, request_timeout_s=20.0, body_timeout_s=1.0, keep_alive_s=1.0
    )
    with live_server(settings) as server:
        server.root = root
        yield server


def post(server, payload, path=PREDICT, timeout=60):
    return httpx.post(server.url + path, json=payload, timeout=timeout)


error = error_message


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding(service):
    started = time.monotonic()
    message = error(post(service, body(jpeg_with_scans(3000))), 400)
    assert time.monotonic() - started < 2.0
    assert message.startswith("instances[0].input_image_bytes: JPEG with more than 64 scans")
    ok = post(service, body(good_jpeg()))
    assert ok.status_code == 200


def test_a_big_progressive_jpeg_is_refused_by_its_scan_pixels(service):
    flat = np.full((4000, 4000, 3), 128, np.uint8)  # flat: each scan is a few bytes
    buf = io.BytesIO()
    Image.fromarray(flat).save(buf, "JPEG", progressive=True, quality=50)
    big = buf.getvalue()
    raw = big[:-2] + big[big.rindex(b"\xff\xda") : -2] * 20 + b"\xff\xd9"  # 30 scans
    message = error(post(service, body(raw)), 400)
    assert "4000x4000 JPEG in 30 scans is over the decoding budget" in message


def test_probes_answer_while_a_huge_canvas_decodes(service):
    """A 35-byte GIF claiming 6000x6000 pixels costs seconds to convert: in the decode pool,
    never on the event loop, so /healthz/live answers throughout."""
    done = threading.Event()
    result: dict = {}

    def bomb():
        try:
            result["r"] = post(service, body(gif_canvas(6000, 6000)))
        finally:  # a failed request must end the probing too, not leave it spinning
            done.set()

    thread = threading.Thread(target=bomb)
    thread.start()
    slowest = 0.0
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=service.url, timeout=10) as client:
        while not done.is_set():
            assert time.monotonic() < deadline, "the bomb was never answered"
            started = time.monotonic()
            assert client.get("/healthz/live").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.02)
    thread.join()
    assert "r" in result, "the bomb request itself failed"
    assert result["r"].status_code in (200, 400), result["r"].text
    assert slowest < 0.5  # bench/hostile.py measures the 100 ms target on a quiet machine


def test_many_tiny_canvases_in_one_request_hit_the_request_budget(service):
    started = time.monotonic()
    r = post(service, body(*[gif_canvas(39_999, 1000)] * 40))
    message = error(r, 400)
    assert time.monotonic() - started < 10
    assert message.startswith("instances[1].input_image_bytes: decoding it would pass")
    assert "budget of 50000000 pixels" in message


def test_an_animated_gif_with_thousands_of_frames_costs_one_frame(service):
    """20,000 frames on a 2000x2000 canvas in 440 KB (80 Gpx to composite): the first frame is
    the image, the rest are never decoded, so it is answered as quickly as a still."""
    bomb = gif_frames(2000, 2000, 20_000)
    started = time.monotonic()
    r = post(service, body(bomb))
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 15.0  # a composite of every frame: minutes
    preprocessing = r.json()["predictions"][0]["preprocessing"]
    assert preprocessing["original_size"] == [2000, 2000]
    assert preprocessing["converted_from"] == "GIF/P"


@pytest.mark.parametrize("path", [PREDICT, EXPLAIN])
def test_a_png_with_right_checksums_and_corrupt_pixels_is_a_named_400(service, path):
    payload = body(good_jpeg(), png_corrupt_pixels())
    message = error(post(service, payload, path), 400)
    assert message.startswith("instances[1].input_image_bytes: corrupt or truncated image")


def test_a_jpeg_only_the_model_finds_broken_names_the_instance(service):
    """Its markers and EOI are intact, so it passes through to the model's decoder, whose scan
    asks for a Huffman table that was never defined: the 400 names the instance and the
    decoder's reason, not "Graph execution error"."""
    raw = bytearray(good_jpeg())
    sos = raw.index(b"\xff\xda")
    for component in range(raw[sos + 4]):
        raw[sos + 6 + 2 * component] = 0x33  # DC and AC table 3: not in the file
    message = error(post(service, body(good_jpeg(1), bytes(raw))), 400)
    assert message.startswith("instances[1].input_image_bytes: the model could not decode")
    assert "Graph execution error" not in message


def test_a_bad_job_is_refused_at_create_and_never_wedges_the_queue(service):
    lines = "\n".join(
        '{"input_image_bytes": {"b64": "' + base64.b64encode(good_jpeg(i)).decode() + '"}}'
        for i in range(3)
    )
    (service.root / "in.jsonl").write_text(lines + "\n")
    url = service.url + JOBS
    bad = [
        (job_body("star", ["in.jsonl"], "out/*"), "without wildcards"),
        (job_body("nul", ["in\x00.jsonl"], "out"), "without control characters"),
        (job_body("nul_out", ["in.jsonl"], "o\x00ut"), "without control characters"),
        (job_body("x\n", ["in.jsonl"], "out"), "jobId"),
        (job_body("big", ["in.jsonl"], "out", parameters={"num_glimpses": 17}), "max_glimpses"),
        ({**job_body("lab", ["in.jsonl"], "out"), "labels": {"a" * 80: "b"}}, "label key"),
        (
            {**job_body("labs", ["in.jsonl"], "out"), "labels": {f"k{i}": "v" for i in range(65)}},
            "64",
        ),
    ]
    for payload, words in bad:
        assert words in error(httpx.post(url, json=payload), 400), payload
    assert httpx.post(url, json=job_body("fine", ["in.jsonl"], "out_fine")).status_code == 200
    assert wait_state(url, "fine", {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"


def test_a_failed_job_names_no_server_path(service):
    url = service.url + JOBS
    assert (
        httpx.post(url, json=job_body("gone", ["missing-*.jsonl"], "out_gone")).status_code == 200
    )
    job = wait_state(url, "gone", {"SUCCEEDED", "FAILED"}, timeout=60)
    assert job["state"] == "FAILED"
    assert "missing-*.jsonl" in job["errorMessage"]
    assert str(service.root) not in job["errorMessage"] and "/tmp" not in job["errorMessage"]


@pytest.mark.parametrize("token", ["1" * 32, "-5", "x", "W10", "bnVsbA"])
def test_page_tokens_are_opaque_and_checked(service, token):
    r = httpx.get(service.url + JOBS, params={"pageToken": token})
    assert error(r, 400) == "pageToken: not a token this server issued"


def test_pages_are_stable_when_jobs_are_created_between_them(service):
    url = service.url + JOBS
    for i in range(3):
        created = httpx.post(url, json=job_body(f"page_{i}", ["nothing-*.jsonl"], f"out_p{i}"))
        assert created.status_code == 200, created.text
    first = httpx.get(url, params={"pageSize": 2}).json()
    created = httpx.post(url, json=job_body("page_new", ["nothing-*.jsonl"], "out_pn"))
    assert created.status_code == 200, created.text
    second = httpx.get(url, params={"pageSize": 100, "pageToken": first["nextPageToken"]}).json()
    seen = [j["jobId"] for j in first["jobs"]] + [j["jobId"] for j in second["jobs"]]
    assert len(seen) == len(set(seen)) and "page_new" not in seen


@pytest.mark.parametrize("version", ["１", "1%0A", "v٣", "-1", "1.0"])
def test_versions_are_ascii_digits(service, version):
    url = f"{service.url}/v1/models/saccader/versions/{version}:predict"
    r = httpx.post(url, json=body(good_jpeg()))
    assert r.status_code == 404, r.text


def test_a_stalled_body_is_408_and_an_idle_connection_is_closed(service):
    host, port = service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{".encode()
        )
        answer = ""
        while "stalled" not in answer and (chunk := s.recv(4096)):
            answer += chunk.decode()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert '{"error": "request body stalled for 1 s"}' in answer
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /healthz/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b'"alive"' not in answer and (chunk := s.recv(4096)):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert s.recv(4096) == b""  # the server closed the idle keep-alive connection
        assert time.monotonic() - started < 5


def test_headers_over_the_limit_are_refused(service):
    big = {"x-big": "a" * 20_000}
    r = httpx.get(service.url + "/healthz/live", headers=big)
    assert r.status_code == 431
    assert r.json() == {"error": "request headers are over the limit of 16384 bytes"}
    try:  # megabytes: the HTTP server itself stops reading (plain text or a closed socket)
        r = httpx.get(service.url + "/healthz/live", headers={"x-big": "a" * 4_000_000})
        assert r.status_code in (400, 431)
    except httpx.TransportError:
        pass
    assert httpx.get(service.url + "/healthz/live").status_code == 200


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    width=st.integers(1, 65_535),
    height=st.integers(1, 65_535),
    copies=st.integers(1, 4),
)
def test_generated_canvases_are_answered_within_the_deadline(service, width, height, copies):
    started = time.monotonic()
    r = post(service, body(*[gif_canvas(width, height)] * copies), timeout=60)
    assert r.status_code in (200, 400), r.text
    assert time.monotonic() - started < 20
    if r.status_code == 400:
        assert r.json()["error"].startswith("instances[")


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scans=st.integers(0, 400), side=st.sampled_from([16, 32, 64]))
def test_generated_scan_bombs_are_answered_within_the_deadline(service, scans, side):
    started = time.monotonic()
    r = post(service, body(jpeg_with_scans(scans, (side, side))), timeout=60)
    assert r.status_code in (200, 400), r.text
    assert time.monotonic() - started < 20
    if scans + 10 > 64:
        assert "scans" in r.json()["error"]


def test_a_huge_converted_image_is_shrunk_and_its_boxes_mapped_back(service):
    """A 20-Mpx PNG is cut to its central square and shrunk before the model sees it; the
    answer still speaks of the photo's own pixels (the reference centre crop)."""
    photo = np.full((4000, 5000, 3), 200, np.uint8)
    photo[1800:2200, 2300:2700] = (200, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    r = post(service, body(buf.getvalue()))
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["preprocessing"]["original_size"] == [4000, 5000]
    crop = p["preprocessing"]["crop_box"]
    side = 4000 * 224 / 256  # the reference preprocessing: the central 224/256 of the short side
    expected = [(4000 - side) / 2, (5000 - side) / 2, (4000 + side) / 2, (5000 + side) / 2]
    assert crop == pytest.approx(
        {"ymin": expected[0], "xmin": expected[1], "ymax": expected[2], "xmax": expected[3]},
        abs=8,
    )
    assert p["image_size"] == [4000, 5000]  # TF Serving's keys say the same, not the copy's
    assert p["crop_box"] == pytest.approx(expected, abs=8)
    for g in p["glimpses"]:
        original = g["box_original"]
        assert expected[0] - 8 <= original["ymin"] < original["ymax"] <= expected[2] + 8
        assert expected[1] - 8 <= original["xmin"] < original["xmax"] <= expected[3] + 8
