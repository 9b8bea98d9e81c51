"""Which models the gateway serves: TF Serving's model config file, or every folder of the base.

With `--model-config-file` (GLIMPSE_MODEL_CONFIG_FILE) the file is TF Serving's own
`ModelServerConfig` in protobuf text format, the file `tensorflow_model_server
--model_config_file` reads, parsed with TF Serving's own message (tensorflow-serving-api), so
one file can configure both: `model_config_list { config { name base_path model_platform
model_version_policy version_labels } }`. As in TF Serving, a relative base_path is relative
to the working directory. Without a file, every folder under the model base
(GLIMPSE_MODEL_DIR) that holds a version folder with a SavedModel is a model, served with the
latest-version policy; the default model (GLIMPSE_MODEL_NAME) is always listed, so a base
without it says why in its status. Both are read again at every poll (service/dataplane.py
`reconcile`), so a new model appears without a restart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from google.protobuf import text_format

from service.savedmodel import versions
from service.settings import GatewaySettings, check_label

MODEL_NAME = r"[^/:\s]+"  # what TF Serving's REST URLs can name (and no whitespace)


class ConfigError(ValueError):
    """A model config the gateway cannot serve: the message names the entry."""


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's `model_version_policy`: the versions on disk that are served."""

    kind: Literal["latest", "specific", "all"] = "latest"
    num_versions: int = 1  # latest: how many of the highest
    versions: tuple[int, ...] = ()  # specific: exactly these

    def select(self, found: list[int]) -> list[int]:
        """The versions to serve among `found` (highest first)."""
        if self.kind == "all":
            return list(found)
        if self.kind == "specific":
            return [v for v in found if v in self.versions]
        return list(found[: self.num_versions])

    def describe(self) -> str:
        if self.kind == "specific":
            return f"specific {list(self.versions)}"
        return "all" if self.kind == "all" else f"latest {self.num_versions}"


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: Path
    policy: VersionPolicy = VersionPolicy()
    # TF Serving's version_labels: names clients use instead of numbers.
    labels: Mapping[str, int] = field(default_factory=dict)


def _check_labels(where: str, labels: Mapping[str, int]) -> None:
    for label, version in labels.items():
        try:
            check_label(label)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
        if version < 0:
            raise ConfigError(f"{where}: version label {label!r} names version {version}")


def parse_config_text(text: str) -> list[ModelConfig]:
    """TF Serving's ModelServerConfig text -> the models it lists, checked."""
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise ConfigError(f"model config: {e}") from None
    if message.WhichOneof("config") != "model_config_list":
        raise ConfigError("model config: a model_config_list is needed (custom configs are not)")
    models: list[ModelConfig] = []
    for entry in message.model_config_list.config:
        where = f"model config entry {entry.name or len(models) + 1!r}"
        if not re.fullmatch(MODEL_NAME, entry.name):
            raise ConfigError(f"{where}: a name without '/', ':' or spaces is needed")
        if any(m.name == entry.name for m in models):
            raise ConfigError(f"{where}: listed twice")
        if not entry.base_path:
            raise ConfigError(f"{where}: base_path is needed")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{where}: model_platform {entry.model_platform!r} is not served")
        labels = dict(entry.version_labels)
        _check_labels(where, labels)
        models.append(ModelConfig(entry.name, Path(entry.base_path), _policy(entry), labels))
    if not models:
        raise ConfigError("model config: it lists no model")
    return models


def _policy(entry) -> VersionPolicy:
    chosen = entry.model_version_policy.WhichOneof("policy_choice")
    policy = entry.model_version_policy
    if chosen == "all":
        return VersionPolicy("all")
    if chosen == "specific":
        if not policy.specific.versions:
            raise ConfigError(f"model config entry {entry.name!r}: specific lists no version")
        return VersionPolicy("specific", versions=tuple(policy.specific.versions))
    if chosen == "latest" and policy.latest.num_versions:
        return VersionPolicy("latest", num_versions=policy.latest.num_versions)
    return VersionPolicy()  # TF Serving's default: the latest version


def desired_models(settings: GatewaySettings) -> list[ModelConfig]:
    """The models to serve now: the config file's, or every model folder of the base."""
    if settings.model_config_file is not None:
        try:
            text = settings.model_config_file.read_text()
        except OSError as e:
            raise ConfigError(f"model config: cannot read it ({e.strerror})") from None
        return parse_config_text(text)
    # The default model carries the single-model settings (a version, labels).
    policy = (
        VersionPolicy("specific", versions=(settings.model_version,))
        if settings.model_version is not None
        else VersionPolicy()
    )
    default = ModelConfig(
        settings.model_name,
        settings.model_dir / settings.model_name,
        policy,
        dict(settings.version_labels),
    )
    found = []
    if settings.model_dir.is_dir():
        found = sorted(
            p.name
            for p in settings.model_dir.iterdir()
            if p.is_dir()
            and p.name != default.name
            and re.fullmatch(MODEL_NAME, p.name)
            and not p.name.startswith(".")
            and versions(p)
        )
    return [default, *(ModelConfig(name, settings.model_dir / name) for name in found)]
