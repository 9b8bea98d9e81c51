"""Which models the gateway serves: TF Serving's model config text, or the folders of the base."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.model_config import (
    ConfigError,
    ModelConfig,
    VersionPolicy,
    desired_models,
    parse_config_text,
)
from service.settings import GatewaySettings

pytestmark = pytest.mark.fast

# TF Serving's own example (g3doc/serving_config.md), a second model, and every policy.
CONFIG = """
model_config_list {
  config {
    name: 'saccader'
    base_path: '/models/saccader'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 42 versions: 43 } }
    version_labels { key: 'stable' value: 42 }
    version_labels { key: 'canary' value: 43 }
  }
  config { name: "parts" base_path: "/models/parts" model_platform: "tensorflow"
           model_version_policy { latest { num_versions: 2 } } }
  config { name: "birds" base_path: "relative/birds" model_version_policy { all {} } }
  config { name: "plain" base_path: "/models/plain" }
}
"""


def test_tf_servings_text_format_with_every_policy():
    saccader, parts, birds, plain = parse_config_text(CONFIG)
    assert saccader == ModelConfig(
        "saccader",
        Path("/models/saccader"),
        VersionPolicy("specific", versions=(42, 43)),
        {"stable": 42, "canary": 43},
    )
    assert parts.policy == VersionPolicy("latest", num_versions=2) and parts.labels == {}
    assert birds.policy.kind == "all" and birds.base_path == Path("relative/birds")
    assert plain.policy == VersionPolicy()  # TF Serving's default: the latest version


@pytest.mark.parametrize(
    ("policy", "found", "served"),
    [
        (VersionPolicy(), [5, 3, 1], [5]),
        (VersionPolicy("latest", num_versions=2), [5, 3, 1], [5, 3]),
        (VersionPolicy("specific", versions=(1, 4)), [5, 3, 1], [1]),
        (VersionPolicy("all"), [5, 3, 1], [5, 3, 1]),
        (VersionPolicy(), [], []),
    ],
)
def test_policies_choose_among_the_versions_found(policy, found, served):
    assert policy.select(found) == served


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'a' ", "model config: 1:"),
        ("", "model config: a model_config_list is needed"),
        ("model_config_list { }", "model config: it lists no model"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a'"
            " base_path: '/b' } }",
            "model config entry 'a': listed twice",
        ),
        ("model_config_list { config { name: 'a' } }", "entry 'a': base_path is needed"),
        (
            "model_config_list { config { name: 'a/b' base_path: '/a' } }",
            "a name without '/', ':' or spaces is needed",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'onnx' } }",
            "model_platform 'onnx' is not served",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/a'"
            " version_labels { key: '7' value: 1 } } }",
            "version label '7' would hide version 7",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/a'"
            " model_version_policy { specific { } } } }",
            "specific lists no version",
        ),
        ("custom_model_config { }", "a model_config_list is needed"),
    ],
)
def test_what_the_gateway_cannot_serve_is_named(text, message):
    with pytest.raises(ConfigError) as refused:
        parse_config_text(text)
    assert message in str(refused.value)


def _version(base: Path, name: str, number: int) -> None:
    (base / name / str(number)).mkdir(parents=True)
    (base / name / str(number) / "saved_model.pb").write_bytes(b"")


def test_without_a_file_every_model_folder_of_the_base(tmp_path):
    for name, number in (("saccader", 1), ("parts", 3), ("birds", 1), ("birds", 2)):
        _version(tmp_path, name, number)
    (tmp_path / "empty").mkdir()  # no version folder: not a model
    (tmp_path / "half" / "1").mkdir(parents=True)  # a version folder still being written
    _version(tmp_path, ".hidden", 1)
    (tmp_path / "notes.txt").write_text("x")
    settings = GatewaySettings(model_dir=tmp_path, version_labels={"stable": 1})
    default, *others = desired_models(settings)
    assert default == ModelConfig("saccader", tmp_path / "saccader", labels={"stable": 1})
    assert [(m.name, m.base_path, m.policy) for m in others] == [
        ("birds", tmp_path / "birds", VersionPolicy()),
        ("parts", tmp_path / "parts", VersionPolicy()),
    ]


def test_the_default_model_is_listed_even_before_its_folder_exists(tmp_path):
    pinned = GatewaySettings(model_dir=tmp_path / "nothing", model_version=3)
    assert desired_models(pinned) == [
        ModelConfig(
            "saccader", tmp_path / "nothing" / "saccader", VersionPolicy("specific", versions=(3,))
        )
    ]


def test_a_config_file_replaces_the_scan_and_is_read_at_every_call(tmp_path):
    _version(tmp_path, "other", 1)
    path = tmp_path / "models.config"
    path.write_text(CONFIG)
    settings = GatewaySettings(model_dir=tmp_path, model_config_file=path)
    assert [m.name for m in desired_models(settings)] == ["saccader", "parts", "birds", "plain"]
    path.write_text("model_config_list { config { name: 'only' base_path: '/o' } }")
    assert [m.name for m in desired_models(settings)] == ["only"]
    path.unlink()
    with pytest.raises(ConfigError, match="cannot read it"):
        desired_models(settings)


def test_single_model_settings_do_not_mix_with_a_file(tmp_path):
    with pytest.raises(ValueError, match="the file's"):
        GatewaySettings(model_config_file=tmp_path / "m.config", version_labels={"a": 1})
