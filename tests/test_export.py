"""The exported SavedModel: signatures, formats, validation, and parity with the in-memory model."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from model_export.labels import imagenet_labels, read_labels
from service.savedmodel import load
from tests.conftest import encode

CAT_CLASSES = {281, 282, 283, 285, 287}  # tabby, tiger cat, Persian, Egyptian cat, lynx


@pytest.fixture(scope="module")
def served(tiny_export):
    return load(tiny_export)  # the process's one load of it (service/savedmodel.py)


def _options(sm, images, glimpses, top_k):
    return sm.signatures["serving_options"](
        input_image_bytes=tf.constant(images),
        num_glimpses=tf.constant(glimpses, tf.int32),
        top_k=tf.constant(top_k, tf.int32),
    )


def test_layout_and_signatures(tiny_export, served):
    assert tiny_export.name == "1" and tiny_export.parent.name == "saccader"
    explain = {"explain_view", "explain_logits", "explain_gradients"}
    explain |= {"explain_guided_gradients", "explain_conv"}
    assert set(served.signatures) == {
        "serving_default",
        "serving_options",
        "serving_boxes",
        "explain",
        "explain_glimpse_sets",
        "classify",
        *explain,
    }
    inputs = served.signatures["serving_default"].structured_input_signature[1]
    assert set(inputs) == {"input_image_bytes"}
    assert inputs["input_image_bytes"].dtype == tf.string


def test_model_info_describes_the_export(tiny_export):
    from model_export.signatures import EXPORTER_REVISION, read_model_info

    info = read_model_info(tiny_export)
    assert info["view_size"] == 224 and info["exporter_revision"] == EXPORTER_REVISION
    assert info["config"]["variant"] == "tiny" and info["config"]["glimpse_size"] == 64


def test_labels_are_an_asset(tiny_export):
    rows = read_labels(tiny_export / "assets" / "labels.tsv")
    assert len(rows) == 1000
    assert rows[0] == ("n01440764", "tench")
    assert len({synset for synset, _ in rows}) == 1000


def test_default_outputs_are_batch_first(served, photo_bytes):
    out = served.signatures["serving_default"](input_image_bytes=tf.constant([photo_bytes] * 3))
    assert {k: v.shape[0] for k, v in out.items()} == dict.fromkeys(out, 3)
    assert out["glimpse_boxes"].shape == (3, 6, 4)
    assert out["classes"].shape == (3, 5)
    scores = out["scores"].numpy()
    assert (np.diff(scores, axis=1) <= 0).all() and (scores <= 1).all()
    # Six glimpses tile the 112 x 144 focus region: the same third of the view every time.
    np.testing.assert_allclose(out["coverage"].numpy(), 112 * 144 / 224**2, atol=1e-6)
    png = Image.open(io.BytesIO(out["annotated_image_bytes"].numpy()[0]))
    assert png.format == "JPEG" and png.size == (224, 224)


def test_names_match_classes(served, photo_bytes):
    out = _options(served, [photo_bytes], [3], [10])
    labels = dict(enumerate(imagenet_labels()))
    for c, name, synset in zip(
        out["classes"].numpy()[0],
        out["class_names"].numpy()[0],
        out["synsets"].numpy()[0],
        strict=True,
    ):
        assert (synset.decode(), name.decode()) == labels[int(c)]


def test_per_instance_options_are_padded(served, photo_bytes):
    out = _options(served, [photo_bytes, photo_bytes], [2, 5], [1, 3])
    boxes = out["glimpse_boxes"].numpy()
    assert boxes.shape == (2, 5, 4)
    assert (boxes[0, 2:] == -1).all() and (boxes[1] >= 0).all()
    classes = out["classes"].numpy()
    assert classes.shape == (2, 3) and (classes[0, 1:] == -1).all() and (classes[1] >= 0).all()
    assert out["class_names"].numpy()[0, 1] == b""


@pytest.mark.parametrize(
    ("glimpses", "top_k", "message"),
    [
        ([0], [5], "num_glimpses must be >= 1"),
        ([17], [5], "num_glimpses must be <= 16"),
        ([6], [0], "top_k must be >= 1"),
        ([6, 6], [5], "one value per instance"),
    ],
)
def test_options_are_validated(served, photo_bytes, glimpses, top_k, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _options(served, [photo_bytes], glimpses, top_k)


def _boxes(sm, images, boxes, count, top_k=5):
    return sm.signatures["serving_boxes"](
        input_image_bytes=tf.constant(images),
        glimpse_boxes=tf.constant(boxes, tf.float32),
        num_glimpses=tf.constant(count, tf.int32),
        top_k=tf.constant([top_k] * len(images), tf.int32),
    )


def test_given_boxes_are_the_glimpses(served, photo_bytes):
    """serving_boxes decides from the caller's boxes: the policy's own boxes given back give
    the policy's answer, and padding beyond num_glimpses is never read."""
    policy = _options(served, [photo_bytes], [6], [5])
    chosen = policy["glimpse_boxes"].numpy()
    padded = np.concatenate([chosen, np.full((1, 2, 4), 7.0, np.float32)], axis=1)
    given = _boxes(served, [photo_bytes, photo_bytes], np.concatenate([padded, padded]), [6, 6])
    np.testing.assert_array_equal(given["glimpse_boxes"].numpy()[0], chosen[0])
    np.testing.assert_allclose(given["scores"].numpy()[0], policy["scores"].numpy()[0], atol=1e-5)
    assert given["classes"].numpy()[0].tolist() == policy["classes"].numpy()[0].tolist()
    fractional = [[[10.5, 20.25, 60.75, 99.5]]]
    one = _boxes(served, [photo_bytes], fractional, [1])
    np.testing.assert_array_equal(one["glimpse_boxes"].numpy(), fractional)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ([0.0, 0.0, 224.5, 10.0], "boxes must lie in the view"),
        ([-1.0, 0.0, 10.0, 10.0], "boxes must lie in the view"),
        ([5.0, 5.0, 5.5, 30.0], "at least 1 pixel"),
    ],
)
def test_given_boxes_are_validated(served, photo_bytes, box, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _boxes(served, [photo_bytes], [[box]], [1])


def test_glimpse_sets_are_the_given_boxes_decision(served, photo_bytes):
    """explain_glimpse_sets runs the same function as serving_boxes, batched over sets."""
    boxes = _options(served, [photo_bytes], [4], [1])["glimpse_boxes"].numpy()
    sets = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]], bool)
    logits = served.signatures["explain_glimpse_sets"](
        input_image_bytes=tf.constant([photo_bytes]),
        glimpse_boxes=tf.constant(boxes),
        glimpse_sets=tf.constant(sets),
    )["logits"].numpy()
    probs = tf.nn.softmax(logits).numpy()
    for row, chosen in zip(probs, sets, strict=True):
        alone = _boxes(served, [photo_bytes], boxes[:, chosen], [int(chosen.sum())], top_k=1)
        k = int(alone["classes"][0, 0])
        np.testing.assert_allclose(row[k], float(alone["scores"][0, 0]), atol=1e-5)


