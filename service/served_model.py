"""One served model: its versions, their lifecycle, labels, readiness and status.

A model's versions are what its backend finds (the numbered folders under its base path, or
what TF Serving has AVAILABLE) filtered by its version policy, re-read at every poll as TF
Serving polls its file system: a new version loads in the background and serves once a real
warm-up inference answered; a version the policy drops is drained (requests that hold it
finish) before it is unloaded, and only once a version the policy wants serves, so a
rollout never leaves the model without a version. A version that fails to load is reported
in the model's status (END, with the reason) and tried again only when its folder changes
(beside TF Serving, at every poll: a model server's failure may pass); the other versions
and models go on serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from model_export.contract import ModelInfo
from service import savedmodel
from service.admission import VersionForm, VersionRef
from service.backends import Backend
from service.batching import BatchStats
from service.errors import (
    GlimpseError,
    InvalidInput,
    ModelNotFound,
    NotReady,
    clip,
    redact_paths,
)
from service.explain.explainer import Explainer
from service.model_config import ModelConfig
from service.model_runner import ModelRunner
from service.scheduler import FairScheduler, Turn
from service.settings import GatewaySettings

log = logging.getLogger(__name__)


class VersionState(StrEnum):
    """TF Serving's ModelVersionStatus.State names."""

    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


def no_such_version(model: str, name: object) -> ModelNotFound:
    """TF Serving's words for a version it does not have, for any name."""
    return ModelNotFound(f"Could not find version {clip(name)} of model {model}")


def _stamp(path: Path) -> float | None:
    """When a version folder last changed (a failed load is retried when it does)."""
    try:
        return (path / "saved_model.pb").stat().st_mtime
    except OSError:
        return None


@dataclass
class ServedVersion:
    model: str
    number: int
    path: Path  # the version folder (beside TF Serving: the gateway's local copy, if any)
    runner: ModelRunner
    explainer: Explainer
    state: VersionState = VersionState.LOADING
    error: str | None = None
    stamp: float | None = None
    in_flight: int = 0
    _drained: asyncio.Event = field(default_factory=asyncio.Event)

    def model_info(self) -> ModelInfo | None:
        return self.runner.model_info()

    @contextmanager
    def use(self) -> Iterator[ServedVersion]:
        """Hold the version for one request: it is not unloaded until every holder is done."""
        self.in_flight += 1
        self._drained.clear()
        try:
            yield self
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._drained.set()

    async def drained(self, timeout: float) -> None:
        if self.in_flight:
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                log.warning(
                    "%s v%s unloaded, %d requests on it", self.model, self.number, self.in_flight
                )


