"""glimpse_client against real servers on 127.0.0.1: the gateway (embedded backend, tiny model)
and a TF Serving REST server over the same SavedModel (tests/tfserving_rest_server.py)."""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from PIL import Image

from glimpse_client import (
    Client,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    JobTimeout,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    Unsupported,
)
from tests.batch_inputs import good_line, not_an_image_line
from tests.conftest import encode
from tests.servers import live_server

NOT_AN_IMAGE = b"just some text, not an image"


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), "JPEG")


@pytest.fixture(scope="module")
def tfserving_rest(tiny_export):
    from tests.tfserving_rest_server import tfserving_rest_server

    with tfserving_rest_server(tiny_export) as (url, servable):
        yield url, servable


@pytest.fixture(scope="module")
def guarded(gateway_settings):
    """A gateway with a token, AI Platform's payload limit and a small instance limit."""
    settings = gateway_settings(auth_token="s3cret", max_instances=2)
    with live_server(settings) as server:
        yield server


def assert_picture(
    data: bytes | None, fmt: str = "JPEG", size: tuple[int, int] = (224, 224)
) -> None:
    assert data is not None
    picture = Image.open(io.BytesIO(data))
    assert (picture.format, picture.size) == (fmt, size)


# -- gateway flavour --------------------------------------------------------------------------


def test_gateway_predict_is_typed_and_decoded(gateway, photo_bytes, tmp_path):
    with Client(gateway.url) as client:
        assert client.flavour == "gateway" and client.ready()
        p = client.predict(photo_bytes, num_glimpses=3, top_k=2, key="chelsea")
        assert p.key == "chelsea" and len(p.glimpses) == 3 and len(p.top_k) == 2
        assert p.top_class == p.top_k[0] and 0 <= p.top_class.index < 1000
        assert p.top_class.label and p.top_class.synset.startswith("n")
        assert [g.order for g in p.glimpses] == [1, 2, 3]
        assert 0 < p.coverage <= 1 and p.glimpses[0].box_original is not None
        assert p.preprocessing.original_size == (300, 451)  # Chelsea is 451x300
        assert p.annotated_image_format == "jpeg"  # the model's own encoding
        assert_picture(p.annotated_image)
        saved = p.save_annotated(tmp_path / "chelsea")
        assert saved.name == "chelsea.jpg" and saved.read_bytes() == p.annotated_image

        # A path (key = file name) and a PIL image give the same answer as the bytes.
        path = tmp_path / "cat.png"
        path.write_bytes(photo_bytes)
        by_path = client.predict(path, num_glimpses=3, top_k=2)
        assert by_path.key == "cat.png" and by_path.top_k == p.top_k
        by_pil = client.predict(Image.open(path), num_glimpses=3, top_k=2, annotated_image=False)
        assert by_pil.top_class.index == p.top_class.index and by_pil.annotated_image is None

        png_annotated = client.predict(photo_bytes, annotated_image_format="png")
        assert png_annotated.annotated_image_format == "png"
        assert_picture(png_annotated.annotated_image, "PNG")  # re-encoded by the gateway
        assert len(png_annotated.glimpses) == 6 and len(png_annotated.top_k) == 5

        status, metadata = client.status(), client.metadata()
        assert status.available and [v.version for v in status.versions] == [1]
        assert metadata.name == "saccader" and metadata.version == 1
        assert {"serving_default", "serving_options"} <= set(metadata.signatures)


def test_gateway_errors_are_named(gateway, photo_bytes):
    with Client(gateway.url) as client:
        with pytest.raises(InvalidRequest) as bad:
            client.predict(NOT_AN_IMAGE)
        assert bad.value.status == 400 and "instances[0]" in bad.value.message
        with pytest.raises(InvalidRequest, match="num_glimpses"):
            client.predict(photo_bytes, num_glimpses=17)
    with Client(gateway.url, model="nope") as client, pytest.raises(NotFound, match="nope"):
        client.predict(photo_bytes)
    with pytest.raises(TypeError, match="bytes, a path or a PIL image"):
        Client(gateway.url).predict(42)


