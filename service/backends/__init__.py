"""Backends implement service.predictor.Predictor: in-process (embedded) or TF Serving."""

from __future__ import annotations

from collections.abc import Callable

from service.backends.batching import BatchStats
from service.predictor import Predictor
from service.savedmodel import LoadedModels
from service.settings import GatewaySettings


def make_predictor(
    settings: GatewaySettings,
    on_batch: Callable[[BatchStats], None] | None = None,
    models: LoadedModels | None = None,
) -> Predictor:
    """The backend the settings name; imported lazily so neither drags in the other."""
    if settings.backend == "tfserving":
        from service.backends.tfserving import TFServingPredictor

        return TFServingPredictor(settings, on_batch)  # TF Serving holds the model
    from service.backends.embedded import EmbeddedPredictor

    return EmbeddedPredictor(settings, on_batch, models)
