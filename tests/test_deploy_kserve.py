"""deploy/kserve: the KServe ServingRuntime and InferenceServices, validated against KServe's
own CRD schemas (tests/data/kserve-crds, copied from kserve/kserve) and tied to the gateway
they run: its settings, routes, probes and the model config the runtime writes at start."""

from __future__ import annotations

import copy
import gzip
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

from service.settings import GatewaySettings
from tests.conftest import body, encode
from tests.kustomize import render, settings_from

ROOT = Path(__file__).resolve().parents[1]
KSERVE = ROOT / "deploy" / "kserve"
CRDS = Path(__file__).parent / "data" / "kserve-crds"
ISVC_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # KServe: a DNS-1035 label


# -- loading ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    """The kustomization, with its `images` applied to the runtime's containers (the test
    renderer only rewrites pod templates; kustomize rewrites every `containers` list)."""
    objects = render(KSERVE)
    images = {
        i["name"]: f"{i['newName']}:{i['newTag']}"
        for i in yaml.safe_load((KSERVE / "kustomization.yaml").read_text())["images"]
    }
    for o in objects:
        for c in o["spec"].get("containers", []):
            c["image"] = images.get(c["image"], c["image"])
    return objects


@pytest.fixture(scope="module")
def runtime(rendered) -> dict:
    [r] = [o for o in rendered if o["kind"] == "ServingRuntime"]
    return r


EXTRA_ISVCS = ("inferenceservice-v1.yaml", "inferenceservice-grpc.yaml")  # applied by hand


def _isvcs(rendered) -> list[dict]:
    extra = [yaml.safe_load((KSERVE / name).read_text()) for name in EXTRA_ISVCS]
    return [o for o in rendered if o["kind"] == "InferenceService"] + extra


def _container(runtime: dict) -> dict:
    [c] = runtime["spec"]["containers"]
    return c


def _env(runtime: dict, isvc_name: str) -> dict[str, str]:
    """The container's environment as KServe runs it: `{{.Name}}` is the InferenceService's."""
    return {
        e["name"]: e["value"].replace("{{.Name}}", isvc_name) for e in _container(runtime)["env"]
    }


# -- the CRD schemas -------------------------------------------------------------------------


def _crd(plural: str) -> dict:
    path = CRDS / f"serving.kserve.io_{plural}.yaml.gz"
    text = gzip.decompress(path.read_bytes())
    note = (CRDS / "README.md").read_text()
    [digest] = re.findall(rf"serving\.kserve\.io_{plural}\.yaml \| ([0-9a-f]{{64}})", note)
    assert hashlib.sha256(text).hexdigest() == digest, f"{path.name} is not the noted copy"
    return yaml.safe_load(text)


def _strict(schema):
    """Unknown fields are errors, as kubernetes-validate's strict mode makes them (the API
    server would silently prune them): every object schema that lists its properties and
    does not preserve unknown fields gets additionalProperties: false."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def validators() -> dict[tuple[str, str], jsonschema.Draft4Validator]:
    """(apiVersion, kind) -> a validator for each served version of the two CRDs."""
    out = {}
    for plural in ("servingruntimes", "inferenceservices"):
        crd = _crd(plural)["spec"]
        for version in crd["versions"]:
            if version["served"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                key = (f"{crd['group']}/{version['name']}", crd["names"]["kind"])
                out[key] = jsonschema.Draft4Validator(schema)
    return out


def _errors(validators, o: dict) -> list[str]:
    validator = validators[(o["apiVersion"], o["kind"])]
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(o)]


def test_kustomization_renders_the_runtime_and_the_model(rendered):
    assert sorted(o["kind"] for o in rendered) == ["InferenceService", "ServingRuntime"]
    assert all(o["metadata"]["labels"]["app.kubernetes.io/name"] == "glimpse" for o in rendered)


def test_manifests_validate_against_kserve_crd_schemas(rendered, validators):
    objects = [*rendered, *_isvcs(rendered)[1:]]
    assert {(o["apiVersion"], o["kind"]) for o in objects} == {
        ("serving.kserve.io/v1alpha1", "ServingRuntime"),
        ("serving.kserve.io/v1beta1", "InferenceService"),
    }
    for o in objects:
        assert _errors(validators, o) == [], o["metadata"]["name"]
        assert ISVC_NAME.fullmatch(o["metadata"]["name"])


