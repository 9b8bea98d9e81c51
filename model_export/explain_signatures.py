"""Signatures for post-hoc explanations: logits and gradients of the full-image classifier.

The service must not import the Keras code (the SavedModel is the contract), yet gradient
methods need the backbone's gradients. So they are exported: every signature below takes the
classifier's 224x224 view as float pixels in 0..255 (what `explain_view` returns), normalises
in-graph like every other signature, and differentiates with respect to those pixels, so
integrated gradients' completeness holds in the same units the client sees.

- explain_view(input_image_bytes): the view, crop box and image size, in-graph preprocessing.
- explain_logits(pixels): full-image logits (occlusion, deletion/insertion, baselines).
- explain_gradients(pixels, class_index): logits and d logit[class] / d pixels.
- explain_guided_gradients(pixels, class_index): the same through a copy of the backbone whose
  ReLU6 gradients are gated as in guided backprop (Springenberg et al. 2015).
- explain_conv(pixels, class_index): the last conv layer's values and gradients (Grad-CAM).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from model_export import preprocessing
from model_export.contract import (
    EXPLAIN_CONV,
    EXPLAIN_GRADIENTS,
    EXPLAIN_GUIDED_GRADIENTS,
    EXPLAIN_LOGITS,
    EXPLAIN_VIEW,
    IMAGE_INPUT,
    VIEW_SIZE,
)
from model_export.saccader import Saccader

PIXELS = tf.TensorSpec([None, VIEW_SIZE, VIEW_SIZE, 3], tf.float32, name="pixels")
CLASS_INDEX = tf.TensorSpec([None], tf.int32, name="class_index")
BYTES = tf.TensorSpec([None], tf.string, name=IMAGE_INPUT)


@tf.custom_gradient
def guided_relu6(x: tf.Tensor):
    """ReLU6 forward; backward passes a gradient only where the unit was active (0 < x < 6)
    and the incoming gradient is positive, which is guided backprop's rule for a clipped ReLU."""

    def grad(dy: tf.Tensor) -> tf.Tensor:
        active = tf.logical_and(x > 0.0, x < 6.0)
        return tf.where(tf.logical_and(active, dy > 0.0), dy, tf.zeros_like(dy))

    return tf.nn.relu6(x), grad


class GuidedReLU6(keras.layers.Layer):
    def call(self, x):
        return guided_relu6(x)


def guided_backbone(backbone: keras.Model) -> keras.Model:
    """The backbone with every ReLU6 replaced by GuidedReLU6; all other layers (and so every
    weight) are shared with the original, so the copy costs no parameters in the SavedModel."""

    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.ReLU):
            if float(layer.max_value) != 6.0 or float(layer.negative_slope) != 0.0:
                raise ValueError(f"{layer.name}: guided backprop expects plain ReLU6")
            return GuidedReLU6(name=f"guided_{layer.name}")(*args, **kwargs)
        return layer(*args, **kwargs)

    return keras.models.clone_model(
        backbone, clone_function=lambda layer: layer, call_function=call
    )


class ExplainSignatures(tf.Module):
    """The post-hoc signatures, as one tracked object attached to the export module."""

    def __init__(self, model: Saccader):
        super().__init__(name="explain_signatures")
        self.model = model
        self.guided = guided_backbone(model.backbone)

    def _logits(self, features: tf.Tensor) -> tf.Tensor:
        head = self.model.head
        return tf.reduce_mean(tf.einsum("bhwc,ck->bhwk", features, head.kernel), [1, 2]) + head.bias

    def _input_gradients(self, backbone: keras.Model, pixels, class_index):
        with tf.GradientTape() as tape:
            tape.watch(pixels)
            logits = self._logits(backbone(preprocessing.normalise(pixels), training=False))
            # Rows are independent, so the gradient of the sum is each row's own gradient.
            chosen = tf.gather(logits, class_index, axis=1, batch_dims=1)
        return {"logits": logits, "input_gradients": tape.gradient(chosen, pixels)}

    @tf.function(input_signature=[BYTES])
    def explain_view(self, input_image_bytes):
        v = preprocessing.batch_views(input_image_bytes, None)
        return {"view": v["view"], "crop_box": v["crop_box"], "image_size": v["image_size"]}

    @tf.function(input_signature=[PIXELS])
    def explain_logits(self, pixels):
        features = self.model.backbone(preprocessing.normalise(pixels), training=False)
        return {"logits": self._logits(features)}

    @tf.function(input_signature=[PIXELS, CLASS_INDEX])
    def explain_gradients(self, pixels, class_index):
        return self._input_gradients(self.model.backbone, pixels, class_index)

    @tf.function(input_signature=[PIXELS, CLASS_INDEX])
    def explain_guided_gradients(self, pixels, class_index):
        return self._input_gradients(self.guided, pixels, class_index)

    @tf.function(input_signature=[PIXELS, CLASS_INDEX])
    def explain_conv(self, pixels, class_index):
        with tf.GradientTape() as tape:
            features = self.model.backbone(preprocessing.normalise(pixels), training=False)
            tape.watch(features)
            logits = self._logits(features)
            chosen = tf.gather(logits, class_index, axis=1, batch_dims=1)
        return {
            "logits": logits,
            "conv_values": features,
            "conv_gradients": tape.gradient(chosen, features),
        }

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        return {name: getattr(self, name) for name in NAMES}


NAMES = (EXPLAIN_VIEW, EXPLAIN_LOGITS, EXPLAIN_GRADIENTS, EXPLAIN_GUIDED_GRADIENTS, EXPLAIN_CONV)


def attach(module: tf.Module, model: Saccader) -> dict:
    """Track the explain signatures on the export module; returns them for `signatures=`."""
    module.post_hoc = ExplainSignatures(model)
    return module.post_hoc.signatures()
