"""Property tests: hostile input into the decoders and the HTTP edge.

Random bytes, truncated and corrupted JPEG/PNG, decompression bombs, deeply nested JSON,
wrong types and unicode: `decode_instance` answers an image or `InvalidInput` naming the
instance, `decode_line` an image or an error record, and the gateway a 4xx `{"error": ...}`;
never another exception, never a 5xx.
"""

from __future__ import annotations

import json
import struct
import zlib

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from service.batch.lines import Failure, LineRef, decode_line
from service.errors import InvalidInput
from service.instances import DecodeLimits, ImageInput, decode_instance
from service.schemas import Instance
from tests.conftest import b64, body, encode

MAX_PIXELS = 40_000_000
PREDICT = "/v1/models/saccader:predict"
QUICK = settings(max_examples=150, deadline=None, derandomize=True, database=None)
LIVE = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_rng = np.random.default_rng(3)
_PIXELS = _rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
JPEG = encode(_PIXELS, "JPEG")
PNG = encode(_PIXELS, "PNG")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims `width` x `height` and whose data is one tiny IDAT: the shape a
    decompression bomb has before anything is inflated."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def decoded_or_named(data: bytes, max_pixels: int = MAX_PIXELS) -> ImageInput | InvalidInput:
    """decode_instance must return an image or raise InvalidInput naming the instance."""
    instance = Instance.model_validate({"input_image_bytes": {"b64": b64(data)}})
    try:
        return decode_instance(instance, max_pixels, "instances[0]")
    except InvalidInput as e:
        assert e.message.startswith("instances[0].input_image_bytes: "), e.message
        assert len(e.message) > len("instances[0].input_image_bytes: ") + 5
        return e


@QUICK
@given(data=st.binary(max_size=4096))
def test_random_bytes_are_refused_by_name(data: bytes) -> None:
    out = decoded_or_named(data)
    if isinstance(out, ImageInput):  # random bytes that happen to be an image must be whole
        assert out.original_size[0] >= 1 and out.original_size[1] >= 1


@QUICK
@given(original=st.sampled_from([JPEG, PNG]), cut=st.integers(min_value=0, max_value=len(PNG)))
def test_truncated_images_are_refused(original: bytes, cut: int) -> None:
    assume(cut < len(original) - 2)  # JPEG tolerates a lost EOI; anything shorter must fail
    out = decoded_or_named(original[:cut])
    assert isinstance(out, InvalidInput)


@QUICK
@given(
    original=st.sampled_from([JPEG, PNG]),
    flips=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
        min_size=1,
        max_size=8,
    ),
)
def test_corrupted_images_decode_or_are_refused(original: bytes, flips) -> None:
    data = bytearray(original)
    for where, mask in flips:
        data[where % len(data)] ^= mask
    out = decoded_or_named(bytes(data))
    if isinstance(out, ImageInput) and out.converted_from is None:
        assert out.data == bytes(data)  # passed through untouched, only when it checks out


@QUICK
@given(
    width=st.integers(min_value=1, max_value=2**31 - 1),
    height=st.integers(min_value=1, max_value=2**31 - 1),
)
def test_huge_dimensions_are_refused_before_decoding(width: int, height: int) -> None:
    assume(width * height > MAX_PIXELS)
    out = decoded_or_named(png_header_only(width, height))
    assert isinstance(out, InvalidInput)
    assert "over the limit" in out.message or "not a decodable image" in out.message


def nested(depth: int) -> bytes:
    return b'{"input_image_bytes": ' + b"[" * depth + b"]" * depth + b"}"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@QUICK
@given(
    raw=st.one_of(
        st.binary(max_size=2048),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"input_image_bytes": json_values, "key": json_values}, optional={"b64": json_values}
        ).map(lambda v: json.dumps(v).encode()),
        st.text().map(lambda t: json.dumps({"b64": t, "key": t}, ensure_ascii=False).encode()),
        st.integers(min_value=1, max_value=200_000).map(nested),
    ),
    line=st.integers(min_value=1, max_value=3),
)
def test_any_line_is_an_image_or_an_error_record(raw: bytes, line: int) -> None:
    ref = LineRef("gs://b/in.jsonl", line)
    out = decode_line(ref, raw, DecodeLimits(MAX_PIXELS))
    assert isinstance(out, ImageInput | Failure)
    if isinstance(out, Failure):
        assert out.ref == ref and out.reason and out.kind
        record = json.loads(out.to_json())  # always a valid JSON error record
        assert record["line"] == line and record["error"] == out.reason


