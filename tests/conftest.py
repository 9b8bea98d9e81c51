"""Shared fixtures: models are exported once per session into a temporary model base path."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    from PIL import Image

    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def photo_bytes() -> bytes:
    """A real photo shipped by scikit-image (Chelsea the cat)."""
    import skimage

    return (Path(skimage.__file__).parent / "data" / "chelsea.png").read_bytes()


@pytest.fixture(scope="session")
def sample_photos() -> list[Path]:
    files = sorted(SAMPLES.glob("*.JPEG"))
    if not files:
        pytest.skip(f"no sample photos under {SAMPLES}")
    return files


@pytest.fixture(scope="session")
def tiny_model():
    from model_export.config import SaccaderConfig
    from model_export.signatures import build

    return build(SaccaderConfig(variant="tiny"))


@pytest.fixture(scope="session")
def lite0_model():
    from model_export.config import SaccaderConfig
    from model_export.signatures import build

    return build(SaccaderConfig())


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_model) -> Path:
    from model_export.signatures import export

    return export(tiny_model, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def lite0_export(tmp_path_factory, lite0_model) -> Path:
    from model_export.signatures import export

    return export(lite0_model, tmp_path_factory.mktemp("models"))