def test_token_payload_and_instance_limits(guarded, photo_bytes):
    with Client(guarded.url) as anonymous, pytest.raises(Unauthorized) as denied:
        anonymous.predict(photo_bytes)
    assert denied.value.status == 401 and "token" in denied.value.message
    with Client(guarded.url, token="wrong") as wrong:
        with pytest.raises(Unauthorized):
            wrong.status()
        with pytest.raises(Unauthorized):
            wrong.ready()  # waiting cannot fix a wrong token

    images = [jpeg(i) for i in range(5)]
    with Client(guarded.url, token="s3cret", max_instances=64) as eager:
        with pytest.raises(InvalidRequest, match="over the limit of 2"):
            eager.predict_many(images, num_glimpses=1)
    with Client(guarded.url, token="s3cret", max_instances=2) as client:
        assert client.ready()
        many = client.predict_many(images, num_glimpses=2, keys=[f"k{i}" for i in range(5)])
        assert [p.key for p in many] == [f"k{i}" for i in range(5)]
        singles = [client.predict(i, num_glimpses=2).top_class for i in images[:2]]
        assert [p.top_class for p in many[:2]] == singles

        # A body over the gateway's 1.5 MB limit goes alone and comes back as a 413.
        huge = np.random.default_rng(0).bytes(1_200_000)
        with pytest.raises(PayloadTooLarge) as too_large:
            client.predict(huge)
        assert too_large.value.status == 413


def test_unavailable_is_retried_within_bounds(gateway_settings, tmp_path, photo_bytes):
    # The model directory is empty, so the gateway answers 503 (Retry-After: 5) for good.
    with live_server(gateway_settings(model_dir=tmp_path), ready=False) as gw:
        with Client(gw.url) as client:
            with pytest.raises(Unavailable) as once:
                client.predict(photo_bytes)
            assert once.value.retry_after == 5.0 and "failed to load" in once.value.message
            assert not client.ready()
        with Client(gw.url, retries=3, max_retry_wait=0.2) as client:
            started = time.monotonic()
            with pytest.raises(Unavailable):
                client.predict(photo_bytes)
            assert 0.6 <= time.monotonic() - started < 5  # 3 waits, each capped at 0.2 s


def test_retries_carry_a_request_through_model_loading(gateway_settings, photo_bytes):
    with live_server(gateway_settings(), ready=False) as gw:
        with Client(gw.url, retries=200, max_retry_wait=0.2) as client:
            assert client.predict(photo_bytes, num_glimpses=2).glimpses


def test_nothing_listening_is_a_connection_error(photo_bytes):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    with Client(f"http://127.0.0.1:{port}", retries=1, max_retry_wait=0.05) as client:
        assert not client.ready()
        with pytest.raises(ConnectionFailed, match="cannot reach"):
            client.predict(photo_bytes)


def test_explain_glimpses_and_integrated_gradients(gateway, photo_bytes):
    with Client(gateway.url) as client:
        e = client.explain(photo_bytes, num_glimpses=3, key="cat")
        top = e.top
        assert e.key == "cat" and top.method == "glimpses" and top.explained_model == "glimpses"
        assert [g.order for g in top.glimpses] == [1, 2, 3]
        for g in top.glimpses:
            assert g.drop == pytest.approx(top.probability - g.without, abs=1e-9)
            assert 0 <= g.probability <= 1 and 0 <= g.new_pixels <= 1
        assert top.image_format == "jpeg" and top.image.startswith(b"\xff\xd8")
        assert top.faithfulness.metric == "equal_area_cells" and e.model_evaluations > 0
        assert 0 <= top.faithfulness.sufficiency_probability <= 1

        ig = client.explain(
            photo_bytes,
            "integrated_gradients",
            steps=8,
            faithfulness=False,
            attribution_map=True,
            visualization={"output_format": "png"},
        ).top
        assert ig.method == "integrated_gradients" and ig.explained_model == "full_image"
        assert ig.image_format == "png" and ig.image.startswith(b"\x89PNG")
        assert ig.approx_error is not None and ig.faithfulness is None
        assert len(ig.attribution_map) == 224 and len(ig.attribution_map[0]) == 224

        with pytest.raises(InvalidRequest, match="steps"):
            client.explain(photo_bytes, "grad_cam", steps=10)