def test_undecodable_bytes_are_an_invalid_argument(served):
    with pytest.raises(tf.errors.InvalidArgumentError):
        served.signatures["serving_default"](input_image_bytes=tf.constant([b"not an image"]))


def _formats() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (180, 260, 3), dtype=np.uint8)
    return {
        "jpeg": encode(rgb, "JPEG"),
        "png": encode(rgb, "PNG"),
        "gif": encode(rgb, "GIF", mode="P"),
        "bmp": encode(rgb, "BMP"),
        "grey": encode(rgb, "PNG", mode="L"),
        "rgba": encode(rgb, "PNG", mode="RGBA"),
        "palette": encode(rgb, "PNG", mode="P"),
        "png16": encode((rgb[..., 0].astype(np.uint16) * 257), "PNG"),
    }


@pytest.mark.parametrize("fmt", list(_formats()))
def test_image_formats(served, fmt):
    out = served.signatures["serving_default"](input_image_bytes=tf.constant([_formats()[fmt]]))
    assert out["image_size"].numpy().tolist() == [[180, 260]]
    # Shorter side 180 -> the centre crop keeps 180 * 224/256 = 157.5 px, centred.
    np.testing.assert_allclose(
        out["crop_box"].numpy()[0], [11.25, 51.25, 168.75, 208.75], atol=1e-4
    )


