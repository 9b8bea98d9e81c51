"""The hard-attention classifier: where path, Saccader cell, what path.

    bytes -> views (224 view, high-resolution view of the same region)
    where:  backbone(view) -> location logits [B,7,7,1000]; their mean is the full-image logit
    cell:   policy scores over candidate centres -> T glimpse boxes, one after another, with a
            memory of visited locations and a coverage budget
    what:   the glimpses are cut from the high-resolution view onto one canvas, everything
            outside them replaced by the normalisation mean, and classified in one pass; each
            glimpse's logits are the mean location logits of the canvas cells inside it
            (BagNet-style, as in the paper); the prediction is the mean of the glimpse logits.

Why one canvas instead of one backbone pass per glimpse: six separate passes cost six times a
plain classification, while the canvas costs one, and magnifying the union (about 2x for the
usual 125-px union) is worth about 7 points of top-1 over classifying glimpses at their 224-view
size. The decision still depends on glimpse pixels only: the canvas is built from a source in
which every pixel outside the union has already been replaced by a constant, so no sample, not
even a bilinear neighbour at a border, reads a pixel the model did not look at.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from model_export import grid, policies, preprocessing
from model_export.config import VIEW_SIZE, SaccaderConfig

_FILL = 127.0  # normalises to exactly 0: "nothing here"


def location_logits(
    backbone: keras.Model, head: keras.layers.Dense, pixels: tf.Tensor
) -> tf.Tensor:
    """Per-location class logits [B, h, w, 1000]; their spatial mean is the image logit."""
    features = backbone(preprocessing.normalise(pixels), training=False)
    return tf.einsum("bhwc,ck->bhwk", features, head.kernel) + head.bias


def _span(start: tf.Tensor, length: int, count: int) -> tf.Tensor:
    """[B] first indices -> [B, count] bool, True on [start, start + length)."""
    idx = tf.range(count)[None, :]
    return tf.logical_and(idx >= start[:, None], idx < start[:, None] + length)


def saccader_cell(
    scores: tf.Tensor, steps: int, cfg: SaccaderConfig, memory: bool = True
) -> tf.Tensor:
    """Scores [B, n, n] -> glimpse boxes [B, steps, 4] (ymin, xmin, ymax, xmax; view pixels).

    At each step the argmax over candidates is taken (inference mode of the paper's cell).
    Ranking tiers, best first: fresh candidates; candidates near a visited centre (inhibition
    of return); visited locations; candidates that would break the coverage budget. Within a
    tier the policy's score decides, so the sequence never stalls when a tier runs out, and a
    location is looked at twice rather than the budget broken (the union never exceeds it).
    """
    g, s, n = cfg.glimpse_size, cfg.grid_stride, cfg.grid_points
    k, cells = g // s, grid.cells(cfg)
    batch = tf.shape(scores)[0]
    lo = tf.reduce_min(scores, axis=[1, 2], keepdims=True)
    hi = tf.reduce_max(scores, axis=[1, 2], keepdims=True)
    unit = (scores - lo) / tf.maximum(hi - lo, 1e-12)  # [0, 1], so tiers can be added on top

    tops = tf.range(n, dtype=tf.float32) * s  # candidate box top (= left) coordinates
    radius_cells = int(cfg.suppression_radius * g / s + 1e-6)
    budget = cfg.max_coverage * cells * cells + 1e-6
    visited = tf.zeros_like(scores)
    near = tf.zeros_like(scores)
    covered = tf.zeros([batch, cells, cells])
    boxes = []
    for _ in range(steps):
        if memory:
            new = grid.box_sums(1.0 - covered, cfg)
            so_far = tf.reduce_sum(covered, axis=[1, 2])[:, None, None]
            over = tf.cast(so_far + new > budget, tf.float32)
        else:
            over = tf.zeros_like(scores)
        key = unit - 2.0 * near - 4.0 * visited - 8.0 * over
        flat = tf.argmax(tf.reshape(key, [batch, n * n]), axis=1, output_type=tf.int32)
        row, col = flat // n, flat % n
        y0 = tf.gather(tops, row)
        x0 = tf.gather(tops, col)
        boxes.append(tf.stack([y0, x0, y0 + g, x0 + g], axis=1))
        visited = tf.maximum(visited, tf.reshape(tf.one_hot(flat, n * n), [batch, n, n]))
        if memory:
            close = tf.logical_and(
                _span(row - radius_cells, 2 * radius_cells + 1, n)[:, :, None],
                _span(col - radius_cells, 2 * radius_cells + 1, n)[:, None, :],
            )
            near = tf.maximum(near, tf.cast(close, tf.float32))
            box = tf.logical_and(_span(row, k, cells)[:, :, None], _span(col, k, cells)[:, None, :])
            covered = tf.maximum(covered, tf.cast(box, tf.float32))
    return tf.stack(boxes, axis=1)


def union_cells(boxes: tf.Tensor, valid: tf.Tensor, cfg: SaccaderConfig) -> tf.Tensor:
    """[B, G, G] bool: grid cells inside any valid glimpse (boxes lie on the grid)."""
    cells = grid.cells(cfg)
    centres = (tf.range(cells, dtype=tf.float32) + 0.5) * cfg.grid_stride
    centres = tf.tile(centres[None], [tf.shape(boxes)[0], 1])
    return tf.reduce_any(_inside(centres, centres, boxes, valid), axis=1)


def _inside(ys: tf.Tensor, xs: tf.Tensor, boxes: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Row and column positions [B, P] (view pixels) -> [B, T, P, P]: inside valid glimpse t."""
    in_y = tf.logical_and(ys[:, None, :] >= boxes[:, :, 0:1], ys[:, None, :] < boxes[:, :, 2:3])
    in_x = tf.logical_and(xs[:, None, :] >= boxes[:, :, 1:2], xs[:, None, :] < boxes[:, :, 3:4])
    inside = tf.logical_and(in_y[:, :, :, None], in_x[:, :, None, :])
    return tf.logical_and(inside, valid[:, :, None, None])


def _frame_positions(frame: tf.Tensor, count: int) -> tuple[tf.Tensor, tf.Tensor]:
    """View coordinates of the centres of `count` equal cells across the frame, [B, count]."""
    top, left, side = frame[:, 0:1], frame[:, 1:2], frame[:, 2:3]
    centres = ((tf.range(count, dtype=tf.float32) + 0.5) / count)[None]
    return top + centres * side, left + centres * side


def union_frame(boxes: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Smallest square inside the view holding every valid glimpse: [B, 3] (top, left, side)."""
    big = float(VIEW_SIZE)
    ymin = tf.reduce_min(tf.where(valid, boxes[..., 0], big), axis=1)
    xmin = tf.reduce_min(tf.where(valid, boxes[..., 1], big), axis=1)
    ymax = tf.reduce_max(tf.where(valid, boxes[..., 2], 0.0), axis=1)
    xmax = tf.reduce_max(tf.where(valid, boxes[..., 3], 0.0), axis=1)
    side = tf.minimum(tf.maximum(ymax - ymin, xmax - xmin), big)
    top = tf.clip_by_value((ymin + ymax - side) / 2.0, 0.0, big - side)
    left = tf.clip_by_value((xmin + xmax - side) / 2.0, 0.0, big - side)
    return tf.stack([top, left, side], axis=1)


def glimpse_canvas(
    hires: tf.Tensor, seen: tf.Tensor, frame: tf.Tensor, size: int, cfg: SaccaderConfig
) -> tf.Tensor:
    """The union of glimpses, magnified onto a [B, size, size, 3] canvas; the rest is _FILL.

    seen [B, G, G] marks the grid cells inside the union.
    """
    h = hires.shape[1]
    scale = h / VIEW_SIZE
    masked = tf.where(grid.upsample_cells(seen, h)[..., None], hires, _FILL)

    # crop_and_resize puts normalised 0 and 1 on the first and last source pixel centres.
    ys, xs = _frame_positions(frame, size)
    norm = (tf.stack([ys[:, 0], xs[:, 0], ys[:, -1], xs[:, -1]], axis=1) * scale - 0.5) / (h - 1)
    index = tf.range(tf.shape(hires)[0])
    canvas = tf.image.crop_and_resize(masked, norm, index, [size, size], method="bilinear")
    # The same union, looked up for every canvas pixel: its view position's grid cell.
    last = grid.cells(cfg) - 1
    rows = tf.clip_by_value(tf.cast(ys // cfg.grid_stride, tf.int32), 0, last)
    cols = tf.clip_by_value(tf.cast(xs // cfg.grid_stride, tf.int32), 0, last)
    keep = tf.gather(tf.gather(seen, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    return tf.where(keep[..., None], canvas, _FILL)


def glimpse_cells(boxes: tf.Tensor, valid: tf.Tensor, frame: tf.Tensor, side: int) -> tf.Tensor:
    """Weights [B, T, side, side]: each glimpse averages the canvas cells whose centres it holds."""
    ys, xs = _frame_positions(frame, side)
    inside = tf.cast(_inside(ys, xs, boxes, valid), tf.float32)
    count = tf.reduce_sum(inside, axis=[2, 3], keepdims=True)
    return inside / tf.maximum(count, 1.0)


class Saccader(tf.Module):
    """Backbone + head + config; every path as a method so export, bench and tests share it."""

    def __init__(self, backbone: keras.Model, head: keras.layers.Dense, cfg: SaccaderConfig):
        super().__init__(name="saccader")
        self.backbone = backbone
        self.head = head
        self.cfg = cfg

    def where(self, view: tf.Tensor) -> tf.Tensor:
        return location_logits(self.backbone, self.head, view)

    def scores(
        self,
        policy: str,
        loc_logits: tf.Tensor,
        predicted: tf.Tensor,
        view: tf.Tensor,
        image_bytes: tf.Tensor,
    ) -> tf.Tensor:
        cfg = self.cfg
        if policy in ("cam", "ordered_logits"):
            return policies.cam_scores(loc_logits, predicted, cfg)
        if policy == "sobel":
            return policies.sobel_scores(view, cfg)
        if policy == "centre":
            return policies.centre_scores(tf.shape(view)[0], cfg)
        if policy == "random":
            return policies.random_scores(image_bytes, cfg)
        raise ValueError(f"unknown policy {policy!r}")

    def what(self, hires: tf.Tensor, boxes: tf.Tensor, valid: tf.Tensor) -> dict[str, tf.Tensor]:
        """Glimpse logits [B, T, 1000] from glimpse pixels only (see the module docstring)."""
        frame = union_frame(boxes, valid)
        seen = union_cells(boxes, valid, self.cfg)
        canvas = glimpse_canvas(hires, seen, frame, self.cfg.canvas_size, self.cfg)
        loc = location_logits(self.backbone, self.head, canvas)
        weights = glimpse_cells(boxes, valid, frame, loc.shape[1])
        glimpse_logits = tf.einsum("btij,bijk->btk", weights, loc)
        count = tf.reduce_sum(tf.cast(valid, tf.float32), axis=1, keepdims=True)
        logits = tf.reduce_sum(
            glimpse_logits * tf.cast(valid, tf.float32)[..., None], axis=1
        ) / tf.maximum(count, 1.0)
        return {
            "glimpse_logits": glimpse_logits,
            "logits": logits,
            "canvas": canvas,
            "frame": frame,
            "seen_cells": seen,
        }

    def run(
        self,
        image_bytes: tf.Tensor,
        num_glimpses: tf.Tensor,
        steps: int | None = None,
        policy: str | None = None,
    ) -> dict[str, tf.Tensor]:
        """The whole model on a batch of encoded images; num_glimpses [B] in 1..steps."""
        cfg = self.cfg
        policy = policy or cfg.policy
        steps = steps or cfg.max_glimpses
        v = preprocessing.batch_views(image_bytes, cfg.hires_size)
        loc_full = self.where(v["view"])
        full_logits = tf.reduce_mean(loc_full, axis=[1, 2])
        predicted = tf.argmax(full_logits, axis=1, output_type=tf.int32)
        scores = self.scores(policy, loc_full, predicted, v["view"], image_bytes)
        boxes = saccader_cell(scores, steps, cfg, memory=policy != "ordered_logits")
        valid = tf.range(steps)[None, :] < num_glimpses[:, None]
        out = self.what(v["hires"], boxes, valid)
        return {
            **v,
            **out,
            "boxes": boxes,
            "valid": valid,
            "scores": scores,
            "full_logits": full_logits,
            "location_logits": loc_full,
        }
