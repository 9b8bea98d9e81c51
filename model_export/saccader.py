"""The hard-attention classifier: where path, Saccader cell, what path.

    bytes -> views (224 view, high-resolution view of the same region)
    where:  backbone(view) -> location logits [B,7,7,1000]; their mean is the full-image logit;
            the policy turns them into an evidence map over the 8-px cell grid
    cell:   evidence -> T glimpse boxes, one after another, with a memory of the pixels seen
    what:   the glimpses are cut from the high-resolution view onto one canvas, everything
            outside them replaced by the normalisation mean, and classified in one pass; the
            logits average the canvas's location logits over its seen part

The cell (the policy's memory and where-score). Its first glimpses tile a *focus region*: the
rectangle of tile_rows x tile_cols glimpses (either orientation) holding the most evidence,
sized so that the default six glimpses see at most a third of the view. Tiles are visited in
order of the evidence they hold that earlier glimpses have not covered. Later glimpses go, one
by one, to the box with the most evidence not yet seen among those that touch the seen region
and add at least `min_new_fraction` new pixels. So every glimpse shows new pixels, and the
union stays one compact region: the same area scattered in squares classifies 3-5 points worse
(grey holes and seams), which is why the cell plans a region instead of chasing evidence peaks.

Why one canvas instead of one backbone pass per glimpse: six separate passes cost six times a
plain classification, while the canvas costs one, and classifying the union in context is
worth about 8 points of top-1 over classifying each glimpse alone. The decision depends on
glimpse pixels only: a canvas pixel whose bilinear sample would blend in any pixel outside the
glimpses is replaced by a constant, so nothing the model did not look at reaches the backbone.
The same function classifies any set of boxes, which is how a single glimpse's score, a
structured attention graph's subsets and a user's own boxes are all the model's real answer
for exactly those pixels.
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


def _lattice(start: tf.Tensor, step: int, count: int, n: int) -> tf.Tensor:
    """[B] first indices -> [B, n] bool: True at start, start + step, ... (count of them)."""
    offset = tf.range(n)[None, :] - start[:, None]
    return (offset >= 0) & (offset % step == 0) & (offset // step < count)


def focus_tiles(unit: tf.Tensor, cfg: SaccaderConfig) -> tf.Tensor:
    """Evidence [B, G, G] -> [B, n, n] float: 1 at the top-left cells of the focus region's tiles.

    The region is the tile_rows x tile_cols lattice of glimpses, upright or turned a quarter,
    whose rectangle holds the most evidence.
    """
    s, n = cfg.grid_stride, cfg.grid_points
    height, width = (v // s for v in cfg.focus_shape)
    rows, cols = cfg.tile_rows, cfg.tile_cols
    row_step, col_step = cfg.tile_row_step // s, cfg.tile_col_step // s

    def best(sums: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        w = tf.shape(sums)[2]
        flat = tf.reshape(sums, [tf.shape(sums)[0], -1])
        at = tf.argmax(flat, axis=1, output_type=tf.int32)
        return tf.reduce_max(flat, axis=1), at // w, at % w

    upright, r0, c0 = best(grid.window_sums(unit, height, width))
    turned, r1, c1 = best(grid.window_sums(unit, width, height))
    upright_plan = (
        _lattice(r0, row_step, rows, n)[:, :, None] & _lattice(c0, col_step, cols, n)[:, None, :]
    )
    turned_plan = (
        _lattice(r1, col_step, cols, n)[:, :, None] & _lattice(c1, row_step, rows, n)[:, None, :]
    )
    plan = tf.where((turned > upright)[:, None, None], turned_plan, upright_plan)
    return tf.cast(plan, tf.float32)


def saccader_cell(
    evidence: tf.Tensor,
    steps: int | tf.Tensor,
    cfg: SaccaderConfig,
    memory: bool = True,
    focus_fast_path: bool = True,
) -> tf.Tensor:
    """Evidence [B, G, G] -> glimpse boxes [B, steps, 4] (ymin, xmin, ymax, xmax; view pixels).

    At each step the argmax over candidate positions is taken (the inference mode of the
    paper's cell). With memory, candidates are ranked in tiers, best first: the focus region's
    tiles not yet visited; boxes touching the seen region that add at least min_new_fraction
    new pixels; any other box, by the new pixels it adds; visited positions last. Within the
    first two tiers the evidence not yet covered decides. Without memory (the paper's
    "ordered logits" baseline) positions are taken by evidence alone, only never twice.
    `steps` may be a tensor: the loop runs only as far as the batch needs. The focus tiles'
    steps skip the tiers they cannot lose to (`focus_fast_path`; False computes every tier at
    every step, the reference the tests hold the fast path to).
    """
    g, s, n = cfg.glimpse_size, cfg.grid_stride, cfg.grid_points
    k, cells = g // s, grid.cells(cfg)
    batch = tf.shape(evidence)[0]
    lo = tf.reduce_min(evidence, axis=[1, 2], keepdims=True)
    hi = tf.reduce_max(evidence, axis=[1, 2], keepdims=True)
    unit = (evidence - lo) / tf.maximum(hi - lo, 1e-12)  # [0, 1], so tiers can be added on top
    area = float(k * k)
    tops = tf.range(n, dtype=tf.float32) * s  # candidate box top (= left) coordinates
    plan = focus_tiles(unit, cfg) if memory else tf.zeros([batch, n, n])
    index = tf.range(cells)[None, :]

    everywhere = grid.box_sums(unit, cfg) / area

    def focus_step(t, visited, covered, boxes):
        """A step while focus tiles are left: one of them wins (its key, 16 + residual, beats
        every other tier's, at most 9), so the other tiers need not be computed. The same
        keys at the tiles, hence the same argmax: the boxes are identical to `step`'s."""
        residual = grid.box_sums(unit * (1.0 - covered), cfg) / area
        left = plan * (1.0 - visited)
        return pick(t, visited, covered, boxes, left * (16.0 + residual) - 32.0 * visited)

    def step(t, visited, covered, boxes):
        residual = grid.box_sums(unit * (1.0 - covered), cfg) / area
        if memory:
            new = 1.0 - grid.box_sums(covered, cfg) / area
            grown = tf.nn.max_pool2d(covered[..., None], 3, 1, "SAME")[..., 0]
            touch = grid.box_sums(grown, cfg) > 0.0
            left = plan * (1.0 - visited)
            ok = tf.cast(touch & (new >= cfg.min_new_fraction - 1e-6), tf.float32) * (1.0 - left)
            rest = (1.0 - left) * (1.0 - ok)
            key = left * (16.0 + residual) + ok * (8.0 + residual) + rest * new
        else:
            key = everywhere
        return pick(t, visited, covered, boxes, key - 32.0 * visited)

    def pick(t, visited, covered, boxes, key):
        flat = tf.argmax(tf.reshape(key, [batch, n * n]), axis=1, output_type=tf.int32)
        row, col = flat // n, flat % n
        y0, x0 = tf.gather(tops, row), tf.gather(tops, col)
        boxes = boxes.write(t, tf.stack([y0, x0, y0 + g, x0 + g], axis=1))
        visited = tf.maximum(visited, tf.reshape(tf.one_hot(flat, n * n), [batch, n, n]))
        in_rows = (index >= row[:, None]) & (index < row[:, None] + k)
        in_cols = (index >= col[:, None]) & (index < col[:, None] + k)
        box = tf.cast(in_rows[:, :, None] & in_cols[:, None, :], tf.float32)
        return t + 1, visited, tf.maximum(covered, box), boxes

    state = (tf.constant(0), tf.zeros([batch, n, n]), tf.zeros_like(unit),
             tf.TensorArray(tf.float32, size=steps, element_shape=[None, 4]))  # fmt: skip
    if memory and focus_fast_path:
        tiles = cfg.tile_rows * cfg.tile_cols
        state = tf.while_loop(lambda t, *_: (t < steps) & (t < tiles), focus_step, state)
    _, _, _, boxes = tf.while_loop(lambda t, *_: t < steps, step, state)
    return tf.transpose(boxes.stack(), [1, 0, 2])


def union_mask(boxes: tf.Tensor, valid: tf.Tensor, ys: tf.Tensor, xs: tf.Tensor) -> tf.Tensor:
    """Row and column positions [B, P], [B, Q] (view pixels) -> [B, P, Q] bool: inside any
    valid glimpse. A box holds the positions p with min <= p < max."""
    in_y = (ys[:, None, :] >= boxes[:, :, 0:1]) & (ys[:, None, :] < boxes[:, :, 2:3])
    in_x = (xs[:, None, :] >= boxes[:, :, 1:2]) & (xs[:, None, :] < boxes[:, :, 3:4])
    in_y = tf.cast(in_y & valid[:, :, None], tf.float32)
    return tf.einsum("btp,btq->bpq", in_y, tf.cast(in_x, tf.float32)) > 0.0


def pixel_centres(size: int, batch: tf.Tensor) -> tf.Tensor:
    """[B, size]: view coordinates of the pixel centres of a size x size image of the view."""
    centres = (tf.range(size, dtype=tf.float32) + 0.5) * (VIEW_SIZE / size)
    return tf.tile(centres[None], [batch, 1])


def seen_pixels(boxes: tf.Tensor, valid: tf.Tensor, size: int = VIEW_SIZE) -> tf.Tensor:
    """[B, size, size] bool: the pixels of a size x size image of the view inside the glimpses."""
    centres = pixel_centres(size, tf.shape(boxes)[0])
    return union_mask(boxes, valid, centres, centres)


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
    side = tf.clip_by_value(tf.maximum(ymax - ymin, xmax - xmin), 1.0, big)
    top = tf.clip_by_value((ymin + ymax - side) / 2.0, 0.0, big - side)
    left = tf.clip_by_value((xmin + xmax - side) / 2.0, 0.0, big - side)
    return tf.stack([top, left, side], axis=1)


def glimpse_canvas(
    hires: tf.Tensor,
    boxes: tf.Tensor,
    valid: tf.Tensor,
    size: int,
    image_index: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The union of glimpses, magnified onto a [B, size, size, 3] canvas; the rest is _FILL.

    boxes and valid have B rows; row b is cut from hires[image_index[b]] (default: b), so many
    glimpse sets of one photo need only one copy of it.

    Returns the canvas and its [B, size, size] mask of kept pixels. The mask of seen source
    pixels is resampled by the very op and positions that resample the photo, so a canvas
    pixel is kept only when every source pixel its bilinear sample blends (with a weight above
    1e-6) lies inside the glimpses: nothing the model did not look at reaches the backbone.
    (Masking the whole source before resampling gave the same guarantee at 3x the cost.)
    """
    h = hires.shape[1]
    scale = h / VIEW_SIZE
    frame = union_frame(boxes, valid)
    # crop_and_resize puts normalised 0 and 1 on the first and last source pixel centres.
    ys, xs = _frame_positions(frame, size)
    norm = (tf.stack([ys[:, 0], xs[:, 0], ys[:, -1], xs[:, -1]], axis=1) * scale - 0.5) / (h - 1)
    rows = tf.range(tf.shape(boxes)[0])
    index = rows if image_index is None else image_index
    seen = tf.cast(seen_pixels(boxes, valid, h), tf.float32)[..., None]
    keep = tf.image.crop_and_resize(seen, norm, rows, [size, size], method="bilinear")
    keep = keep[..., 0] >= 1.0 - 1e-6
    canvas = tf.image.crop_and_resize(hires, norm, index, [size, size], method="bilinear")
    return tf.where(keep[..., None], canvas, _FILL), keep


def seen_average(loc: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """Location logits [B, g, g, K] averaged over the canvas cells, each weighted by the
    fraction of its pixels inside the glimpses: the grey remainder is not evidence."""
    cell = keep.shape[1] // loc.shape[1]
    weight = tf.nn.avg_pool2d(tf.cast(keep, tf.float32)[..., None], cell, cell, "VALID")[..., 0]
    total = tf.reduce_sum(weight, axis=[1, 2])[:, None]
    return tf.einsum("bij,bijk->bk", weight, loc) / tf.maximum(total, 1e-6)


class Saccader(tf.Module):
    """Backbone + head + config; every path as a method so export, bench and tests share it."""

    def __init__(self, backbone: keras.Model, head: keras.layers.Dense, cfg: SaccaderConfig):
        super().__init__(name="saccader")
        self.backbone = backbone
        self.head = head
        self.cfg = cfg

    def where(self, view: tf.Tensor) -> tf.Tensor:
        size = self.cfg.where_size
        if size != VIEW_SIZE:  # a cheaper pass: its map has size/32 cells a side
            view = tf.image.resize(view, [size, size], method="area")
        return location_logits(self.backbone, self.head, view)

    def evidence(
        self,
        policy: str,
        loc_logits: tf.Tensor,
        predicted: tf.Tensor,
        view: tf.Tensor,
        image_bytes: tf.Tensor,
    ) -> tf.Tensor:
        cfg = self.cfg
        if policy in ("cam", "ordered_logits"):
            return policies.cam_evidence(loc_logits, predicted, cfg)
        if policy == "sobel":
            return policies.sobel_evidence(view, cfg)
        if policy == "centre":
            return policies.centre_evidence(tf.shape(view)[0], cfg)
        if policy == "random":
            return policies.random_evidence(image_bytes, cfg)
        raise ValueError(f"unknown policy {policy!r}")

    def what(
        self,
        hires: tf.Tensor,
        boxes: tf.Tensor,
        valid: tf.Tensor,
        image_index: tf.Tensor | None = None,
    ) -> dict[str, tf.Tensor]:
        """Logits [B, 1000] from the pixels of the valid glimpses only (see the docstring)."""
        canvas, keep = glimpse_canvas(hires, boxes, valid, self.cfg.canvas_size, image_index)
        loc = location_logits(self.backbone, self.head, canvas)
        return {"logits": seen_average(loc, keep), "canvas": canvas}

    def run(
        self,
        image_bytes: tf.Tensor,
        num_glimpses: tf.Tensor,
        steps: int | tf.Tensor | None = None,
        policy: str | None = None,
        boxes: tf.Tensor | None = None,
    ) -> dict[str, tf.Tensor]:
        """The whole model on a batch of encoded images; num_glimpses [B] in 1..steps
        (default: max_glimpses; a tensor, e.g. the batch's largest num_glimpses, is fine).

        With `boxes` [B, steps, 4] the where path still runs (for the full-image answer) but
        the glimpses are those boxes, the first num_glimpses of each row.
        """
        cfg = self.cfg
        policy = policy or cfg.policy
        v = preprocessing.batch_views(image_bytes, cfg.hires_size)
        loc_full = self.where(v["view"])
        full_logits = tf.reduce_mean(loc_full, axis=[1, 2])
        predicted = tf.argmax(full_logits, axis=1, output_type=tf.int32)
        evidence = self.evidence(policy, loc_full, predicted, v["view"], image_bytes)
        if boxes is None:
            steps = cfg.max_glimpses if steps is None else steps
            boxes = saccader_cell(evidence, steps, cfg, memory=policy != "ordered_logits")
        valid = tf.range(tf.shape(boxes)[1])[None, :] < num_glimpses[:, None]
        out = self.what(v["hires"], boxes, valid)
        return {
            **v,
            **out,
            "boxes": boxes,
            "valid": valid,
            "evidence": evidence,
            "full_logits": full_logits,
            "location_logits": loc_full,
        }
