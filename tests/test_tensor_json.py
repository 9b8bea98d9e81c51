"""TF Serving's JSON tensor format, without a server: large tensors are written in pieces (so
the interpreter lock is let go between them) and read back exactly as one json.dumps would."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service import tensor_json

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    "shape", [(3,), (20_000,), (2, 224, 224, 3), (1, 7, 7, 1280), (40_000, 1), (0,)]
)
def test_pieces_read_back_as_one_dump(shape):
    array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    text = tensor_json.columns_json({"view": array})
    assert json.loads(text) == array.tolist()
    rows = json.loads(tensor_json.rows_json({"view": array, "n": np.arange(shape[0])}))
    assert [r["view"] for r in rows] == array.tolist()


def test_strings_and_bytes_as_tf_serving_writes_them():
    out = {
        "class_names": np.array([[b"tabby", b"tiger cat"]], object),
        "image_bytes": np.array([b"\x89PNG"], object),
    }
    rows = json.loads(tensor_json.rows_json(out))
    assert rows == [{"class_names": ["tabby", "tiger cat"], "image_bytes": {"b64": "iVBORw=="}}]
    # One item of a bytes tensor keeps its trailing NUL bytes (a CRC may end in one).
    row = tensor_json.row_values({"crc_bytes": np.array([b"ab\x00"], object)[0]})
    assert row == {"crc_bytes": {"b64": "YWIA"}}


def test_no_encoder_call_writes_more_than_a_chunk(monkeypatch):
    """A large tensor goes to json.dumps in pieces of at most _CHUNK values: each call holds
    the interpreter lock for milliseconds, whatever the tensor's size."""
    sizes: list[int] = []
    real = json.dumps

    def recording(value, *args, **kwargs):
        sizes.append(np.asarray(value, dtype=object).size)
        return real(value, *args, **kwargs)

    monkeypatch.setattr(tensor_json.json, "dumps", recording)
    array = np.zeros((3, 40_000), np.float32)
    text = tensor_json.columns_json({"v": array, "w": np.ones(50_000, np.float32)})
    monkeypatch.undo()
    assert json.loads(text) == {"v": array.tolist(), "w": [1.0] * 50_000}
    numeric = [n for n in sizes if n > 1]  # the output names are dumped too
    assert len(numeric) > 10 and max(numeric) <= tensor_json._CHUNK


@pytest.mark.parametrize(
    "text",
    ["+/+/AA==", "+/+/AA", "-_-_AA==", "-_-_AA"],
    ids=["padded", "unpadded", "url-safe", "url-safe-unpadded"],
)
def test_tensor_forms_read_the_base64_the_instances_path_reads(text):
    """One rule for bytes in every form (service/instances.py b64decode): padded or not,
    the standard or the URL-safe alphabet; anything else is TF Serving's message."""
    from service.signatures import SignatureSpec, TensorSpec

    spec = SignatureSpec("s", {"x_bytes": TensorSpec("DT_STRING", (-1,))}, {})
    for body in ({"inputs": {"x_bytes": [{"b64": text}]}}, {"instances": [{"b64": text}]}):
        tensors, _ = tensor_json.parse_request({"signature_name": "s", **body}, spec)
        assert list(tensors["x_bytes"]) == [b"\xfb\xff\xbf\x00"]
    from service.errors import InvalidInput

    with pytest.raises(InvalidInput, match="Unable to base64 decode"):
        tensor_json.parse_request({"inputs": {"x_bytes": [{"b64": "a!b"}]}}, spec)