def test_batch_job_helpers(gateway_settings, tmp_path):
    lines = [good_line(i) for i in range(3)] + [not_an_image_line()]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "long.jsonl").write_text("\n".join(good_line(i) for i in range(300)) + "\n")
    settings = gateway_settings(jobs_db=tmp_path / "jobs.sqlite3", jobs_local_root=tmp_path)
    with live_server(settings) as gw, Client(gw.url, project="demo") as client:
        created = client.submit_job("in.jsonl", "out", "client_job", num_glimpses=2)
        assert created.job_id == "client_job" and created.state in ("QUEUED", "RUNNING")
        job = client.wait_job("client_job", timeout=120, poll_interval=0.1)
        assert job.succeeded and job.done and job.start_time and job.end_time
        out = job.prediction_output
        assert (out.prediction_count, out.error_count, out.line_count) == (3, 1, 4)
        assert out.errors_by_kind == {"invalid_image": 1}
        assert job.body["predictionOutput"]["predictionCount"] == "3"  # the wire JSON, as sent
        assert (tmp_path / "out" / "prediction.summary.json").exists()
        assert client.get_job("client_job") == job

        with pytest.raises(Conflict, match="exists"):
            client.submit_job("in.jsonl", "out", "client_job")
        with pytest.raises(InvalidRequest, match="already SUCCEEDED"):
            client.cancel_job("client_job")
        with pytest.raises(NotFound):
            client.get_job("nope")
        with pytest.raises(InvalidRequest, match="local paths must be under"):
            client.submit_job(os.devnull, "out2")

        client.submit_job("long.jsonl", "out-long", "long_job", batch_size=2, max_worker_count=1)
        with pytest.raises(JobTimeout, match="long_job"):
            client.wait_job("long_job", timeout=0.3, poll_interval=0.1)
        assert client.cancel_job("long_job").state in ("CANCELLING", "CANCELLED")
        polled: list = []
        ended = client.wait_job("long_job", timeout=120, poll_interval=0.1, on_poll=polled.append)
        assert ended.state == "CANCELLED" and not any(j.done for j in polled)

        listed = client.list_jobs(page_size=1)  # one job per page: follows nextPageToken
        assert [j.job_id for j in listed] == ["long_job", "client_job"]


# -- TF Serving REST flavour -------------------------------------------------------------------


def test_tfserving_predict_matches_the_gateway(tfserving_rest, gateway, photo_bytes):
    url, servable = tfserving_rest
    with Client(url) as tfs, Client(gateway.url) as gw:
        assert tfs.flavour == "tfserving" and tfs.ready()
        calls = servable.calls
        ours = tfs.predict(photo_bytes, num_glimpses=4, top_k=3, key="cat")
        assert servable.calls == calls + 1  # TF Serving itself answered
        theirs = gw.predict(photo_bytes, num_glimpses=4, top_k=3, key="cat")
        assert ours.key == "cat" and len(ours.glimpses) == 4 and len(ours.top_k) == 3
        assert [c.index for c in ours.top_k] == [c.index for c in theirs.top_k]
        assert [c.label for c in ours.top_k] == [c.label for c in theirs.top_k]
        assert [c.score for c in ours.top_k] == pytest.approx([c.score for c in theirs.top_k])
        assert [g.box for g in ours.glimpses] == [g.box for g in theirs.glimpses]
        assert [g.box_original for g in ours.glimpses] == [g.box_original for g in theirs.glimpses]
        assert ours.coverage == pytest.approx(theirs.coverage)
        assert ours.full_image.index == theirs.full_image.index
        assert ours.preprocessing.original_size == theirs.preprocessing.original_size
        assert ours.preprocessing.crop_box == theirs.preprocessing.crop_box
        assert ours.annotated_image == theirs.annotated_image  # the SavedModel's JPEG, as is
        assert ours.annotated_image_format == theirs.annotated_image_format == "jpeg"
        assert_picture(ours.annotated_image)

        many = tfs.predict_many([jpeg(1), jpeg(2), photo_bytes], num_glimpses=2, top_k=1)
        assert [len(p.glimpses) for p in many] == [2, 2, 2]
        assert many[2].top_class.index == tfs.predict(photo_bytes, 2, 1).top_class.index

        # Given boxes go to the serving_boxes signature and come back as the glimpses.
        boxes = [[10.0, 20.0, 80.0, 90.0], [40.0, 60.0, 100.0, 130.0]]
        ours = tfs.predict(photo_bytes, top_k=3, glimpse_boxes=boxes)
        theirs = gw.predict(photo_bytes, top_k=3, glimpse_boxes=boxes)
        assert [[g.box.ymin, g.box.xmin, g.box.ymax, g.box.xmax] for g in ours.glimpses] == boxes
        assert [g.new_pixels for g in ours.glimpses] == [g.new_pixels for g in theirs.glimpses]
        assert [c.score for c in ours.top_k] == pytest.approx([c.score for c in theirs.top_k])
        assert ours.coverage == pytest.approx(theirs.coverage)

        status, metadata = tfs.status(), tfs.metadata()
        assert status.available and metadata.version == 1
        assert {"serving_options", "serving_boxes"} <= set(metadata.signatures)


