"""The annotated image (model_export/annotate.py), drawn in-graph on fake views: unseen pixels
dimmed, one outline around the union rather than a frame per glimpse, each glimpse's number at
its own centre. Fast: no model, a few small batches."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from model_export import annotate as annotate_lib
from model_export.saccader import seen_pixels

GREY = 200.0
INK = np.round(np.array(annotate_lib._INK) * 255).astype(np.uint8)
# A 2 x 3 focus region of 64-px glimpses, 48 and 40 px apart, as the model tiles it.
TILES = [[40, 64], [88, 104], [88, 64], [40, 104], [40, 144], [88, 144]]


def _boxes(corners: list[list[int]]) -> np.ndarray:
    return np.array([[y, x, y + 64, x + 64] for y, x in corners], np.float32)


def draw(boxes: np.ndarray, valid: np.ndarray, view: np.ndarray | None = None) -> np.ndarray:
    """One image's boxes [T, 4] and valid [T] -> the decoded annotated image [224, 224, 3]."""
    b, v = tf.constant(boxes[None]), tf.constant(valid[None])
    if view is None:
        view = np.full((224, 224, 3), GREY, np.float32)
    # PNG: the drawing is checked to the pixel; the JPEG default is checked against it below.
    png = annotate_lib.annotate(tf.constant(view[None]), b, v, seen_pixels(b, v), "png")
    assert png.shape == (1,)
    image = Image.open(io.BytesIO(png[0].numpy()))
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (224, 224)
    return np.asarray(image)


def is_ink(pixels: np.ndarray) -> np.ndarray:
    return np.all(pixels == INK, axis=-1)


