"""Every backend, and the fake the fast tier uses, implements the whole Predictor and Backend
protocols with the same signatures, and the service calls nothing else on them (how
`check_version` once slipped out of the protocol)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from service.backends import Backend
from service.predictor import Predictor

pytestmark = pytest.mark.fast


def members(protocol: type) -> set[str]:
    return {
        name
        for cls in protocol.__mro__
        if cls is not object
        for name, value in vars(cls).items()
        if not name.startswith("_") and callable(value)
    } | set(protocol.__annotations__)


def _predictors():
    from service.backends.embedded import EmbeddedPredictor
    from service.backends.tfserving import TFServingPredictor
    from tests.fake_backend import FakePredictor

    return [EmbeddedPredictor, TFServingPredictor, FakePredictor]


def _backends():
    from service.backends.embedded import EmbeddedBackend
    from service.backends.tfserving import TFServingBackend
    from tests.fake_backend import FakeBackend

    return [EmbeddedBackend, TFServingBackend, FakeBackend]


def test_protocols_have_what_the_data_plane_needs():
    assert {"load", "run_batch", "run_signature", "metadata", "model_info"} <= members(Predictor)
    assert {"discover", "open", "label", "in_process"} <= members(Backend)


CASES = [(Predictor, cls) for cls in _predictors()] + [(Backend, cls) for cls in _backends()]


@pytest.mark.parametrize(("protocol", "cls"), CASES, ids=lambda c: c.__name__)
def test_implements_every_member_with_the_same_signature(protocol, cls):
    for name in members(protocol) - set(protocol.__annotations__):
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
        want = inspect.signature(getattr(protocol, name))
        got = inspect.signature(getattr(cls, name))
        assert list(got.parameters) == list(want.parameters), (cls.__name__, name)
        assert [p.annotation for p in got.parameters.values()] == [
            p.annotation for p in want.parameters.values()
        ], (cls.__name__, name)
        assert inspect.iscoroutinefunction(getattr(cls, name)) == inspect.iscoroutinefunction(
            getattr(protocol, name)
        ), (cls.__name__, name)


def test_service_code_calls_only_protocol_members():
    """On a predictor (`predictor.x`) or a backend (`_backend.x`), outside the backends."""
    root = Path(__file__).resolve().parents[1] / "service"
    used: dict[str, set[str]] = {"predictor": set(), "_backend": set()}
    for path in root.rglob("*.py"):
        if "backends" in path.parts:
            continue
        for holder in used:
            used[holder] |= set(re.findall(rf"\b{holder}\.(\w+)", path.read_text()))
    assert used["predictor"] <= members(Predictor), sorted(used["predictor"] - members(Predictor))
    assert used["_backend"] <= members(Backend), sorted(used["_backend"] - members(Backend))