def test_line_decoder_handles_the_worst_cases() -> None:
    ref = LineRef("in.jsonl", 1)
    for raw, kind in [
        (nested(100_000), "not_json"),
        (b'\xef\xbb\xbf{"b64": "' + b64(b"\xff\xd8\xff").encode() + b'"}', "invalid_image"),
        (b'{"b64": 5}', "invalid_instance"),
        (b'{"b64": "\xe2\x98\x83"}', "invalid_image"),
        (b"\xff\xfe{}", "not_json"),
        (b'{"b64": "' + b64(png_header_only(60_000, 60_000)).encode() + b'"}', "invalid_image"),
    ]:
        out = decode_line(ref, raw, DecodeLimits(MAX_PIXELS))
        assert isinstance(out, Failure) and out.kind == kind, (raw[:40], out)
    good = b'{"b64": "' + b64(PNG).encode() + b'"}'
    assert isinstance(decode_line(ref, good, DecodeLimits(10**6)), ImageInput)


def assert_refused(response: httpx.Response) -> None:
    """A 4xx with one `error` that says something, and nothing from the server's insides."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert isinstance(error, str) and len(error) > 5
    assert "Traceback" not in error and "/tmp/" not in error and "site-packages" not in error


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c


@LIVE
@given(payload=json_values)
def test_any_json_body_is_a_named_4xx(client, payload) -> None:
    assert_refused(client.post(PREDICT, json=payload))


@LIVE
@given(
    instance=st.one_of(
        json_values,
        st.fixed_dictionaries({"b64": st.text()}, optional={"key": json_values}),
        st.fixed_dictionaries({"input_image_bytes": json_values}),
        st.binary(max_size=512).map(lambda d: {"b64": b64(d)}),
        st.sampled_from([JPEG, PNG]).flatmap(
            lambda d: st.integers(0, len(d) - 3).map(lambda n: {"b64": b64(d[:n])})
        ),
    ),
    parameters=st.one_of(st.none(), json_values),
)
def test_any_instance_is_a_named_4xx(client, instance, parameters) -> None:
    payload: dict = {"instances": [instance]}
    if parameters is not None:
        payload["parameters"] = parameters
    response = client.post(PREDICT, json=payload)
    if response.status_code == 200:  # only a real image with valid parameters gets here
        assert len(response.json()["predictions"]) == 1
    else:
        assert_refused(response)


@LIVE
@given(
    raw=st.binary(max_size=2048), content_type=st.sampled_from(["application/json", "text/plain"])
)
def test_any_bytes_are_a_named_4xx(client, raw: bytes, content_type: str) -> None:
    assert_refused(client.post(PREDICT, content=raw, headers={"Content-Type": content_type}))


def test_edge_cases_over_http(client) -> None:
    for raw in (
        nested(50_000),  # deep nesting: the JSON parser's recursion limit, not the stack
        b'{"instances": [{"b64": "' + b64(png_header_only(50_000, 50_000)).encode() + b'"}]}',
        json.dumps({"instances": [{"b64": b64(JPEG[:500]), "key": "\u2603\U0001f600"}]}).encode(),
        json.dumps({"instances": "x"}).encode(),
        b'{"instances": [{"b64": "aGk="}], "parameters": {"top_k": "\xe2\x98\x83"}}',
        b"\x00" * 100,
    ):
        assert_refused(
            client.post(PREDICT, content=raw, headers={"Content-Type": "application/json"})
        )
    bomb = client.post(PREDICT, json=body(png_header_only(50_000, 50_000)))
    assert bomb.status_code == 400 and "over the limit" in bomb.json()["error"]
    named = client.post(PREDICT, json=body(PNG, JPEG[:300]))
    assert named.status_code == 400 and named.json()["error"].startswith("instances[1]")