def badge_window(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The badge-sized window centred on a box, where its number is drawn."""
    h, w = annotate_lib._BADGES.shape[1:]
    top = round((box[0] + box[2]) / 2 - h / 2)
    left = round((box[1] + box[3]) / 2 - w / 2)
    return image[top : top + h, left : left + w]


def assert_number(window: np.ndarray, order: int) -> None:
    """The window shows `order`'s badge: its digits in yellow on a dark ground (the rounded
    corners show what is under them)."""
    badge = annotate_lib._BADGES[order - 1]
    drawn = badge > 0
    np.testing.assert_array_equal(is_ink(window)[drawn], (badge == 2)[drawn], f"number {order}")
    assert (window[badge == 1] < GREY * annotate_lib._SHADE + 1).all()


@pytest.fixture(scope="module")
def tiled() -> tuple[np.ndarray, np.ndarray]:
    boxes = _boxes(TILES)
    return boxes, draw(boxes, np.ones(len(boxes), bool))


def test_unseen_pixels_are_dimmed_and_seen_ones_kept(tiled):
    _, image = tiled
    np.testing.assert_array_equal(image[10, 10], [round(GREY * annotate_lib._DIM)] * 3)
    np.testing.assert_array_equal(image[60, 90], [GREY] * 3)  # inside glimpse 1, off its badge


def test_the_union_has_one_outline_and_no_inner_frames(tiled):
    """The union (y 40..152, x 64..208) is outlined in yellow, 2 px inside, with a dark line
    just outside; where glimpses meet inside it, no line is drawn (the old grid of frames)."""
    _, image = tiled
    assert is_ink(image[40:42, 64:208]).all() and is_ink(image[150:152, 64:208]).all()
    assert is_ink(image[40:152, 64:66]).all() and is_ink(image[40:152, 206:208]).all()
    assert not is_ink(image[42:150, 66:206][:, [0, -1]]).any()  # 2 px, not more
    dark = round(GREY * annotate_lib._DIM * annotate_lib._SHADE)
    assert (image[39, 64:208] == dark).all() and (image[40:152, 208] == dark).all()
    # The inner edges of the glimpses (row 104: glimpse 1's bottom; column 104: glimpse 2's
    # left; column 128: glimpse 1's right) are plain photo, away from the numbers.
    for row, col in [(104, 80), (120, 104), (60, 128), (140, 128)]:
        np.testing.assert_array_equal(image[row, col], [GREY] * 3, err_msg=f"({row}, {col})")


def test_each_glimpse_number_is_drawn_at_its_own_centre(tiled):
    boxes, image = tiled
    for order, box in enumerate(boxes, start=1):
        assert_number(badge_window(image, box), order)


def test_the_default_jpeg_is_the_same_drawing_within_compression(tiled):
    """JPEG at quality 90 without chroma subsampling: the outline stays yellow and the
    picture within a few levels of the exact (PNG) one."""
    boxes, exact = tiled
    rng = np.random.default_rng(0)
    view = rng.uniform(0, 255, (224, 224, 3)).astype(np.float32)
    view = np.asarray(tf.image.resize(view[None, ::8, ::8], [224, 224]))[0]  # smooth, a photo's
    b, v = tf.constant(boxes[None]), tf.constant(np.ones((1, len(boxes)), bool))
    jpeg = annotate_lib.annotate(tf.constant(view[None]), b, v, seen_pixels(b, v))
    png = annotate_lib.annotate(tf.constant(view[None]), b, v, seen_pixels(b, v), "png")
    image = Image.open(io.BytesIO(jpeg[0].numpy()))
    assert image.format == "JPEG" and image.size == (224, 224)
    lossy = np.asarray(image).astype(int)
    lossless = np.asarray(Image.open(io.BytesIO(png[0].numpy()))).astype(int)
    assert np.abs(lossy - lossless).mean() < 3
    outline = is_ink(exact)
    assert np.abs(lossy[outline] - INK).max(axis=-1).mean() < 25  # still the outline's yellow
    assert len(jpeg[0].numpy()) < len(png[0].numpy()) / 2


def test_badges_of_every_order_are_distinct_and_fit_their_common_size():
    badges = annotate_lib._BADGES
    assert badges.shape == (99, 14, 18)
    inks = {(b == 2).tobytes() for b in badges}
    assert len(inks) == 99
    assert {annotate_lib._badge(n).shape for n in (1, 9, 10, 16)} == {(14, 10), (14, 18)}


def test_invalid_glimpses_draw_nothing():
    boxes = _boxes(TILES[:3] + [[0, 0], [150, 150]])
    valid = np.array([True, True, True, False, False])
    np.testing.assert_array_equal(draw(boxes, valid), draw(boxes[:3], valid[:3]))


def test_a_later_number_is_drawn_over_an_earlier_one_and_badges_stay_in_the_view():
    """Boxes a user sends may share a centre, or lie in a corner: the last number shows, whole."""
    boxes = np.array([[100, 100, 140, 140]] * 12 + [[0, 0, 4, 4]], np.float32)
    image = draw(boxes, np.ones(13, bool))
    assert_number(badge_window(image, boxes[0]), 12)
    assert_number(image[:14, :18], 13)


def test_a_batch_of_photos_in_a_graph_with_unknown_sizes():
    """As exported: a tf.function with unknown batch and glimpse counts, nothing but TF ops."""
    spec = [
        tf.TensorSpec([None, 224, 224, 3], tf.float32),
        tf.TensorSpec([None, None, 4], tf.float32),
        tf.TensorSpec([None, None], tf.bool),
    ]

    @tf.function(input_signature=spec)
    def run(view, boxes, valid):
        return annotate_lib.annotate(view, boxes, valid, seen_pixels(boxes, valid), "png")

    graph = run.get_concrete_function().graph
    assert not {op.type for op in graph.get_operations()} & {"PyFunc", "EagerPyFunc"}
    rng = np.random.default_rng(0)
    views = rng.uniform(0, 255, (3, 224, 224, 3)).astype(np.float32)
    boxes = np.stack([_boxes(TILES), _boxes(TILES[::-1]), _boxes(TILES)])
    valid = np.ones((3, 6), bool)
    valid[2, 4:] = False
    pngs = run(views, boxes, valid).numpy()
    for i, png in enumerate(pngs):
        image = np.asarray(Image.open(io.BytesIO(png)))
        expected = draw(boxes[i], valid[i], views[i])
        np.testing.assert_array_equal(image, expected)
