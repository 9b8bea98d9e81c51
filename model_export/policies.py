"""Evidence maps: how much each grid cell of the view is worth looking at, per policy.

Every policy returns evidence [B, G, G] over the same grid of cells; the Saccader cell
(saccader.py) turns evidence into a sequence of glimpses with memory. The default is the class
activation map of the full-image prediction; the others are the paper's baselines.
"""

from __future__ import annotations

import tensorflow as tf

from model_export import grid
from model_export.config import SaccaderConfig


def cam_evidence(
    location_logits: tf.Tensor, predicted: tf.Tensor, cfg: SaccaderConfig
) -> tf.Tensor:
    """The predicted class's probability at each location, upsampled to the cell grid.

    location_logits [B, h, w, 1000] are exact per-location logits (their mean is the
    full-image logit), so the map of the predicted class says where that decision came from.
    Each location's logits go through a softmax first: a location that is merely "busy"
    (high logits for every class) should not outrank one that singles out the predicted class
    (raw logits cost 1.8 points of top-1 on the dev photos, log-softmax 1.2).
    """
    probs = tf.nn.softmax(location_logits, axis=-1)
    cam = tf.gather(probs, predicted, axis=3, batch_dims=1)  # [B, h, w]
    g = grid.cells(cfg)
    return tf.image.resize(cam[..., None], [g, g], method="bilinear")[..., 0]


def sobel_evidence(view: tf.Tensor, cfg: SaccaderConfig) -> tf.Tensor:
    """Mean Sobel edge magnitude per cell (the paper's 'Sobel mean' baseline)."""
    grey = tf.image.rgb_to_grayscale(view / 255.0)
    edges = tf.image.sobel_edges(grey)[..., 0, :]  # [B, H, W, 2]
    return grid.pool_to_cells(tf.norm(edges, axis=-1), cfg)


def centre_evidence(batch: tf.Tensor, cfg: SaccaderConfig) -> tf.Tensor:
    """The photographer's prior: evidence falls off with distance from the view's centre."""
    g = grid.cells(cfg)
    c = tf.range(g, dtype=tf.float32) - (g - 1) / 2.0
    yy, xx = tf.meshgrid(c, c, indexing="ij")
    score = -tf.sqrt(yy**2 + xx**2)
    return tf.tile(score[None], [batch, 1, 1])


def random_evidence(image_bytes: tf.Tensor, cfg: SaccaderConfig) -> tf.Tensor:
    """Uniform evidence, seeded by the image bytes: random across photos, repeatable per photo."""
    g = grid.cells(cfg)
    hashes = tf.strings.to_hash_bucket_fast(image_bytes, 2**31 - 1)

    def one(h: tf.Tensor) -> tf.Tensor:
        seed = tf.stack([tf.cast(h, tf.int32), tf.constant(cfg.seed, tf.int32)])
        return tf.random.stateless_uniform([g, g], seed=seed)

    return tf.map_fn(one, hashes, fn_output_signature=tf.TensorSpec([g, g], tf.float32))
