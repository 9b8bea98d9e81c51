"""Draw the glimpses on the view: what a person looks at to check the explanation.

Pixels the model never saw are dimmed, so the picture shows the evidence rather than the
photo. The glimpses overlap (the focus region tiles them 40-48 px apart at 64 px each), so one
frame per glimpse drew a grid of a dozen crossing lines; instead the union of the glimpses gets
one outline (yellow inside, a dark line outside, to read on light and dark photos alike), and
each glimpse its visiting order in a small dark badge at its own centre. The model's glimpses
add at least 55% new pixels each, so a glimpse's centre is at least 21 px from every earlier
one's along one axis ((64 - 20)^2 px would be more than 45% of 64^2 seen already), and badges
are at most 18 x 14 px: the numbers never cover each other. Boxes a user sends may overlap
more; then the later number is drawn on top.

Everything is tensor ops on the batch, no Python per image, so it exports with the model and
TF Serving runs it on every prediction: the digits are a constant 3x5 bitmap font, scaled 2x
and stamped with one scatter.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from model_export.config import VIEW_SIZE

_DIM = 0.35  # brightness left to the pixels the model did not see
_INK = (1.0, 0.83, 0.0)  # the demo's glimpse yellow (#ffd400)
_SHADE = 0.2  # what is left of the pixels under the dark outer line and the badges
_EDGE = 2  # px of the union's yellow outline, inside the union
_HALO = 1  # px of the dark line outside it

# 3x5 digits, one string per row: the smallest font whose 0-9 are told apart at a glance.
_FONT = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", ".##", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", "..#", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
}
_SCALE = 2  # font pixels -> view pixels: 6x10 px digits
_PAD = 2  # badge margin around the digits, view px
_MAX_ORDER = 99  # badges are made for orders 1..99 (the model takes at most 16 glimpses)


def _badge(order: int) -> np.ndarray:
    """The badge of one visiting order: [h, w] uint8, 0 nothing, 1 badge, 2 digit ink."""
    glyphs = [np.array([[c == "#" for c in row] for row in _FONT[d]]) for d in str(order)]
    gap = np.zeros((5, 1), bool)
    ink = np.concatenate([g for d in glyphs for g in (d, gap)][:-1], axis=1)
    ink = np.kron(ink, np.ones((_SCALE, _SCALE), bool))
    badge = np.pad(ink.astype(np.uint8) + 1, _PAD, constant_values=1)
    badge[[0, 0, -1, -1], [0, -1, 0, -1]] = 0  # rounded corners
    return badge


def _badges() -> np.ndarray:
    """Every order's badge, centred in one common size: [_MAX_ORDER, h, w] uint8."""
    badges = [_badge(n) for n in range(1, _MAX_ORDER + 1)]
    h, w = max(b.shape[0] for b in badges), max(b.shape[1] for b in badges)
    out = np.zeros((len(badges), h, w), np.uint8)
    for i, b in enumerate(badges):
        top, left = (h - b.shape[0]) // 2, (w - b.shape[1]) // 2
        out[i, top : top + b.shape[0], left : left + b.shape[1]] = b
    return out


_BADGES = _badges()


def _near(mask: tf.Tensor, radius: int, outside: bool) -> tf.Tensor:
    """[B,H,W] bool -> [B,H,W] bool: within `radius` px (a square) of a True pixel; pixels off
    the image count as `outside`. ORs of shifted slices, rows then columns: a quarter of the
    time of a max-pool of the same window on the CPU."""
    size = tf.shape(mask)[1:]
    padded = tf.pad(mask, [[0, 0], [radius, radius], [radius, radius]], constant_values=outside)
    rows = padded[:, : size[0]]
    for i in range(1, 2 * radius + 1):
        rows |= padded[:, i : i + size[0]]
    near = rows[:, :, : size[1]]
    for j in range(1, 2 * radius + 1):
        near |= rows[:, :, j : j + size[1]]
    return near


