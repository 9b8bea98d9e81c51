"""The model's answers on test photos at several numbers of glimpses, in one pass each.

The glimpse sequence of the cell does not depend on how many glimpses are asked for (each
step is an argmax given the earlier ones), so the first T glimpses of one 6-step run are the
T-glimpse answer: one where pass and one what pass per T, by the exported model's functions.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from model_export import policies, preprocessing
from model_export.saccader import Saccader, saccader_cell, seen_pixels


def test_answers(model: Saccader, ts: list[int]) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    cfg = model.cfg
    steps = max(ts)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def answers(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        v = preprocessing.batch_views(image_bytes, cfg.hires_size)
        loc = model.where(v["view"])
        full = tf.reduce_mean(loc, axis=[1, 2])
        predicted = tf.argmax(full, axis=1, output_type=tf.int32)
        boxes = saccader_cell(policies.cam_evidence(loc, predicted, cfg), steps, cfg)
        out = {"full": tf.nn.softmax(full), "boxes": boxes}
        for t in ts:
            valid = tf.broadcast_to(tf.range(steps)[None, :] < t, tf.shape(boxes)[:2])
            out[f"t{t}"] = tf.nn.softmax(model.what(v["hires"], boxes, valid)["logits"])
        default = tf.broadcast_to(
            tf.range(steps)[None, :] < cfg.default_glimpses, tf.shape(boxes)[:2]
        )
        seen = tf.cast(seen_pixels(boxes, default), tf.float32)
        out["coverage"] = tf.reduce_mean(seen, axis=[1, 2])
        return out

    return answers
