"""Where a batch job's model comes from: the served model, or `--model-dir` like gcloud's.

`--model-dir` may name a SavedModel folder (holding saved_model.pb, as gcloud expects) or a
model base (`<dir>/<name>/<version>/`, as TF Serving and the gateway use), locally or on
Cloud Storage; a gs:// model is copied to a local cache first, once per machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from pathlib import Path

from service.backends import make_backend
from service.batch.storage import Storage, is_gcs
from service.errors import ModelNotFound
from service.model_config import desired_models
from service.model_runner import ModelRunner
from service.served_model import ServedModel
from service.settings import GatewaySettings

_CACHE = Path(tempfile.gettempdir()) / "glimpse-models"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fetch(storage: Storage, model_dir: str) -> Path:
    """Download once; a half-finished download is never mistaken for a model."""
    local = _CACHE / _digest(model_dir)
    if local.is_dir():
        return local
    if not storage.list(model_dir.rstrip("/") + "/"):
        raise ModelNotFound(f"no files under {model_dir}")
    _CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=_CACHE))
    storage.download_tree(model_dir, staging)
    try:
        staging.rename(local)
    except OSError:  # another worker finished first
        shutil.rmtree(staging, ignore_errors=True)
    return local


class StandaloneModel:
    """The default model, served without a gateway: what `glimpse batch` and the Beam
    pipeline's workers run on. It is a ServedModel like the gateway's, so the version chosen
    is the one the gateway would serve (the model config's or the settings' version policy
    and labels, GLIMPSE_MODEL_VERSION_LABEL), with the backend the settings name."""

    def __init__(self, settings: GatewaySettings):
        self._settings = settings
        self._backend = make_backend(settings)
        self._model: ServedModel | None = None

    async def start(self) -> ModelRunner:
        """The default version's runner, loaded and warmed up; NotReady saying why not."""
        await self._backend.start()
        name = self._settings.model_name
        config = next((m for m in desired_models(self._settings) if m.name == name), None)
        if config is None:
            raise ModelNotFound(f"model {name} is not in {self._settings.model_config_file}")
        self._model = ServedModel(config, self._backend, self._settings)
        await asyncio.gather(*await self._model.sync())
        return self._model.default().runner

    async def close(self) -> None:
        if self._model is not None:
            await self._model.close()
        await self._backend.close()


def settings_for_model_dir(
    settings: GatewaySettings, model_dir: str | None, storage: Storage | None = None
) -> GatewaySettings:
    """Settings whose (model_dir, model_name, model_version) point at a local SavedModel."""
    if not model_dir:
        return settings
    if is_gcs(model_dir):
        path = _fetch(storage or Storage(settings.storage_retry_deadline_s), model_dir)
    else:
        path = Path(model_dir.removeprefix("file://"))
    if (path / "saved_model.pb").is_file():
        return _as_version(settings, path)
    if not (path / settings.model_name).is_dir():
        raise ModelNotFound(
            f"{model_dir}: neither a SavedModel nor a base with a {settings.model_name}/ folder"
        )
    return settings.model_copy(update={"model_dir": path, "model_version": None})


def _as_version(settings: GatewaySettings, saved_model: Path) -> GatewaySettings:
    """A bare SavedModel folder, served as a version of the model."""
    if saved_model.name.isdigit():  # already <base>/<name>/<version>
        return settings.model_copy(
            update={
                "model_dir": saved_model.parent.parent,
                "model_name": saved_model.parent.name,
                "model_version": int(saved_model.name),
            }
        )
    base = _CACHE / f"base-{_digest(str(saved_model.resolve()))}"
    link = base / settings.model_name / "1"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(saved_model.resolve(), target_is_directory=True)
    return settings.model_copy(update={"model_dir": base, "model_version": 1})