def _badge_map(boxes: tf.Tensor, valid: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The badges' ground and their digits' ink, [B,224,224] bool each. A later glimpse's badge
    is drawn over an earlier one's, as the glimpses were taken."""
    batch, steps = tf.shape(boxes)[0], tf.shape(boxes)[1]
    h, w = _BADGES.shape[1:]
    order = tf.minimum(tf.range(steps), _MAX_ORDER - 1)
    stamps = tf.gather(tf.constant(_BADGES, tf.int32), order)  # [T, h, w]
    cy = (boxes[..., 0] + boxes[..., 2]) / 2.0
    cx = (boxes[..., 1] + boxes[..., 3]) / 2.0
    first_row = tf.clip_by_value(tf.cast(tf.round(cy - h / 2), tf.int32), 0, VIEW_SIZE - h)
    left = tf.clip_by_value(tf.cast(tf.round(cx - w / 2), tf.int32), 0, VIEW_SIZE - w)
    rows = first_row[..., None, None] + tf.range(h)[:, None]  # [B, T, h, 1]
    cols = left[..., None, None] + tf.range(w)[None, :]  # [B, T, 1, w]
    shape = [batch, steps, h, w]
    b = tf.broadcast_to(tf.range(batch)[:, None, None, None], shape)
    indices = tf.stack([b, tf.broadcast_to(rows, shape), tf.broadcast_to(cols, shape)], axis=-1)
    # Encoded as 2t + (1 ground, 2 ink), so that the scatter's max keeps the latest glimpse's
    # badge and the lowest bit tells ground (odd) from ink (even, not 0): a bit test, where a
    # modulo over the image cost more than the scatter.
    drawn = valid[..., None, None] & (stamps[None] > 0)
    codes = tf.where(drawn, 2 * tf.range(steps)[None, :, None, None] + stamps[None], 0)
    top = tf.tensor_scatter_nd_max(tf.zeros([batch, VIEW_SIZE, VIEW_SIZE], tf.int32),
                                   indices, codes)  # fmt: skip
    ground = tf.bitwise.bitwise_and(top, 1) == 1
    return ground, (top > 0) & ~ground


def annotate(
    view: tf.Tensor, boxes: tf.Tensor, valid: tf.Tensor, seen: tf.Tensor, fmt: str = "jpeg"
) -> tf.Tensor:
    """view [B,224,224,3] 0..255, boxes [B,T,4] view px (ymin, xmin, ymax, xmax) in visiting
    order, valid [B,T], seen [B,224,224] bool (the union of the valid boxes) -> JPEG (or PNG)
    bytes [B].

    Every mark is a brightness factor and a yellow share per pixel, [B,224,224], applied to the
    view in one pass: per-mark selects over the RGB image cost more than the rest together.
    """
    # The union's outline: seen pixels near an unseen one (or the view's edge), and a dark
    # line on the unseen pixels just outside.
    edge = seen & _near(~seen, _EDGE, outside=True)
    halo = ~seen & _near(seen, _HALO, outside=False)
    ground, digits = _badge_map(boxes, valid)
    inked = (edge & ~ground) | digits  # badges on top
    shaded = halo | ground
    brightness = tf.where(inked, 0.0, tf.where(seen, 1.0, _DIM) * tf.where(shaded, _SHADE, 1.0))
    ink = tf.cast(inked, tf.float32)[..., None] * (tf.constant(_INK) * 255.0)
    # view is 0..255, so the sum is too: +0.5 and a cast round it without a clip.
    pixels = tf.cast(view * brightness[..., None] + ink + 0.5, tf.uint8)
    return tf.map_fn(lambda p: encode(p, fmt), pixels, fn_output_signature=tf.string)


def encode(pixels: tf.Tensor, fmt: str) -> tf.Tensor:
    """One picture. JPEG at quality 90 without chroma subsampling keeps the 2-px outline and
    badge digits sharp; PNG at level 1 takes a quarter of the default level's time for a few
    percent more bytes (and still about 7x JPEG's time and 6x its bytes at 224 px)."""
    if fmt == "jpeg":
        return tf.io.encode_jpeg(pixels, quality=90, chroma_downsampling=False)
    return tf.io.encode_png(pixels, compression=1)
