"""Backends run a model's versions: in-process (embedded) or in TF Serving.

A backend finds a model's versions (`discover`), opens a Predictor for one
(service/predictor.py), and resolves version labels it knows that the gateway's config does
not; the data plane (service/served_model.py) does the rest alike for both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from service.settings import GatewaySettings

if TYPE_CHECKING:
    from service.model_config import ModelConfig
    from service.predictor import Predictor


class Backend(Protocol):
    # In-process: explanations share a version's loaded copy and its model's turns; otherwise
    # they load the gateway's local copy of the version and take turns of their own.
    in_process: bool

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def discover(self, model: ModelConfig) -> list[int]:
        """The versions the backend can serve now, highest first (the model's version
        policy is applied to them); BackendUnavailable if it cannot tell."""

    def open(self, model: ModelConfig, version: int) -> Predictor: ...

    async def label(self, model: ModelConfig, label: str) -> int:
        """A version label the model's config does not name: the backend's own (TF
        Serving's), or InvalidInput "Unrecognized servable version label"."""


def make_backend(settings: GatewaySettings) -> Backend:
    """The backend the settings name; imported lazily so neither drags in the other."""
    if settings.backend == "tfserving":
        from service.backends.tfserving import TFServingBackend

        return TFServingBackend(settings)
    from service.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(settings.worker_nice)
