"""What the routes share: settings, the predictor, metrics, and the load/ready lifecycle."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.batch.job_manager import JobManager
from service.metrics import Metrics
from service.predictor import Predictor
from service.settings import GatewaySettings

log = logging.getLogger(__name__)


@dataclass
class GatewayState:
    settings: GatewaySettings
    predictor: Predictor
    metrics: Metrics
    jobs: JobManager
    started: bool = False
    load_error: str | None = None
    shutting_down: bool = False

    async def load(self) -> None:
        try:
            await self.predictor.start()
            self.started = True
        except Exception as e:  # noqa: BLE001 - reported by the startup and readiness probes
            self.load_error = f"{type(e).__name__}: {e}"
            log.exception("model failed to load")
