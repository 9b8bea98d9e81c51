"""Image bytes -> the classifier's 224 view and a high-resolution view of the same region.

Runs inside the SavedModel graph so that every client (TF Serving, the gateway, batch jobs)
gets identical preprocessing and nobody normalises by hand.
"""

from __future__ import annotations

import tensorflow as tf

from model_export.backbone import INPUT_MEAN, INPUT_SCALE
from model_export.config import RESIZE_SHORTER, VIEW_SIZE


def decode(image_bytes: tf.Tensor) -> tf.Tensor:
    """JPEG/PNG/GIF (first frame)/BMP -> uint8 RGB [h, w, 3]; grey and RGBA become RGB."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def centre_crop_box(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """The region the reference preprocessing keeps, in original pixels: [top, left, side].

    Resizing the shorter side to 256 and cutting the central 224 keeps a square of side
    224/256 of the shorter side; computing it in original pixels lets us resample the region
    once at each resolution we need instead of resizing the whole photo.
    """
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    side = tf.minimum(h, w) * (VIEW_SIZE / RESIZE_SHORTER)
    return tf.stack([(h - side) / 2.0, (w - side) / 2.0, side])


def _region(image: tf.Tensor, box: tf.Tensor) -> tf.Tensor:
    y0 = tf.cast(tf.floor(box[0]), tf.int32)
    x0 = tf.cast(tf.floor(box[1]), tf.int32)
    n = tf.maximum(tf.cast(tf.round(box[2]), tf.int32), 1)
    return image[y0 : y0 + n, x0 : x0 + n]


def _reference_resample(image: tf.Tensor, box: tf.Tensor, size: int) -> tf.Tensor:
    """Bicubic with antialiasing: the classifier's view, as the reference preprocessing."""
    resized = tf.image.resize(_region(image, box), [size, size], method="bicubic", antialias=True)
    return tf.clip_by_value(resized, 0.0, 255.0)


def _fast_resample(image: tf.Tensor, box: tf.Tensor, size: int) -> tf.Tensor:
    """Area when shrinking (no aliasing), bilinear when enlarging: the high-resolution view.

    A quarter of the bicubic-antialias cost, which matters because this view exists only for
    the explanation and is paid on every request.
    """
    region = tf.cast(_region(image, box), tf.float32)
    shrinking = tf.shape(region)[0] > size
    return tf.cond(
        shrinking,
        lambda: tf.image.resize(region, [size, size], method="area"),
        lambda: tf.image.resize(region, [size, size], method="bilinear"),
    )


def views(image_bytes: tf.Tensor, hires_size: int | None) -> dict[str, tf.Tensor]:
    """One image's bytes -> view [224,224,3] and hires [S,S,3] (float 0..255), crop box, size.

    hires_size=None skips the high-resolution view (plain classification needs none).
    """
    image = decode(image_bytes)
    shape = tf.shape(image)
    box = centre_crop_box(shape[0], shape[1])
    out = {
        "view": _reference_resample(image, box, VIEW_SIZE),
        # [ymin, xmin, ymax, xmax] of the view in original pixels, to map glimpses back.
        "crop_box": tf.stack([box[0], box[1], box[0] + box[2], box[1] + box[2]]),
        "image_size": tf.cast(shape[:2], tf.int32),
    }
    if hires_size:
        out["hires"] = _fast_resample(image, box, hires_size)
    return out


def batch_views(image_bytes: tf.Tensor, hires_size: int | None) -> dict[str, tf.Tensor]:
    """[B] bytes -> batched views; images of any size share one fixed-shape batch."""
    spec = {
        "view": tf.TensorSpec([VIEW_SIZE, VIEW_SIZE, 3], tf.float32),
        "crop_box": tf.TensorSpec([4], tf.float32),
        "image_size": tf.TensorSpec([2], tf.int32),
    }
    if hires_size:
        spec["hires"] = tf.TensorSpec([hires_size, hires_size, 3], tf.float32)
    return tf.map_fn(lambda b: views(b, hires_size), image_bytes, fn_output_signature=spec)


def normalise(pixels: tf.Tensor) -> tf.Tensor:
    return (pixels - INPUT_MEAN) / INPUT_SCALE
