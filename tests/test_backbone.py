"""Weight conversion is strict, and the Keras port matches the PyTorch reference."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.backbone import (
    WeightConversionError,
    build_backbone,
    build_classifier_head,
    convert_torch_weights,
    default_weights_path,
)
from model_export.state_dict import load_state_dict


@pytest.fixture(scope="module")
def state_dict():
    return load_state_dict(default_weights_path())


def _fresh():
    return build_backbone("lite0"), build_classifier_head(1280)


def test_every_tensor_is_mapped(state_dict):
    backbone, head = _fresh()
    convert_torch_weights(state_dict, backbone, head)
    np.testing.assert_array_equal(head.kernel.numpy(), state_dict["_fc.weight"].T)


def test_missing_tensor_is_named(state_dict):
    partial = {k: v for k, v in state_dict.items() if k != "_blocks.7._bn1.running_var"}
    with pytest.raises(WeightConversionError, match=r"blocks_7_bn1\.running_var"):
        convert_torch_weights(partial, *_fresh())


def test_left_over_tensor_is_named(state_dict):
    extra = {**state_dict, "_se_reduce.weight": np.zeros((8, 8, 1, 1), np.float32)}
    with pytest.raises(WeightConversionError, match=r"_se_reduce\.weight"):
        convert_torch_weights(extra, *_fresh())


def test_wrong_shape_is_refused(state_dict):
    bad = {**state_dict, "_fc.bias": np.zeros(10, np.float32)}
    with pytest.raises(WeightConversionError, match="shape"):
        convert_torch_weights(bad, *_fresh())


def _reference_input(paths) -> np.ndarray:
    """The reference preprocessing, in PIL: shorter side 256 (bicubic), centre crop 224."""
    from PIL import Image

    out = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        s = 256 / min(im.size)
        im = im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC)
        left, top = (im.width - 224) // 2, (im.height - 224) // 2
        out.append(np.asarray(im.crop((left, top, left + 224, top + 224)), np.float32))
    return (np.stack(out) - 127.0) / 128.0


# The PyTorch reference's logits for the pixels in argv[1], written to argv[2]: run in a
# process of its own, so torch and its model (~2 GB) never stay in the test process.
_REFERENCE = """
import sys

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet

x = np.load(sys.argv[1])
ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=sys.argv[3])
ref.eval()
with torch.no_grad():
    np.save(sys.argv[2], ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy())
"""


@pytest.mark.slow
def test_parity_with_pytorch_reference(lite0_model, sample_photos, tmp_path):
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch (the reference) is not installed")
    paths = sample_photos[:: max(1, len(sample_photos) // 24)][:24]
    x = _reference_input(paths)
    np.save(tmp_path / "x.npy", x)
    weights = str(default_weights_path())
    outputs = tmp_path / "expected.npy"
    command = [sys.executable, "-c", _REFERENCE, str(tmp_path / "x.npy"), str(outputs), weights]
    subprocess.run(command, check=True, timeout=600)
    expected = np.load(outputs)
    # Eagerly, in fours: TensorFlow keeps what one call's activations took (24 at once: ~1.9
    # GB for the rest of the test session).
    pooled = np.concatenate(
        [
            lite0_model.backbone(x[i : i + 4], training=False).numpy().mean(axis=(1, 2))
            for i in range(0, len(x), 4)
        ]
    )
    got = pooled @ lite0_model.head.kernel.numpy() + lite0_model.head.bias.numpy()
    assert np.abs(got - expected).max() <= 1e-3
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
