"""Frozen-backbone features of a user's photos: what a new classification head is fitted on.

The head is linear on the backbone's last feature map, so every answer the model gives is a
linear function of a pooled feature vector: the full-image logits are `mean(features) @ W + b`
and the what path's logits are `seen_weighted_mean(canvas features) @ W + b` (saccader.py
`seen_average`). So a head can be fitted on pooled vectors alone, and two kinds are extracted:

- view: the [7, 7, C] feature map of the 224 view (kept whole, float16: the where path's
  evidence for any future head is computed from it without another backbone pass), and its mean;
- canvas: the glimpse canvas the where path chooses with a given head, pooled as the what path
  pools it; cached by photo and boxes, and the boxes come from the cached view features
  without a backbone pass, so a new head re-extracts only the photos whose glimpses moved.
  Fitting on these as well as on the view is what makes the *glimpse* classifier good (a head
  fitted on full views only loses points on canvases: grey surround, magnified parts).

Both are computed in batched graph calls by the same functions the exported model runs
(preprocessing.batch_views, saccader.saccader_cell, glimpse_canvas), so what the head learns
from is exactly what it will see when served.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from model_export import policies, preprocessing
from model_export.saccader import Saccader, glimpse_canvas, saccader_cell
from model_export.training.head import Head

# Bump when what a cached feature means changes (preprocessing, canvas, pooling), so an old
# cache is never read as a new one.
FEATURES_REVISION = 1


class UnreadableImage(ValueError):
    """The bytes are not an image the model's decoder reads (JPEG, PNG, GIF, BMP)."""


class FeatureExtractor:
    """The backbone's features of encoded photos, batched, in graph mode."""

    def __init__(self, model: Saccader):
        self.model = model
        self.cfg = model.cfg
        self._view = tf.function(
            self._view_features, input_signature=[tf.TensorSpec([None], tf.string)]
        )
        self._boxes = tf.function(
            self._glimpse_boxes,
            input_signature=[
                tf.TensorSpec([None, None, None, None], tf.float32),
                tf.TensorSpec([None, None], tf.float32),
                tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([], tf.int32),
            ],
        )
        self._canvas = tf.function(
            self._canvas_features,
            input_signature=[
                tf.TensorSpec([None], tf.string),
                tf.TensorSpec([None, None, 4], tf.float32),
            ],
        )

    @property
    def identity(self) -> str:
        """What the features depend on besides the photo: the backbone variant and settings
        of the where path and the canvas (a cache key part)."""
        c = self.cfg
        return (
            f"r{FEATURES_REVISION}-{c.variant}-g{c.glimpse_size}-s{c.grid_stride}"
            f"-t{c.tile_rows}x{c.tile_cols}-{c.tile_row_step}x{c.tile_col_step}"
            f"-n{c.min_new_fraction}-c{c.canvas_size}-h{c.hires_size}"
        )

    def _view_features(self, image_bytes: tf.Tensor) -> tf.Tensor:
        view = preprocessing.batch_views(image_bytes, None)["view"]
        return self.model.backbone(preprocessing.normalise(view), training=False)

    def _glimpse_boxes(
        self, view_features: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, steps: tf.Tensor
    ) -> tf.Tensor:
        """The where path with head (kernel, bias), from cached view features alone (no
        photo, no backbone pass): [B, steps, 4] glimpse boxes."""
        loc = tf.einsum("bhwc,ck->bhwk", view_features, kernel) + bias
        predicted = tf.argmax(tf.reduce_mean(loc, axis=[1, 2]), axis=1, output_type=tf.int32)
        return saccader_cell(policies.cam_evidence(loc, predicted, self.cfg), steps, self.cfg)

    def _canvas_features(self, image_bytes: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
        """The what path's canvas of these glimpses, through the backbone, pooled over its seen
        cells exactly as the what path averages location logits (saccader.seen_average)."""
        valid = tf.ones(tf.shape(boxes)[:2], tf.bool)
        hires = preprocessing.batch_views(image_bytes, self.cfg.hires_size)["hires"]
        canvas, keep = glimpse_canvas(hires, boxes, valid, self.cfg.canvas_size)
        features = self.model.backbone(preprocessing.normalise(canvas), training=False)
        cell = keep.shape[1] // features.shape[1]
        weight = tf.nn.avg_pool2d(tf.cast(keep, tf.float32)[..., None], cell, cell, "VALID")
        return tf.reduce_sum(weight * features, axis=[1, 2]) / tf.maximum(
            tf.reduce_sum(weight, axis=[1, 2]), 1e-6
        )

    def view(self, images: Sequence[bytes]) -> list[np.ndarray | UnreadableImage]:
        """[7, 7, C] float16 per photo, or the reason it could not be read."""
        return _each(images, lambda batch: self._view(tf.constant(batch)).numpy())

    def boxes(self, view_features: np.ndarray, head: Head, steps: int) -> np.ndarray:
        """[N, steps, 4] glimpses the where path picks with `head` (view pixels)."""
        return self._boxes(
            tf.constant(view_features, tf.float32),
            tf.constant(head.kernel, tf.float32),
            tf.constant(head.bias, tf.float32),
            tf.constant(steps),
        ).numpy()

    def canvas(self, images: Sequence[bytes], boxes: np.ndarray) -> np.ndarray:
        """[N, C] pooled canvas features of photos whose view features exist (so they decode)."""
        return self._canvas(tf.constant(list(images)), tf.constant(boxes, tf.float32)).numpy()


def _each(
    images: Sequence[bytes], run: Callable[[list[bytes]], np.ndarray]
) -> list[np.ndarray | UnreadableImage]:
    """Run a batch; when the decoder refuses it, run each photo alone to name the bad ones
    (one unreadable photo must not cost its batch-mates)."""
    try:
        out = run(list(images))
        return [row.astype(np.float16) for row in out]
    except tf.errors.InvalidArgumentError:
        if len(images) == 1:
            return [UnreadableImage("not a JPEG, PNG, GIF or BMP image the model can decode")]
    results: list[np.ndarray | UnreadableImage] = []
    for image in images:
        results += _each([image], run)
    return results


class FeatureCache:
    """Features by photo content, on local disk or Cloud Storage: a retrain (other settings,
    more photos, another import file naming the same photos) extracts only what is new, and a
    Beam pipeline's workers fill the cache the trainer then reads.

    One `.npy` per photo under `<root>/<extractor identity>/<2 hex>/<sha256>.npy`; local files
    are written aside and renamed (a Cloud Storage object appears whole), so a killed run
    leaves no torn entry.
    """

    def __init__(self, root: Path | str, identity: str):
        self.root = f"{str(root).rstrip('/')}/{identity}"
        self._storage = None

    @staticmethod
    def key(image: bytes) -> str:
        return hashlib.sha256(image).hexdigest()

    def _path(self, key: str) -> str:
        return f"{self.root}/{key[:2]}/{key}.npy"

    def _gcs(self):
        if self._storage is None:
            from service.batch.storage import Storage

            self._storage = Storage()
        return self._storage

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        if path.startswith("gs://"):
            from google.api_core.exceptions import NotFound

            try:
                with self._gcs().open_read(path) as f:
                    return np.load(io.BytesIO(f.read()), allow_pickle=False)
            except (NotFound, ValueError):
                return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: np.ndarray) -> None:
        path = self._path(key)
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        if path.startswith("gs://"):
            self._gcs().write_bytes(path, buffer.getvalue(), "application/octet-stream")
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(target)