def test_schema_validation_catches_mistakes(runtime, rendered, validators):
    """The validator is not vacuous: a misspelt field, a wrong type and an unknown field deep
    in a container all fail."""
    bad = copy.deepcopy(runtime)
    bad["spec"]["protocolVersion"] = ["v2"]  # protocolVersions
    assert _errors(validators, bad)
    bad = copy.deepcopy(runtime)
    bad["spec"]["multiModel"] = "no"
    assert _errors(validators, bad)
    bad = copy.deepcopy(runtime)
    bad["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    assert _errors(validators, bad)
    isvc = copy.deepcopy(_isvcs(rendered)[0])
    isvc["spec"]["predictor"]["model"]["storageURI"] = "gs://x"
    assert _errors(validators, isvc)


# -- the InferenceServices name what the runtime serves ---------------------------------------


def test_inference_services_use_the_runtime_as_it_allows(runtime, rendered):
    spec = runtime["spec"]
    formats = {(f["name"], f.get("version")) for f in spec["supportedModelFormats"]}
    protocols = set(spec["protocolVersions"])
    isvcs = _isvcs(rendered)
    assert {i["spec"]["predictor"]["model"]["protocolVersion"] for i in isvcs} == {
        "v1",
        "v2",
        "grpc-v2",
    }
    for isvc in isvcs:
        model = isvc["spec"]["predictor"]["model"]
        # autoSelect is off, so every InferenceService must name this runtime.
        assert model["runtime"] == runtime["metadata"]["name"]
        assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
        assert model["protocolVersion"] in protocols
        assert re.fullmatch(r"gs://[^/]+/.+[^/]", model["storageUri"])
        assert "memory" in model["resources"]["limits"] and "cpu" in model["resources"]["requests"]
        assert len(isvc["metadata"]["name"]) <= 45  # KServe's limit with its suffixes
    assert not any(f.get("autoSelect") for f in spec["supportedModelFormats"])
    assert spec["multiModel"] is False


def test_runtime_runs_the_deployments_gateway_image(runtime):
    deployment = next(o for o in render(ROOT / "deploy" / "base") if o["kind"] == "Deployment")
    gateway = next(c for c in deployment["spec"]["template"]["spec"]["containers"])
    assert gateway["name"] == "gateway"
    container = _container(runtime)
    assert container["name"] == "kserve-container"  # where KServe merges the model's spec
    assert container["image"] == gateway["image"]


def test_runtime_env_is_real_gateway_settings(runtime):
    env = _env(runtime, "saccader")
    known = {"PORT"} | {f"GLIMPSE_{name.upper()}" for name in GatewaySettings.model_fields}
    assert set(env) <= known, set(env) - known
    raw = {e["name"]: e["value"] for e in _container(runtime)["env"]}
    assert raw["GLIMPSE_MODEL_NAME"] == "{{.Name}}"  # KServe fills in the InferenceService's
    settings = settings_from(env)
    assert settings.backend == "embedded" and settings.host == "0.0.0.0"
    assert settings.model_name == "saccader" and not settings.jobs_enabled
    assert str(settings.model_config_file).startswith("/tmp/")


def test_ports_probes_and_protocols_exist_in_the_app(runtime):
    from service.app import create_app

    container = _container(runtime)
    settings = settings_from(_env(runtime, "saccader"))
    paths = set(create_app(settings).openapi()["paths"])
    ports = {p["containerPort"]: p for p in container["ports"]}
    # Knative routes to one port: the runtime's is 8080 (http1), KServe's REST port; the gRPC
    # InferenceService adds 8081 (h2c), the gateway's default gRPC port, in RawDeployment mode.
    assert ports[8080]["name"] == "http1" and settings.port == 8080 and set(ports) == {8080}
    assert "grpc-v2" in runtime["spec"]["protocolVersions"]
    assert GatewaySettings.model_fields["grpc_port"].default == 8081  # tests set a free one
    [grpc_isvc] = [
        i for i in _isvcs([]) if i["spec"]["predictor"]["model"]["protocolVersion"] == "grpc-v2"
    ]
    assert grpc_isvc["spec"]["predictor"]["model"]["ports"] == [
        {"name": "h2c", "containerPort": 8081, "protocol": "TCP"}
    ]
    mode = grpc_isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    assert mode == "RawDeployment"
    for probe, path in [
        ("startupProbe", "/healthz/startup"),
        ("readinessProbe", "/healthz/ready"),
        ("livenessProbe", "/healthz/live"),
    ]:
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in paths and get["port"] == 8080
    routes = {
        "v1": ["/v1/models/{model}", "/v1/models/{model}:predict"],
        "v2": ["/v2/health/ready", "/v2/models/{model}/ready", "/v2/models/{model}/infer"],
        "grpc-v2": [],  # the gRPC service itself: test_gateway_as_the_runtime_starts...
    }
    for protocol in runtime["spec"]["protocolVersions"]:
        assert protocol in routes, f"{protocol}: the gateway serves no such protocol"
        assert set(routes[protocol]) <= paths, protocol
    prometheus = runtime["spec"]["annotations"]
    assert prometheus["prometheus.kserve.io/path"] == "/metrics"  # served: the live test
    assert prometheus["prometheus.kserve.io/port"] == "8080"


def test_runtime_is_locked_down(runtime):
    container = _container(runtime)
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "memory" in container["resources"]["limits"]
    assert "cpu" in container["resources"]["requests"]
    # The one writable place, where the start script writes the model config.
    volumes = {v["name"]: v for v in runtime["spec"]["volumes"]}
    [tmp] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    config = _env(runtime, "x")["GLIMPSE_MODEL_CONFIG_FILE"]
    assert config.startswith(tmp["mountPath"] + "/")


# -- the start script: the model KServe downloaded, served under the InferenceService's name --


def _run_start_script(runtime, tmp_path: Path, isvc_name: str) -> tuple[Path, str]:
    """Run the container's command with a stand-in `glimpse` (records its arguments) and the
    config file moved into tmp_path; returns the written config file and glimpse's args."""
    container = _container(runtime)
    assert container["command"] == ["/bin/sh", "-c"]
    [script] = container["args"]
    assert "{{" not in script  # KServe templates the container: only env carries {{.Name}}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "glimpse"
    fake.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/glimpse.args"\n')
    fake.chmod(0o755)
    env = _env(runtime, isvc_name)
    config = tmp_path / "models.config"
    env["GLIMPSE_MODEL_CONFIG_FILE"] = str(config)
    proc = subprocess.run(
        ["/bin/sh", "-c", script],
        env={**env, "PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return config, (tmp_path / "glimpse.args").read_text().strip()


def test_start_script_serves_mnt_models_as_the_isvc_name(runtime, rendered, tmp_path):
    from service.model_config import parse_config_text

    name = _isvcs(rendered)[0]["metadata"]["name"]
    config, args = _run_start_script(runtime, tmp_path, name)
    assert args == "serve"
    [model] = parse_config_text(config.read_text())
    # KServe's storage initializer puts the storageUri's contents at /mnt/models, a model base
    # in TF Serving's layout (<version>/saved_model.pb), as kserve-tensorflow-serving reads it.
    assert model.name == name and str(model.base_path) == "/mnt/models"


def test_gateway_as_the_runtime_starts_it_serves_v1_and_v2(
    runtime, rendered, tiny_export, tmp_path
):
    """The gateway with the runtime's environment and the config its start script writes,
    /mnt/models moved to where the test's export (<base>/<version>/) is: v1 and v2 over REST,
    and v2 over gRPC (on a free port here, 8081 in the pod)."""
    from tests.servers import live_server

    name = _isvcs(rendered)[0]["metadata"]["name"]
    config, _ = _run_start_script(runtime, tmp_path, name)
    config.write_text(config.read_text().replace('"/mnt/models"', f'"{tiny_export.parent}"'))
    env = {
        **_env(runtime, name),
        "GLIMPSE_HOST": "127.0.0.1",
        "GLIMPSE_MODEL_CONFIG_FILE": str(config),
    }
    with live_server(settings_from(env)) as gateway:
        photo = encode(__import__("numpy").zeros((120, 160, 3), "uint8"), "JPEG")
        r = httpx.post(f"{gateway.url}/v1/models/{name}:predict", json=body(photo), timeout=60)
        assert r.status_code == 200, r.text
        paths = ("/healthz/ready", "/v2/health/ready", f"/v2/models/{name}/ready")
        for path in (*paths, runtime["spec"]["annotations"]["prometheus.kserve.io/path"]):
            assert httpx.get(gateway.url + path, timeout=10).status_code == 200, path
        import grpc
        from tritonclient.grpc import service_pb2 as pb
        from tritonclient.grpc import service_pb2_grpc as pb_grpc

        with grpc.insecure_channel(f"127.0.0.1:{gateway.app.state.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=10).ready


def test_kserve_yaml_passes_yamllint():
    proc = subprocess.run(
        [sys.executable, "-m", "yamllint", "-s", "deploy/kserve", ".yamllint.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
