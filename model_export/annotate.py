"""Draw the glimpses on the view: what a person looks at to check the explanation.

Pixels the model never saw are dimmed, so the picture shows the evidence rather than the
photo, and each glimpse gets a frame whose colour follows the visiting order (first = yellow,
last = deep red).
"""

from __future__ import annotations

import tensorflow as tf

from model_export.config import VIEW_SIZE

_DIM = 0.35
_FIRST = tf.constant([1.0, 0.9, 0.1])
_LAST = tf.constant([0.85, 0.05, 0.1])


def _order_colours(steps: int) -> tf.Tensor:
    w = tf.linspace(0.0, 1.0, steps)[:, None]
    rgb = (1.0 - w) * _FIRST + w * _LAST
    return tf.concat([rgb, tf.ones([steps, 1])], axis=1)  # RGBA


def annotate(view: tf.Tensor, boxes: tf.Tensor, valid: tf.Tensor, seen: tf.Tensor) -> tf.Tensor:
    """view [B,224,224,3] 0..255, boxes [B,T,4] view px, seen [B,224,224] bool -> PNG bytes [B]."""
    steps = tf.shape(boxes)[1]
    image = view / 255.0
    image *= (_DIM + (1.0 - _DIM) * tf.cast(seen, tf.float32))[..., None]  # unseen: dimmed
    # Invalid glimpses are moved outside the image, where nothing is drawn.
    norm = tf.where(valid[..., None], boxes / VIEW_SIZE, -2.0)
    inner = norm + tf.constant([1.0, 1.0, -1.0, -1.0]) / VIEW_SIZE  # second line: 2 px frames
    frames = tf.concat([norm, inner], axis=1)
    colours = tf.concat([_order_colours(steps)] * 2, axis=0)
    drawn = tf.image.draw_bounding_boxes(image, frames, colours)
    pixels = tf.cast(tf.round(tf.clip_by_value(drawn, 0.0, 1.0) * 255.0), tf.uint8)
    # Level 1: a quarter of the default level's encoding time for a few percent more bytes.
    return tf.map_fn(
        lambda p: tf.io.encode_png(p, compression=1), pixels, fn_output_signature=tf.string
    )
