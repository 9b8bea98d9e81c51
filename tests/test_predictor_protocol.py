"""Every backend, and the fake the fast tier uses, implements the whole Predictor protocol, and
the routes call nothing else on it (how `check_version` once slipped out of the protocol)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from service.predictor import Predictor

MEMBERS = {
    name
    for cls in Predictor.__mro__
    if cls is not object
    for name, value in vars(cls).items()
    if not name.startswith("_") and (callable(value) or name in Predictor.__annotations__)
} | set(Predictor.__annotations__)


def _backends():
    from service.backends.embedded import EmbeddedPredictor
    from service.backends.tfserving import TFServingPredictor
    from tests.fake_predictor import FakePredictor

    return [EmbeddedPredictor, TFServingPredictor, FakePredictor]


def test_protocol_has_what_admission_and_routes_need():
    assert {"served_version", "model_info", "is_ready", "predict", "status", "metadata"} <= MEMBERS


@pytest.mark.parametrize("cls", _backends(), ids=lambda c: c.__name__)
def test_backend_implements_every_member_with_the_same_signature(cls):
    for name in MEMBERS - {"model_name"}:
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
        want = inspect.signature(getattr(Predictor, name))
        got = inspect.signature(getattr(cls, name))
        assert list(got.parameters) == list(want.parameters), (cls.__name__, name)
        assert inspect.iscoroutinefunction(getattr(cls, name)) == inspect.iscoroutinefunction(
            getattr(Predictor, name)
        ), (cls.__name__, name)


def test_service_code_calls_only_protocol_members_on_the_predictor():
    root = Path(__file__).resolve().parents[1] / "service"
    used = set()
    for path in root.rglob("*.py"):
        if "backends" in path.parts:
            continue
        used |= set(re.findall(r"predictor\.(\w+)", path.read_text()))
    assert used <= MEMBERS, sorted(used - MEMBERS)


@pytest.mark.parametrize("cls", _backends(), ids=lambda c: c.__name__)
def test_backend_takes_what_the_protocol_passes(cls):
    """The parameters' types too: `metadata` takes a version label (a str) that the gateway
    does not configure, for the backend to resolve or refuse (service/versions.py)."""
    for name in MEMBERS - {"model_name"}:
        want = inspect.signature(getattr(Predictor, name)).parameters
        got = inspect.signature(getattr(cls, name)).parameters
        assert [p.annotation for p in got.values()] == [p.annotation for p in want.values()], (
            cls.__name__,
            name,
        )
    assert "str" in inspect.signature(cls.metadata).parameters["version"].annotation
