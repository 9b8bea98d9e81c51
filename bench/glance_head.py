"""Experiment (not in `make bench`): can a cheap glance place the glimpses as well as the 224
where pass? docs/model.md's frontier section quotes it.

    python -m bench.glance_head --images ../shared/data/imagenet-sample

Glimpse-only top-1 at T=6 on every photo, the glimpses placed from:
- the class activation map of the 224 pass (today's where path, the reference), and a fixed
  centre prior (the `centre` policy);
- the map of a pass at R px (its R/32 cells upsampled to the cell grid);
- a class-agnostic evidence head on the stride-16 features of a pass at R px, trained to match
  the 224 map (KL divergence to the normalised map, flips as augmentation), in 5-fold
  cross-validation: each photo's glimpses come from a head that never saw it.
Prints one line per setting.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from bench.common import arguments, load_photos
from model_export import grid, policies, preprocessing
from model_export.config import SaccaderConfig
from model_export.saccader import Saccader, saccader_cell
from model_export.signatures import build

BATCH = 16
FOLDS = 5
# (R, taps of the backbone): stride-16 outputs of stages 4 and 5, and stage 6's (stride 32).
HEADS = [(112, ["add_5"]), (128, ["add_5"]), (112, ["add_3"]), (112, ["add_5", "add_8"])]


def batched(fn, *arrays) -> list[np.ndarray]:
    """fn over BATCH rows at a time; its outputs concatenated."""
    parts = [fn(*(a[i : i + BATCH] for a in arrays)) for i in range(0, len(arrays[0]), BATCH)]
    parts = [p if isinstance(p, tuple) else (p,) for p in parts]
    return [np.concatenate([p[k].numpy() for p in parts]) for k in range(len(parts[0]))]


def class_map(m: Saccader, size: int):
    """The predicted class's per-location probability from a pass at `size` px, and the pass's
    full-image logits."""

    @tf.function
    def run(view):
        x = view if size == 224 else tf.image.resize(view, [size, size], method="area")
        loc = m.where(x)
        full = tf.reduce_mean(loc, axis=[1, 2])
        predicted = tf.argmax(full, axis=1, output_type=tf.int32)
        return tf.gather(tf.nn.softmax(loc, -1), predicted, axis=3, batch_dims=1), full

    return run


def features(m: Saccader, size: int, taps: list[str]):
    model = keras.Model(m.backbone.inputs, [m.backbone.get_layer(n).output for n in taps])

    @tf.function
    def run(view):
        x = tf.image.resize(view, [size, size], method="area")
        outs = model(preprocessing.normalise(x), training=False)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        return tf.concat([tf.image.resize(o, [7, 7], method="area") for o in outs], -1)

    return run


def train_head(x: np.ndarray, y: np.ndarray, hidden: int) -> keras.Model:
    tf.random.set_seed(0)
    inputs = keras.Input(x.shape[1:])
    h = inputs
    if hidden:
        h = keras.layers.Conv2D(hidden, 3, padding="same", activation="relu")(h)
    h = keras.layers.Reshape((49,))(keras.layers.Conv2D(1, 1)(h))
    model = keras.Model(inputs, keras.layers.Softmax()(h))
    model.compile(keras.optimizers.Adam(3e-3), loss=keras.losses.KLDivergence())
    model.fit(x, y.reshape(len(y), 49), epochs=300, batch_size=64, verbose=0)
    return model


def main() -> None:
    args = arguments(__doc__).parse_args()
    cfg = SaccaderConfig()
    m = build(cfg)
    images, labels, _ = load_photos(args.images)
    views = batched(
        tf.function(lambda b: tuple(preprocessing.batch_views(b, cfg.hires_size)[k]
                                    for k in ("view", "hires"))),
        np.array(images, dtype=object),
    )  # fmt: skip
    view, hires = views

    @tf.function
    def glimpse_logits(maps, hi):
        cells = grid.cells(cfg)
        evidence = tf.image.resize(maps[..., None], [cells, cells], method="bilinear")[..., 0]
        boxes = saccader_cell(evidence, cfg.default_glimpses, cfg)
        return m.what(hi, boxes, tf.ones(tf.shape(boxes)[:2], tf.bool))["logits"]

    def top1(maps: np.ndarray) -> float:
        (logits,) = batched(glimpse_logits, maps.astype(np.float32), hires)
        return float((logits.argmax(1) == labels).mean())

    reference, full = batched(class_map(m, 224), view)
    full_top1 = float((full.argmax(1) == labels).mean())
    base = top1(reference)
    print(f"full image top-1 {full_top1:.3f}; 224 map: glimpses {base:.3f}"
          f" ({base / full_top1:.3f}x)")  # fmt: skip
    for size in (96, 112, 128, 160):
        maps, low = batched(class_map(m, size), view)
        acc = top1(maps)
        print(f"{size} px map: its own top-1 {(low.argmax(1) == labels).mean():.3f}, glimpses"
              f" {acc:.3f} ({acc / full_top1:.3f}x)")  # fmt: skip
    centre = policies.centre_evidence(tf.constant(len(images)), cfg).numpy()
    acc = top1(centre)  # already on the cell grid: resizing it is the identity
    print(f"centre prior: glimpses {acc:.3f} ({acc / full_top1:.3f}x)")
    target = reference / reference.sum(axis=(1, 2), keepdims=True)
    folds = np.array_split(np.random.default_rng(0).permutation(len(images)), FOLDS)
    for size, taps in HEADS:
        (x,) = batched(features(m, size, taps), view)
        for hidden in (0, 32):
            predicted = np.zeros_like(reference)
            for k in range(FOLDS):
                train = np.concatenate([folds[j] for j in range(FOLDS) if j != k])
                head = train_head(
                    np.concatenate([x[train], x[train][:, :, ::-1]]),
                    np.concatenate([target[train], target[train][:, :, ::-1]]),
                    hidden,
                )
                predicted[folds[k]] = head.predict(x[folds[k]], verbose=0).reshape(-1, 7, 7)
            acc = top1(predicted)
            print(f"{size} px head on {taps}, hidden {hidden}: glimpses {acc:.3f}"
                  f" ({acc / full_top1:.3f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