def test_tfserving_errors_and_what_it_cannot_do(tfserving_rest, photo_bytes):
    url, _ = tfserving_rest
    with Client(url, flavour="tfserving") as client:
        with pytest.raises(InvalidRequest) as bad:
            client.predict(NOT_AN_IMAGE)
        assert bad.value.status == 400 and bad.value.message
        with pytest.raises(InvalidRequest, match="num_glimpses must be <= 16"):
            client.predict(photo_bytes, num_glimpses=17)
        for call in (
            lambda: client.explain(photo_bytes),
            lambda: client.submit_job("gs://b/in/*", "gs://b/out"),
            lambda: client.list_jobs(),
            lambda: client.predict(photo_bytes, annotated_image_format="png"),
        ):
            with pytest.raises(Unsupported):
                call()
    with Client(url, model="nope") as client, pytest.raises(NotFound, match="nope"):
        client.predict(photo_bytes)
    with Client(url, version=7) as client:
        with pytest.raises(NotFound, match="7"):
            client.status()
        with pytest.raises(NotFound):
            client.ready()  # waiting cannot fix a wrong version


# -- the pretrained model on real photos -------------------------------------------------------


@pytest.mark.slow
def test_pretrained_model_on_sample_photos_both_flavours(
    lite0_export, gateway_settings, sample_photos
):
    """predict_many over real photos, split by the payload limit, names the right class for
    most of them, and TF Serving's REST API gives the same answers."""
    from tests.tfserving_rest_server import tfserving_rest_server

    photos = sample_photos[:: max(1, len(sample_photos) // 12)][:12]
    settings = gateway_settings(model_dir=lite0_export.parent.parent)
    with live_server(settings) as gw, tfserving_rest_server(lite0_export) as (url, _):
        # ~12 photos of ~100-200 KB: three or more requests under a 600 KB limit.
        with Client(gw.url, max_payload_bytes=600_000) as client:
            ours = client.predict_many(photos, num_glimpses=6, top_k=5)
        with Client(url) as tfs:
            theirs = tfs.predict_many(photos, num_glimpses=6, top_k=5)
    assert [p.key for p in ours] == [p.name for p in photos]
    synsets = [path.name.split("_")[0] for path in photos]
    right = sum(p.top_class.synset == s for p, s in zip(ours, synsets, strict=True))
    assert right >= len(photos) * 0.6, [p.top_class.label for p in ours]
    assert [p.top_class.index for p in ours] == [p.top_class.index for p in theirs]
    boxes = [[g.box for g in p.glimpses] for p in ours]
    assert boxes == [[g.box for g in p.glimpses] for p in theirs]
