"""Schema fuzzing: schemathesis generates requests from the live gateway's own OpenAPI document.

Every documented operation (predict, explain, model status and metadata, health, jobs) gets
requests that fit the schema (positive) and requests that break it (negative); each answer
must be a documented status code with a documented content type and a body matching the
documented schema, and never a 5xx. Example counts are bounded so that the whole run stays
under a minute on two cores.

schemathesis' pytest plugin (`from_fixture`) does not run under pytest 9 (it reads
`Function._nodeid`), so the operations' hypothesis strategies are driven directly.
"""

from __future__ import annotations

from collections import Counter

import httpx
import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import b64, encode
from tests.servers import live_server

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 6}  # per operation


@pytest.fixture(scope="module")
def fuzzed_gateway(gateway_settings, gcs, tmp_path_factory):
    """Jobs go to the storage emulator (buckets that do not exist fail fast), explanations to
    the tiny model; the token is on so that every route also runs its auth check."""
    settings = gateway_settings(
        auth_token=TOKEN,
        jobs_db=tmp_path_factory.mktemp("jobs") / "jobs.sqlite3",
        storage_retry_deadline_s=1.0,
    )
    with live_server(settings) as server:
        yield server


def small_images() -> list[str]:
    """Real photos-to-be, so that schema-valid bodies reach the model and the explainer."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    return [b64(encode(pixels, "PNG")), b64(encode(pixels, "JPEG")), b64(encode(pixels, "WEBP"))]


def aimed(spec: dict) -> dict:
    """The gateway's own document, with path parameters and image bytes drawn mostly from what
    is served (`project` is not checked, so it stays free): random model names and random
    base64 would stop nearly every request at a 404 or a 400 before the handlers' interesting
    parts. Schema-breaking values still come from the negative mode."""
    names = {
        "model": ["saccader", "other"],
        "version": ["1", "v1", "2", "x"],
        "job": ["fuzz-job", "nope"],
    }
    for operations in spec["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in names:
                    parameter["schema"] = {"type": "string", "enum": names[parameter["name"]]}
    spec["components"]["schemas"]["Instance"]["properties"]["input_image_bytes"] = {
        "type": "object",
        "properties": {"b64": {"type": "string", "enum": small_images()}},
        "required": ["b64"],
        "additionalProperties": False,
    }
    return spec


@pytest.fixture(scope="module")
def api_schema(fuzzed_gateway):
    spec = httpx.get(fuzzed_gateway.url + "/openapi.json", headers=AUTH).json()
    return schemathesis.openapi.from_dict(aimed(spec))


def fuzz(api_schema, url: str, mode: GenerationMode) -> tuple[list[str], Counter[int]]:
    """Run every operation's strategy; return one line per failing operation, and how many
    answers had each status code."""
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 19, [op.label for op in operations]
    with requests.Session() as session:
        for operation in operations:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES[mode],
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case) -> None:
                response = case.call(base_url=url, session=session, headers=AUTH, timeout=30)
                statuses[response.status_code] += 1
                extra = [negative_data_rejection] if mode == GenerationMode.NEGATIVE else []
                case.validate_response(response, checks=CHECKS + extra)

            try:
                run()
            except Unsatisfiable:
                # Only string path parameters: every request fits, no negative one exists.
                assert (
                    mode == GenerationMode.NEGATIVE
                    and operation.method == "get"
                    or (operation.path.endswith(":cancel"))
                ), operation.label
            except Exception as e:  # noqa: BLE001 - collect every operation's failure
                failures.append(f"{operation.label}: {e}")
    return failures, statuses


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms(api_schema, fuzzed_gateway, mode) -> None:
    failures, statuses = fuzz(api_schema, fuzzed_gateway.url, mode)
    assert not failures, "\n\n".join(failures)
    print(mode, dict(statuses))
    assert sum(statuses.values()) >= 60 and max(statuses) < 500, statuses
    # The requests got past auth and reached the handlers: both answers and refusals.
    assert 401 not in statuses and 400 in statuses, statuses
    if mode == GenerationMode.POSITIVE:
        assert 200 in statuses, statuses
