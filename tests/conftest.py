"""Shared fixtures: models are exported once per session into a temporary model base path."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from tests.browser import browser, page  # noqa: F401  (fixtures for every test module)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Every gateway a test starts listens for gRPC on a free port, never on the 8081 of a gateway
# already running here (or of another test's).
os.environ.setdefault("GLIMPSE_GRPC_PORT", "0")

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests import early

    early.start_selected(session.items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests import early

    early.stop_all()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-m fast` (make test-fast) does not even import a test module that has no fast test:
    the tier then never pays for TensorFlow's import, nor for walking its objects in every
    garbage collection (which doubled the tier's time)."""
    if config.getoption("markexpr") != "fast" or not collection_path.name.startswith("test_"):
        return None
    return "pytest.mark.fast" not in collection_path.read_text()


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


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def body(*images: bytes, **parameters) -> dict:
    out: dict = {"instances": [{"input_image_bytes": {"b64": b64(i)}} for i in images]}
    if parameters:
        out["parameters"] = parameters
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_export) -> Path:
    """Model base path holding saccader/1 (the tiny model)."""
    return tiny_export.parent.parent


@pytest.fixture(scope="session")
def gateway_settings(tiny_model_dir):
    from service.settings import GatewaySettings

    def make(**overrides):
        return GatewaySettings(**{"model_dir": tiny_model_dir, "log_format": "text", **overrides})

    return make


@pytest.fixture(scope="module")
def tfserving(tiny_export):
    """A real gRPC server speaking TF Serving's protocol, serving the tiny model."""
    from tests.tfserving_server import TFServingServer

    server = TFServingServer("saccader", tiny_export)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(gateway_settings):
    """The real service (embedded backend, tiny model) on a free 127.0.0.1 port."""
    from tests.servers import live_server

    with live_server(gateway_settings(max_payload_bytes=2_000_000)) as server:
        yield server


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """A real storage emulator process; STORAGE_EMULATOR_HOST points every client at it."""
    from tests.gcs_emulator import GcsEmulator

    emulator = GcsEmulator(tmp_path_factory.mktemp("gcs")).start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.host
    try:
        yield emulator
    finally:
        emulator.kill()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture
def bucket(gcs, request):
    """A fresh bucket per test."""
    import re

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + "-b"
    client = gcs.client()
    found = client.lookup_bucket(name)
    return found or client.create_bucket(name)
