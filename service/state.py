"""What the routes share: settings, the predictor, the explainer, metrics, and the load/ready
lifecycle. Batch jobs are not here: their manager is built and closed by the app factory and
reaches only the jobs routes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from service.decoding import Decoder
from service.errors import redact_paths
from service.explain.explainer import Explainer
from service.metrics import Metrics
from service.predictor import Predictor
from service.savedmodel import freeze_heap
from service.settings import GatewaySettings

log = logging.getLogger(__name__)


@dataclass
class GatewayState:
    settings: GatewaySettings
    predictor: Predictor
    explainer: Explainer
    metrics: Metrics
    started: bool = False
    load_error: str | None = None
    shutting_down: bool = False
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    tensor_calls: int = 0  # TF Serving tensor-form requests queued or running
    # Image decoding: its own threads and processes, so that neither the event loop (health
    # probes) nor the model's thread ever waits on a costly image.
    decoder: Decoder = field(init=False)

    def __post_init__(self) -> None:
        self.decoder = Decoder(self.settings)

    async def load(self) -> None:
        try:
            await self.predictor.start()
            freeze_heap()
            self.started = True
        except Exception as e:  # noqa: BLE001 - reported by the startup and readiness probes
            # The probes answer without a token: the reason, but no file-system paths.
            self.load_error = redact_paths(f"{type(e).__name__}: {e}".splitlines()[0])
            log.exception("model failed to load")

    async def close(self) -> None:
        await self.predictor.close()
        self.explainer.close()
        self.decoder.close()