_FRESH_PROCESS = """
import json, sys, numpy as np, tensorflow as tf
sm = tf.saved_model.load(sys.argv[1])
images = [open(p, 'rb').read() for p in sys.argv[2:]]
out = sm.signatures['explain'](input_image_bytes=tf.constant(images),
                               num_glimpses=tf.constant([6] * len(images)))
print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
"""


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "graph"])
def test_reloaded_in_fresh_process_matches_in_memory(tiny_export, tiny_model, tmp_path, eager):
    rng = np.random.default_rng(3)
    paths = []
    for i, shape in enumerate([(240, 320, 3), (400, 300, 3)]):
        p = tmp_path / f"{i}.png"
        p.write_bytes(encode(rng.integers(0, 255, shape, dtype=np.uint8)))
        paths.append(str(p))
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(tiny_export), *paths],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    exported = json.loads(proc.stdout.strip().splitlines()[-1])
    images = tf.constant([open(p, "rb").read() for p in paths])

    def run():
        return tiny_model.run(images, tf.constant([6, 6]), steps=6)

    tf.config.run_functions_eagerly(eager)
    try:
        mine = run() if eager else tf.function(run)()
    finally:
        tf.config.run_functions_eagerly(False)
    for key, ours in [
        ("logits", "logits"),
        ("full_logits", "full_logits"),
        ("evidence", "evidence"),
        ("glimpse_boxes", "boxes"),
    ]:
        np.testing.assert_allclose(
            np.array(exported[key]), mine[ours].numpy(), atol=1e-5, err_msg=key
        )


@pytest.mark.slow
def test_pretrained_export_sees_the_cat(lite0_export, photo_bytes):
    sm = load(lite0_export)
    out = sm.signatures["serving_default"](input_image_bytes=tf.constant([photo_bytes]))
    assert int(out["classes"][0, 0]) in CAT_CLASSES
    assert int(out["full_image_class"][0]) in CAT_CLASSES
    plain = sm.signatures["classify"](input_image_bytes=tf.constant([photo_bytes]))
    assert int(plain["classes"][0, 0]) == int(out["full_image_class"][0])


def test_if_missing_redoes_an_export_from_an_older_exporter(tiny_export, tmp_path):
    """`make serve` must not keep serving a model that lacks signatures the service needs
    (re-exported here end to end), nor one made with other settings (found stale: the same
    stale_reason() gates the re-export, not run a second time)."""
    import shutil
    import subprocess
    import sys

    from tensorflow.core.protobuf import saved_model_pb2

    from model_export.config import SaccaderConfig
    from model_export.signatures import SIGNATURE_NAMES, signature_names, stale_reason

    assert signature_names(tiny_export) == SIGNATURE_NAMES
    old = tmp_path / "saccader" / "1"
    shutil.copytree(tiny_export, old)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((old / "saved_model.pb").read_bytes())
    del sm.meta_graphs[0].signature_def["explain_conv"]
    (old / "saved_model.pb").write_bytes(sm.SerializeToString())

    def export() -> str:
        cmd = [sys.executable, "-m", "service.cli", "export", "--model-dir", str(tmp_path),
               "--variant", "tiny", "--if-missing"]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    assert "lacks ['explain_conv']" in export()
    assert signature_names(old) == SIGNATURE_NAMES
    assert "reusing it" in export()
    # Another cell's settings make it stale too: stale_reason() is what --if-missing asks.
    info = old / "assets" / "model_info.json"
    info.write_text(info.read_text().replace('"glimpse_size": 64', '"glimpse_size": 96'))
    assert stale_reason(old, SaccaderConfig(variant="tiny")) == "was made with other settings"
