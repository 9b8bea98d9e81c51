"""The data plane: every served model, and the verbs every protocol needs.

One object owns the models (service/served_model.py) and answers for all of them: predict
(instances), infer (tensors, any signature), explain, status, metadata, versions, and the
health questions (live, startup, ready, model ready). Protocol adapters (service/routes/)
translate requests into these verbs and their answers back, nothing more: admission happens
inside each verb, once, in one order for every protocol (model, version form, the model's
state, size, shutdown, version served, parameters), and readiness is decided here only.
Modelled on kserve's DataPlane; unlike it, the models come from TF Serving's model config or
the model base, polled as TF Serving polls its file system.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from model_export.contract import GLIMPSE_BOXES, GLIMPSE_SETS, IMAGE_INPUT
from service import admission, savedmodel, timing
from service.admission import VersionRef
from service.backends import Backend
from service.decoding import Decoder
from service.errors import (
    BackendTimeout,
    InvalidInput,
    ModelNotFound,
    NotReady,
    Overloaded,
    clip,
    redact_paths,
)
from service.instances import ImageInput
from service.metrics import Metrics
from service.model_config import ConfigError, desired_models
from service.model_runner import ModelRunner
from service.predictor import Options
from service.responses import build_prediction
from service.schemas import Instance, Prediction, PredictParameters
from service.served_model import ServedModel, ServedVersion
from service.settings import GatewaySettings
from service.signatures import SignatureSpec, batch_rows, signature_spec

if TYPE_CHECKING:
    from service.explain.schemas import ExplainParameters

log = logging.getLogger(__name__)

# Inputs whose axis -2 (boxes: [batch, T, 4]) or -1 (sets: [S, T]) counts glimpses, each a
# crop and a backbone pass: bounded by the model's own max_glimpses.
_GLIMPSE_AXIS = {GLIMPSE_BOXES: -2, GLIMPSE_SETS: -1}


@dataclass(frozen=True)
class Answered:
    """A verb's result and the version that produced it (protocols name it)."""

    version: int
    items: list[Any]


@dataclass(frozen=True)
class Target:
    """A tensor request's model version and signature, resolved before its body is read
    into tensors (the signature says how), then run by `infer`."""

    model: ServedModel
    version: ServedVersion
    signature: SignatureSpec


