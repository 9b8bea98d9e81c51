"""What the routes share: settings, the predictor, metrics, and the load/ready lifecycle."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.batch.job_manager import JobManager
from service.errors import redact_paths
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
            # The probes answer without a token: the reason, but no file-system paths.
            self.load_error = redact_paths(f"{type(e).__name__}: {e}".splitlines()[0])
            log.exception("model failed to load")