class ServedModel:
    def __init__(
        self,
        config: ModelConfig,
        backend: Backend,
        settings: GatewaySettings,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_turn: Callable[[str, Turn], None] | None = None,
    ):
        self.config = config
        self.name = config.name
        self._backend = backend
        self._settings = settings
        self._on_batch = on_batch
        observe = (lambda turn: on_turn(self.name, turn)) if on_turn else None
        # One model's compute, shared fairly by every kind of request (service/scheduler.py).
        self.scheduler = FairScheduler(observe)
        # Beside TF Serving, explanations run on the gateway's own CPU: turns of their own.
        self._explain_scheduler = self.scheduler if backend.in_process else FairScheduler(observe)
        self.versions: dict[int, ServedVersion] = {}
        self.error: str | None = None  # why no version can serve (discovery, label)
        self._label_version: int | None = None  # what GLIMPSE_MODEL_VERSION_LABEL names
        self._tasks: set[asyncio.Task] = set()
        self.tensor_calls = 0  # tensor-form requests queued or running (a limit of their own)

    # -- lifecycle ------------------------------------------------------------------------

    def _open(self, number: int) -> ServedVersion:
        path = self.config.base_path / str(number)
        predictor = self._backend.open(self.config, number)
        runner = ModelRunner(predictor, self.scheduler, self._settings, self._on_batch)

        def load() -> Any:
            """The version's own loaded copy, else the local one (beside TF Serving)."""
            return predictor.loaded() or savedmodel.load(path)

        explainer = Explainer(self._settings, path, load, self._explain_scheduler)
        return ServedVersion(self.name, number, path, runner, explainer, stamp=_stamp(path))

    def _spawn(self, work) -> asyncio.Task:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _load(self, version: ServedVersion) -> None:
        try:
            await version.runner.start()
        except Exception as e:  # noqa: BLE001 - reported in the model's status and probes
            # Clients and the unauthenticated probes read it: the reason, but no paths.
            version.error = redact_paths(f"{type(e).__name__}: {e}".splitlines()[0])
            version.state = VersionState.END
            log.exception("%s version %s failed to load", self.name, version.number)
            await version.runner.close()
            return
        savedmodel.freeze_heap()
        version.state = VersionState.AVAILABLE
        log.info("%s version %s loaded and warmed up", self.name, version.number)

    async def _unload(self, version: ServedVersion) -> None:
        version.state = VersionState.UNLOADING
        grace = self._settings.request_timeout_s + self._settings.shutdown_grace_s
        await version.drained(grace)
        await self._end(version)
        log.info("%s version %s unloaded", self.name, version.number)

    async def sync(self) -> list[asyncio.Task]:
        """Bring the served versions in line with what the backend finds and the policy
        wants; returns the loads it started (start-up waits for them)."""
        try:
            found = await self._backend.discover(self.config)
        except ModelNotFound as e:  # the model server has no such model: nothing to load
            self.error = f"model failed to load: {e.message}"
            return []
        except GlimpseError as e:  # it cannot be asked now (BackendUnavailable): not ready
            self.error = e.message
            return []
        wanted = self.config.policy.select(found)
        self.error = (
            None
            if wanted
            else f"model failed to load: Could not find any versions of model {self.name}"
        )
        loads = []
        for number in wanted:
            current = self.versions.get(number)
            if current is None or (current.state is VersionState.END and self._retry(current)):
                version = self.versions[number] = self._open(number)
                loads.append(self._spawn(self._load(version)))
        if wanted and any(self.versions[v].state is VersionState.AVAILABLE for v in wanted):
            for number, version in self.versions.items():
                if number not in wanted and version.state is VersionState.AVAILABLE:
                    self._spawn(self._unload(version))
        await self._follow_label()
        return loads

    def _retry(self, version: ServedVersion) -> bool:
        """Whether an ended version is loaded again: one unloaded, or one whose load failed
        and may work now. A folder that failed in this process is tried again only once it
        changes (each try would keep TensorFlow's share of a load); a model server's failure
        may pass, so a version TF Serving has is tried at every poll."""
        if not version.error or not self._backend.in_process:
            return True
        return _stamp(version.path) != version.stamp

    async def _follow_label(self) -> None:
        """With GLIMPSE_MODEL_VERSION_LABEL, requests without a version go to the version
        that label names; a rollout that moves the label moves them (read at every poll)."""
        label = self._settings.model_version_label
        if not label or self.error:
            return
        try:
            number = await self._label(label)
        except GlimpseError as e:
            self.error = f"model failed to load: label {label} names no version: {e.message}"
            return
        if number != self._label_version:
            log.info("%s: label %s names version %s", self.name, label, number)
            self._label_version = number

    async def retire(self) -> None:
        """The model is no longer configured: its serving versions drain, then unload (and
        whatever a cancelled drain left is closed all the same)."""
        try:
            serving = [v for v in self.versions.values() if v.state is VersionState.AVAILABLE]
            await asyncio.gather(*(self._unload(v) for v in serving))
        finally:
            await self.close()

    async def close(self) -> None:
        """Everything released, the versions closed together (each may drain its queue up
        to the shutdown grace)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(self._end(v) for v in self.versions.values() if v.state is not VersionState.END)
        )

    @staticmethod
    async def _end(version: ServedVersion) -> None:
        version.state = VersionState.END
        await version.runner.close()
        version.explainer.close()

    # -- reading the versions -------------------------------------------------------------

    def available(self) -> list[ServedVersion]:
        """The versions that serve, highest first."""
        served = [v for v in self.versions.values() if v.state is VersionState.AVAILABLE]
        return sorted(served, key=lambda v: -v.number)

    def problem(self) -> str | None:
        """Why the model cannot serve a request without a version now (None: it can)."""
        if self.error:
            return self.error
        if self._settings.model_version_label and self._label_version is not None:
            labelled = self.versions.get(self._label_version)
            if labelled is None or labelled.state is not VersionState.AVAILABLE:
                return f"version {self._label_version} (label) is not loaded"
            return None
        if self.available():
            return None
        failed = [v.error for v in self.versions.values() if v.error]
        if failed and not any(v.state is VersionState.LOADING for v in self.versions.values()):
            return f"model failed to load: {failed[-1]}"
        return "model is loading; retry shortly"

    def is_ready(self) -> bool:
        return self.problem() is None

    def default(self) -> ServedVersion:
        """The version requests without one get: the labelled one, else the highest."""
        problem = self.problem()
        if problem is not None:
            raise NotReady(problem)
        if self._settings.model_version_label and self._label_version is not None:
            return self.versions[self._label_version]
        return self.available()[0]

    def default_number(self) -> int | None:
        """The default version's number, or the one that will be (None: none known yet)."""
        try:
            return self.default().number
        except NotReady:
            if self._label_version is not None:
                return self._label_version
            return max(self.versions, default=None)

    async def _label(self, label: str) -> int:
        configured = self.config.labels.get(label)
        if configured is not None:
            return configured
        return await self._backend.label(self.config, label)

    async def number_of(self, ref: VersionRef) -> int | None:
        """The version number `ref` names (None: the default). An unknown label is TF
        Serving's 400 on its label routes; on AI Platform's, a name that names nothing is a
        404, as any unknown resource there."""
        try:
            return ref.as_number()
        except LookupError:
            pass
        assert ref.text is not None
        if ref.form is VersionForm.NAME and not ref.is_label_syntax():
            raise no_such_version(self.name, ref.text)
        try:
            if ref.text not in self.config.labels:
                self.default()  # the model server is asked: it must be up
            return await self._label(ref.text)
        except InvalidInput:
            if ref.form is VersionForm.NAME:
                raise no_such_version(self.name, ref.text) from None
            raise

    def version(self, number: int) -> ServedVersion:
        """The version numbered `number` if it serves; 404 otherwise."""
        version = self.versions.get(number)
        if version is None or version.state is not VersionState.AVAILABLE:
            raise no_such_version(self.name, number)
        return version

    async def known_versions(self) -> list[int]:
        """Every version the model can tell of, lowest first: those it tracks and the
        folders under its base path (listed off the event loop)."""
        found = await asyncio.to_thread(savedmodel.versions, self.config.base_path)
        return sorted(set(self.versions) | set(found))

    def status_states(self, number: int | None) -> list[tuple[int, str, str | None]]:
        """TF Serving's GetModelStatus entries: every version known, or one."""
        if number is not None:
            version = self.versions.get(number)
            if version is None:
                raise no_such_version(self.name, number)
            chosen = [version]
        else:
            chosen = sorted(self.versions.values(), key=lambda v: -v.number)
            if not chosen:
                raise ModelNotFound(f"Could not find any versions of model {self.name}")
        return [(v.number, v.state.value, v.error) for v in chosen]
