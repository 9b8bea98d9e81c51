"""The faithfulness benchmark's independent judge: EfficientNet-Lite2.

Lite0, the model every explanation is about, judging its own explanations is a weak test: a
map can find what Lite0 in particular reacts to (an artefact of its features, a texture) and
score well for that alone. Lite2 is a bigger network from the same family, trained on its own
(its top-1 on the photos is in bench/results/faithfulness.md), so a map that still wins under
Lite2 has found evidence about the photo rather than about one network's habits.

What it looks at: exactly the 224-pixel view the methods ranked (after the removal), resized
to the 260 px Lite2 was trained at, bilinearly. A fresh 260 crop of the photo would show it
pixels outside the view that no map ranked and no removal touched, and would let each image's
border leak the unremoved photo; the resize keeps the judge on the same evidence as Lite0, at
the price of a slightly softer input than its reference preprocessing (the report gives its
top-1 both ways, so the price is measured).
"""

from __future__ import annotations

import io

import numpy as np

from service.geometry import VIEW_SIZE

VARIANT = "lite2"
NAME = "EfficientNet-Lite2"
_CHUNK = 16  # images per call: 16 at 260 px is ~0.3 GB of activations


class Lite2Judge:
    """Logits of EfficientNet-Lite2 for [N, 224, 224, 3] views in 0..255 (the service's views)."""

    def __init__(self) -> None:
        import tensorflow as tf

        from model_export.backbone import INPUT_MEAN, INPUT_SCALE, VARIANTS, load_pretrained

        backbone, head = load_pretrained(VARIANT)
        size = VARIANTS[VARIANT].resolution
        self.resolution = size
        view = tf.TensorSpec([None, VIEW_SIZE, VIEW_SIZE, 3], tf.float32)

        @tf.function(input_signature=[view])
        def logits(views: tf.Tensor) -> tf.Tensor:
            x = tf.image.resize(views, (size, size), method="bilinear")
            features = backbone((x - INPUT_MEAN) / INPUT_SCALE, training=False)
            return head(tf.reduce_mean(features, axis=[1, 2]))

        self._logits = logits
        self._backbone, self._head = backbone, head

    def logits(self, views: np.ndarray) -> np.ndarray:
        """[N, 1000] logits, in chunks of bounded memory."""
        parts = [
            self._logits(np.asarray(views[i : i + _CHUNK], np.float32)).numpy()
            for i in range(0, len(views), _CHUNK)
        ]
        return np.concatenate(parts)

    def reference_logits(self, photos: list[bytes]) -> np.ndarray:
        """Lite2 on its reference preprocessing instead of the view: shorter side to 260 / 0.875
        (bicubic), centre crop 260, as the PyTorch port's parity test feeds it."""
        import tensorflow as tf
        from PIL import Image

        from model_export.backbone import INPUT_MEAN, INPUT_SCALE

        size, crops = self.resolution, []
        for photo in photos:
            im = Image.open(io.BytesIO(photo)).convert("RGB")
            scale = round(size / 0.875) / min(im.size)
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
            left, top = (im.width - size) // 2, (im.height - size) // 2
            crops.append(np.asarray(im.crop((left, top, left + size, top + size)), np.float32))
        parts = []
        for i in range(0, len(crops), _CHUNK):
            x = (np.stack(crops[i : i + _CHUNK]) - INPUT_MEAN) / INPUT_SCALE
            features = self._backbone(x, training=False)
            parts.append(self._head(tf.reduce_mean(features, axis=[1, 2])).numpy())
        return np.concatenate(parts)