class DataPlane:
    def __init__(self, settings: GatewaySettings, backend: Backend, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self._backend = backend
        # Image decoding: its own threads and processes, so that neither the event loop
        # (health probes) nor a model's thread ever waits on a costly image.
        self.decoder = Decoder(settings)
        self.models: dict[str, ServedModel] = {}
        self.started_at = datetime.now(UTC)
        self.shutting_down = False
        self._started = False
        self._config_error: str | None = None
        self._poller: asyncio.Task | None = None
        self._retiring: set[asyncio.Task] = set()  # models dropped from the config, draining

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, load every model's versions (start-up waits for these first loads), then
        poll for new ones. Run in the background: liveness answers meanwhile."""
        try:
            await self._backend.start()
            loads = await self.reconcile()
            await asyncio.gather(*loads, return_exceptions=True)
        except Exception as e:  # noqa: BLE001 - the probes say why; polling tries again
            log.exception("starting the models failed")
            self._config_error = redact_paths(f"{type(e).__name__}: {e}".splitlines()[0])
        self._started = True
        self._poller = asyncio.create_task(self._poll(), name="model-poll")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.model_poll_s)
            try:
                await self.reconcile()
            except Exception:  # noqa: BLE001 - the next poll tries again; serving goes on
                log.exception("polling the models failed")

    async def reconcile(self) -> list[asyncio.Task]:
        """Serve the models the config (or the base) lists now: new ones are added, dropped
        ones drained and unloaded, each one's versions synced. Returns the loads started."""
        try:
            desired = {m.name: m for m in await asyncio.to_thread(desired_models, self.settings)}
            self._config_error = None
        except ConfigError as e:
            if self._config_error != str(e):
                log.error("%s; serving the models as they were", e)
            self._config_error = str(e)
            desired = {name: m.config for name, m in self.models.items()}
        for name in [n for n in self.models if n not in desired]:
            log.info("model %s is no longer configured: draining and unloading it", name)
            retired = self.models.pop(name)  # from now on a 404; what it holds finishes
            task = asyncio.create_task(retired.retire(), name=f"retire-{name}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        loads: list[asyncio.Task] = []
        for name, config in desired.items():
            model = self.models.get(name)
            if model is None:
                model = self.models[name] = ServedModel(
                    config,
                    self._backend,
                    self.settings,
                    self.metrics.observe_batch,
                    self.metrics.observe_turn,
                )
            model.config = config
            loads += await model.sync()
        return loads

    async def close(self) -> None:
        self.shutting_down = True
        if self._poller is not None:
            self._poller.cancel()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for model in self.models.values():
            await model.close()
        self.models.clear()
        await self._backend.close()
        self.decoder.close()

    # -- health: decided here, nowhere else -----------------------------------------------

    def startup(self) -> None:
        """Started: the first loads have finished and a model serves (NotReady: why not)."""
        if not self._started:
            raise NotReady("model is loading")
        if self._config_error and not self.models:
            raise NotReady(self._config_error)
        if not any(m.is_ready() for m in self.models.values()):
            raise NotReady(self._why_not())

    def ready(self) -> None:
        """Ready for traffic: started and not shutting down. A model that cannot serve is
        reported in its own status and refused alone; it does not take the others down."""
        if self.shutting_down:
            raise NotReady("shutting down")
        self.startup()

    def _why_not(self) -> str:
        default = self.models.get(self.settings.model_name)
        problems = [m.problem() for m in ([default] if default else self.models.values())]
        return next((p for p in problems if p), "no model serves")

    def model(self, name: str) -> ServedModel:
        """The served model, or TF Serving's 404 for a name it does not serve."""
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(f"Servable not found for request: Latest({clip(name)})")
        return model

    @property
    def in_process(self) -> bool:
        """Whether the models run in this process (the embedded backend)."""
        return self._backend.in_process

    @property
    def default_model(self) -> str:
        """The model routes that name none use (GLIMPSE_MODEL_NAME when it is served)."""
        if self.settings.model_name in self.models or not self.models:
            return self.settings.model_name
        return next(iter(self.models))

    # -- admission: one order for every verb ----------------------------------------------

    async def _admit(
        self, name: str, ref: VersionRef, work: bool = False, instances: int = 0
    ) -> tuple[ServedModel, ServedVersion]:
        """Model, version form, the model's state, instance limit, shutdown, version served.
        Work is refused while shutting down; a request that only reads stays answerable."""
        model = self.model(name)
        number = await model.number_of(ref)
        default = model.default()  # NotReady: loading, failed to load, label names nothing
        if work:
            admission.check_instances(instances, self.settings.max_instances)
            if self.shutting_down:
                raise NotReady("the service is shutting down")
        return model, default if number is None else model.version(number)

    async def find(self, name: str, ref: VersionRef) -> None:
        """TF Serving's first check: the servable a URL names (the model, the version a
        number or label names) exists, before the request's body is read (404, whatever
        the body holds)."""
        model = self.model(name)
        number = await model.number_of(ref)
        if number is not None:
            model.version(number)

    # -- reads ----------------------------------------------------------------------------

    async def status(self, name: str, ref: VersionRef) -> dict[str, Any]:
        """TF Serving's GetModelStatus body: every version the model knows, in its state."""
        model = self.model(name)
        return savedmodel.status_body(model.status_states(await model.number_of(ref)))

    async def metadata(self, name: str, ref: VersionRef) -> tuple[int, dict[str, Any]]:
        """The served version's number and TF Serving's GetModelMetadata body."""
        _, version = await self._admit(name, ref)
        return version.number, await version.runner.metadata()

    def batch_model(self, name: str, ref: VersionRef) -> BatchHandle:
        """A model for the jobs API's batch runner."""
        self.model(name)
        return BatchHandle(self, name, ref)

    @asynccontextmanager
    async def holding(self, name: str, ref: VersionRef) -> AsyncIterator[ServedVersion]:
        """The version `ref` names, admitted for work and held (not unloaded) until the
        block ends."""
        _, version = await self._admit(name, ref, work=True)
        with version.use():
            yield version

    async def versions(self, name: str) -> list[int]:
        """Every version the model can tell of, lowest first (ml v1's versions.list)."""
        return await self.model(name).known_versions()

    async def evaluated_versions(self, name: str) -> list[int]:
        """The model's versions with an evaluation (`glimpse train` writes one), lowest first;
        read from the version folders under its base path (the gateway's local copy beside
        TF Serving)."""
        model = self.model(name)
        numbers = await model.known_versions()
        base = model.config.base_path

        def evaluated() -> list[int]:
            return [n for n in numbers if savedmodel.evaluation_file(base / str(n)).is_file()]

        return await asyncio.to_thread(evaluated)

    async def evaluation(self, name: str, number: int) -> dict[str, Any] | None:
        """Version `number`'s evaluation (Vertex's ModelEvaluation body), None if it has none."""
        model = self.model(name)
        if number not in await model.known_versions():
            return None
        return await asyncio.to_thread(savedmodel.evaluation, model.config.base_path / str(number))

    # -- the labelled path ----------------------------------------------------------------

    async def predict(
        self, name: str, ref: VersionRef, instances: Sequence[Instance], params: PredictParameters
    ) -> Answered:
        """decode -> predict -> build for one request, all or none: one bad image fails the
        request, naming it (the batcher isolates it, so batch-mates are unharmed)."""
        model, version = await self._admit(name, ref, work=True, instances=len(instances))
        params = admission.check_parameters(version.model_info(), params)
        with version.use():
            images, deadline = await self._decode(instances)
            predictions = await self._predict_images(version, images, params, deadline)
        return Answered(version.number, predictions)

    async def _decode(self, instances: Sequence[Instance]) -> tuple[list[ImageInput], float]:
        """The request's images, checked and decoded, and its deadline (monotonic): one
        deadline covers decoding, the queue and the model."""
        deadline = time.monotonic() + self.settings.request_timeout_s
        started = time.perf_counter()
        images = await self.decoder.decode(instances, deadline)
        took = time.perf_counter() - started
        self.metrics.stage.labels("decode").observe(took)
        timing.add("decode", took)
        return images, deadline

    def _left(self, deadline: float, what: str) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BackendTimeout(f"no answer within {self.settings.request_timeout_s:g} s ({what})")
        return left

    async def _predict_images(
        self,
        version: ServedVersion,
        images: list[ImageInput],
        params: PredictParameters,
        deadline: float,
    ) -> list[Prediction]:
        timeout = self.settings.request_timeout_s
        options = [Options.of(params)] * len(images)
        left = self._left(deadline, "queue")  # before a coroutine exists to be dropped
        try:
            async with asyncio.timeout(left):  # no task of its own, unlike wait_for
                outputs = await version.runner.predict(images, options)
        except TimeoutError:
            raise BackendTimeout(f"no answer from the model within {timeout:g} s") from None
        except InvalidInput as e:  # the model could not read one image: name it
            index = getattr(e, "item_index", None)
            if index is None:
                raise
            raise InvalidInput(f"instances[{index}].input_image_bytes: {e.message}") from None
        answered = time.perf_counter()
        info = version.model_info()

        def build() -> list[Prediction]:
            pairs = zip(images, outputs, strict=True)
            return [build_prediction(i, o, params, info) for i, o in pairs]

        predictions = await off_loop(len(images) == 1, build)
        self.metrics.stage.labels("encode").observe(time.perf_counter() - answered)
        self.metrics.instances.inc(len(images))
        return predictions

    # -- explanations ---------------------------------------------------------------------

    async def _admit_explain(
        self, name: str, ref: VersionRef, count: int, params: ExplainParameters
    ) -> ServedVersion:
        """The same questions as for work, then what only explanations refuse (their own
        instance limit, cost, visualisation) and a local copy to explain with."""
        _, version = await self._admit(name, ref, work=True, instances=count)
        admission.check_limits(version.model_info(), params.num_glimpses, None)
        if not self.in_process and not (version.path / "saved_model.pb").is_file():
            # Beside TF Serving the gateway needs its own copy; the folder goes to the log,
            # not to the client (no server paths in answers).
            log.warning("explanations: no SavedModel for them at %s", version.path)
            raise NotReady(
                f"no local copy of model {name} version {version.number} in the gateway:"
                " explanations need the SavedModel there (GLIMPSE_MODEL_DIR)"
            )
        version.explainer.check(count, params)
        return version

    async def explain(
        self, name: str, ref: VersionRef, instances: Sequence[Instance], params: ExplainParameters
    ) -> Answered:
        """decode -> explain, on the version's explainer (its own thread, the model's turns).
        Decoding counts against the request's deadline; the explanation has its own, started
        when its model is loaded."""
        version = await self._admit_explain(name, ref, len(instances), params)
        with version.use():
            images, _ = await self._decode(instances)
            explanations = await version.explainer.explain(images, params)
        return Answered(version.number, explanations)

    async def predict_and_explain(
        self,
        name: str,
        instances: Sequence[Instance],
        predict_params: PredictParameters,
        explain_params: ExplainParameters,
    ) -> tuple[Answered, Answered]:
        """Both answers for the same images of the default version, decoded once under one
        deadline (Vertex's :explain answers predictions beside explanations)."""
        version = await self._admit_explain(name, VersionRef(), len(instances), explain_params)
        predict_params = admission.check_parameters(version.model_info(), predict_params)
        with version.use():
            images, deadline = await self._decode(instances)
            predictions = await self._predict_images(version, images, predict_params, deadline)
            explanations = await version.explainer.explain(images, explain_params)
        return (
            Answered(version.number, predictions),
            Answered(version.number, explanations),
        )

    # -- tensors: any signature on a request's tensors ------------------------------------

    @asynccontextmanager
    async def target(
        self, name: str, ref: VersionRef, signature: str | None
    ) -> AsyncIterator[Target]:
        """The version and signature a tensor request will run, held until the block ends:
        resolved before the body is turned into tensors (the signature says how), then run
        by `infer` on the same version."""
        model, version = await self._admit(name, ref, work=True)
        with version.use():
            spec = signature_spec(await version.runner.metadata(), signature)
            yield Target(model, version, spec)

    def _check_cost(self, target: Target, tensors: dict[str, np.ndarray]) -> int:
        """The request's batch size, once what it would cost is known to be within bounds:
        the instance limit, finite numbers, glimpse axes within the model's max_glimpses, and
        the answer's size estimated from the signature's output shapes."""
        batch = batch_rows(tensors)
        admission.check_instances(batch, self.settings.max_instances)
        for name, array in tensors.items():
            if (
                isinstance(array, np.ndarray)
                and array.dtype.kind == "f"
                and not np.isfinite(array).all()
            ):
                bad = int(array.size - np.isfinite(array).sum())
                raise InvalidInput(
                    f"{clip(name)}: {bad} of its values are NaN or Infinity; the model takes"
                    " finite numbers (and its answer must be JSON)"
                )
        info = target.version.model_info()
        for name, axis in _GLIMPSE_AXIS.items():
            array = tensors.get(name)
            if info is None or array is None or array.ndim < -axis:
                continue
            if array.shape[axis] > info.max_glimpses:
                raise InvalidInput(
                    f"{name}: {array.shape[axis]} glimpses is over the model's max_glimpses"
                    f" ({info.max_glimpses})"
                )
        spec = target.signature
        values = sum(
            batch * math.prod(max(1, d) for d in (s.shape or ())[1:]) for s in spec.outputs.values()
        )
        if values > self.settings.max_answer_values:
            raise InvalidInput(
                f"signature {spec.name} would answer {values} values for {batch} instances,"
                f" over the limit of {self.settings.max_answer_values}; send fewer instances"
            )
        return batch

    async def infer(
        self, target: Target, tensors: dict[str, np.ndarray], where: Callable[[int], str]
    ) -> dict[str, np.ndarray]:
        """The signature on exactly these tensors: bounded before the model runs, images
        through the gateway's decoder (budgets, formats; image i named `where(i)`), then
        batched with other requests' rows when the signature reads only images (the
        batcher's queue limit bounds those, GLIMPSE_QUEUE_LIMIT rows), else at most
        GLIMPSE_TENSOR_MAX_PENDING such requests per model at once (429 beyond), run in
        pieces; every call takes turns with every other kind of work."""
        timeout = self.settings.request_timeout_s
        deadline = time.monotonic() + timeout
        model, version, spec = target.model, target.version, target.signature
        batch = self._check_cost(target, tensors)
        alone = not version.runner.batched(spec, tensors)
        if alone and model.tensor_calls >= self.settings.tensor_max_pending:
            raise Overloaded(f"{model.tensor_calls} tensor requests are queued or running; retry")
        model.tensor_calls += alone
        try:
            started = time.perf_counter()
            image = spec.inputs.get(IMAGE_INPUT)
            if image is not None and image.dtype == "DT_STRING" and IMAGE_INPUT in tensors:
                tensors[IMAGE_INPUT] = await self._images(tensors[IMAGE_INPUT], deadline, where)
            took = time.perf_counter() - started
            self.metrics.stage.labels("decode").observe(took)
            timing.add("decode", took)
            left = self._left(deadline, "queue")  # before a coroutine exists to be dropped
            try:
                async with asyncio.timeout(left):
                    outputs = await version.runner.run_tensors(spec, tensors, flow=object())
            except TimeoutError:
                raise BackendTimeout(f"no answer from the model within {timeout:g} s") from None
        finally:
            model.tensor_calls -= alone
        self.metrics.instances.inc(batch)
        return outputs

    async def _images(
        self, images: np.ndarray, deadline: float, where: Callable[[int], str]
    ) -> np.ndarray:
        """Encoded images through the decoder: the bytes the model gets, in the tensor's
        shape."""
        decoded = await self.decoder.decode_bytes(list(images.reshape(-1)), deadline, where)
        out = np.empty(len(decoded), object)
        out[:] = [image.data for image in decoded]
        return out.reshape(images.shape)


async def off_loop(inline: bool, fn: Callable[..., Any], *args: Any) -> Any:
    """CPU work (building, encoding answers) goes to a worker thread unless it is one small
    item, whose sub-millisecond cost is less than the thread hop (a p50 cost at concurrency
    1). Every protocol's encoding follows this one rule."""
    if inline:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


class BatchHandle:
    """A served model as a batch job sees it (service/batch/predict.py's BatchModel): each
    batch is admitted and runs on the version that serves the job's version name then, so a
    long job follows a rollout instead of holding an old version loaded."""

    def __init__(self, plane: DataPlane, name: str, ref: VersionRef):
        self._plane, self._name, self._ref = plane, name, ref

    @asynccontextmanager
    async def held(self) -> AsyncIterator[ModelRunner]:
        async with self._plane.holding(self._name, self._ref) as version:
            yield version.runner
