"""Frozen-backbone features of a user's photos: what a new classification head is fitted on.

The head is linear on the backbone's last feature map, so every answer the model gives is a
linear function of a pooled feature vector: the full-image logits are `mean(features) @ W + b`
and the what path's logits are `seen_weighted_mean(canvas features) @ W + b` (saccader.py
`seen_average`). So a head can be fitted on pooled vectors alone, and two kinds are extracted:

- view: the [7, 7, C] feature map of the 224 view (kept whole, float16: the where path's
  evidence for any future head is computed from it without another backbone pass), and its mean;
- canvas: the glimpse canvas the where path chooses with a given head, pooled as the what path
  pools it. Fitting on these as well as on the view is what makes the *glimpse* classifier good
  (a head fitted on full views only loses points on canvases: grey surround, magnified parts).

Both are computed in one batched graph call per batch, by the same functions the exported
model runs (preprocessing.batch_views, saccader.saccader_cell, glimpse_canvas), so what the
head learns from is exactly what it will see when served.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from model_export import policies, preprocessing
from model_export.saccader import Saccader, glimpse_canvas, saccader_cell

# Bump when what a cached feature means changes (preprocessing, canvas, pooling), so an old
# cache is never read as a new one.
FEATURES_REVISION = 1


class UnreadableImage(ValueError):
    """The bytes are not an image the model's decoder reads (JPEG, PNG, GIF, BMP)."""


@dataclass(frozen=True)
class Head:
    """A linear head: logits = features @ kernel + bias; kernel [C, K], bias [K]."""

    kernel: np.ndarray
    bias: np.ndarray

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.kernel + self.bias

    def digest(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.kernel, np.float32).tobytes())
        h.update(np.ascontiguousarray(self.bias, np.float32).tobytes())
        return h.hexdigest()[:16]


class FeatureExtractor:
    """The backbone's features of encoded photos, batched, in graph mode."""

    def __init__(self, model: Saccader):
        self.model = model
        self.cfg = model.cfg
        self._view = tf.function(
            self._view_features, input_signature=[tf.TensorSpec([None], tf.string)]
        )
        self._canvas = tf.function(
            self._canvas_features,
            input_signature=[
                tf.TensorSpec([None], tf.string),
                tf.TensorSpec([None, None, None, None], tf.float32),
                tf.TensorSpec([None, None], tf.float32),
                tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([], tf.int32),
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

    def _canvas_features(
        self,
        image_bytes: tf.Tensor,
        view_features: tf.Tensor,
        kernel: tf.Tensor,
        bias: tf.Tensor,
        steps: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The where path with head (kernel, bias) on the cached view features, then the what
        path's canvas of `steps` glimpses, pooled over its seen cells."""
        loc = tf.einsum("bhwc,ck->bhwk", view_features, kernel) + bias
        predicted = tf.argmax(tf.reduce_mean(loc, axis=[1, 2]), axis=1, output_type=tf.int32)
        evidence = policies.cam_evidence(loc, predicted, self.cfg)
        boxes = saccader_cell(evidence, steps, self.cfg)
        valid = tf.ones(tf.shape(boxes)[:2], tf.bool)
        hires = preprocessing.batch_views(image_bytes, self.cfg.hires_size)["hires"]
        canvas, keep = glimpse_canvas(hires, boxes, valid, self.cfg.canvas_size)
        features = self.model.backbone(preprocessing.normalise(canvas), training=False)
        cell = keep.shape[1] // features.shape[1]
        weight = tf.nn.avg_pool2d(tf.cast(keep, tf.float32)[..., None], cell, cell, "VALID")
        pooled = tf.reduce_sum(weight * features, axis=[1, 2]) / tf.maximum(
            tf.reduce_sum(weight, axis=[1, 2]), 1e-6
        )
        return pooled, boxes

    def view(self, images: Sequence[bytes]) -> list[np.ndarray | UnreadableImage]:
        """[7, 7, C] float16 per photo, or the reason it could not be read."""
        return _each(images, lambda batch: self._view(tf.constant(batch)).numpy())

    def canvas(
        self, images: Sequence[bytes], view_features: np.ndarray, head: Head, steps: int
    ) -> np.ndarray:
        """[N, C] pooled canvas features of photos whose view features exist (so they decode)."""
        pooled, _ = self._canvas(
            tf.constant(list(images)),
            tf.constant(view_features, tf.float32),
            tf.constant(head.kernel, tf.float32),
            tf.constant(head.bias, tf.float32),
            tf.constant(steps),
        )
        return pooled.numpy()


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
