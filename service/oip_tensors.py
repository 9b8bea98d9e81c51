"""Open Inference Protocol (v2) tensors: a request body into a signature's numpy inputs, and
outputs back into a v2 answer, JSON or with the binary tensor data extension.

Pure functions over bytes and a SignatureSpec (service/signatures.py), so the REST adapter
stays a translation and the rules are tested without a server:
- inputs are the signature's, by name, with v2's datatypes (BYTES for DT_STRING, FP32 for
  DT_FLOAT, ...); a shape must fit the signature's (rank, fixed dimensions) and hold exactly
  the values given;
- BYTES values: raw bytes in the binary extension (each element a 4-byte little-endian length,
  then the bytes); in JSON, base64 text for the image input (`*_bytes`, as KServe's image
  examples send it) and UTF-8 text otherwise;
- request `parameters` `num_glimpses` and `top_k` fill those inputs of a signature that has
  them, one value per row, when the request does not give them as tensors;
- outputs are the signature's, all by default or those the request names; `*_bytes` outputs
  (the annotated image) are base64 in JSON, raw in binary.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import InvalidInput, clip
from service.instances import b64decode
from service.signatures import SignatureSpec

HEADER_LENGTH = "Inference-Header-Content-Length"
V2_DATATYPES = {
    "DT_STRING": "BYTES",
    "DT_FLOAT": "FP32",
    "DT_DOUBLE": "FP64",
    "DT_HALF": "FP16",
    "DT_INT8": "INT8",
    "DT_INT16": "INT16",
    "DT_INT32": "INT32",
    "DT_INT64": "INT64",
    "DT_UINT8": "UINT8",
    "DT_UINT16": "UINT16",
    "DT_UINT32": "UINT32",
    "DT_UINT64": "UINT64",
    "DT_BOOL": "BOOL",
}
NUMPY = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}
FILLED_BY_PARAMETERS = ("num_glimpses", "top_k")


@dataclass
class InferRequest:
    """A parsed v2 request: its JSON header, the binary tail, what it asks for."""

    header: dict[str, Any]
    binary: bytes = b""
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, bool] = field(default_factory=dict)  # name -> as binary data

    @property
    def id(self) -> str | None:
        value = self.header.get("id")
        return value if isinstance(value, str) else None


def read_request(body: bytes, header_length: str | None) -> InferRequest:
    """The JSON header (the whole body, or its first Inference-Header-Content-Length bytes)
    and the binary tensor data after it."""
    if header_length is None:
        head, tail = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise InvalidInput(
                f"{HEADER_LENGTH} must be a number, not {clip(header_length)!r}"
            ) from None
        if not 0 <= n <= len(body):
            raise InvalidInput(f"{HEADER_LENGTH} {n} is outside the body's {len(body)} bytes")
        head, tail = body[:n], body[n:]
    try:
        header = json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"the request is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise InvalidInput("the request must be a JSON object with `inputs`")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("parameters must be an object")
    binary_all = bool(parameters.get("binary_data_output", False))
    outputs: dict[str, bool] = {}
    for i, entry in enumerate(header.get("outputs") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput(f"outputs[{i}] must be an object with a name")
        params = entry.get("parameters") or {}
        outputs[entry["name"]] = bool(params.get("binary_data", binary_all))
    return InferRequest(header, tail, parameters, outputs)


def signature_name(request: InferRequest) -> str | None:
    """The signature the request runs: `parameters.signature_name`, else serving_options when
    it sets a per-request option, else the default."""
    name = request.parameters.get("signature_name")
    if name is not None and not isinstance(name, str):
        raise InvalidInput("parameters.signature_name must be a string")
    if name is None and any(p in request.parameters for p in FILLED_BY_PARAMETERS):
        return "serving_options"
    return name


def _shape(entry: dict[str, Any], where: str) -> tuple[int, ...]:
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"{where}.shape must be a list of non-negative integers")
    return tuple(shape)


def _fits(shape: tuple[int, ...], spec_shape: tuple[int, ...] | None) -> bool:
    if spec_shape is None:
        return True
    if len(shape) != len(spec_shape):
        return False
    return all(want < 0 or want == got for got, want in zip(shape, spec_shape, strict=True))


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [v for item in data for v in _flatten(item)]
    return [data]


def _bytes_elements(raw: bytes, where: str) -> list[bytes]:
    out, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise InvalidInput(f"{where}: binary data ends inside an element's length")
        (n,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + n > len(raw):
            raise InvalidInput(f"{where}: an element of {n} bytes runs past the binary data")
        out.append(raw[at : at + n])
        at += n
    return out


def _json_bytes(values: list[Any], name: str, where: str) -> list[bytes]:
    out = []
    for j, value in enumerate(values):
        if not isinstance(value, str):
            raise InvalidInput(f"{where}.data[{j}]: BYTES values in JSON are strings")
        if name.endswith("_bytes"):
            try:
                out.append(b64decode(value))  # padded or not, either alphabet
            except ValueError:
                raise InvalidInput(
                    f"{where}.data[{j}]: {name} in JSON is base64 text (or send it as binary data)"
                ) from None
        else:
            out.append(value.encode())
    return out


def input_tensors(request: InferRequest, spec: SignatureSpec) -> dict[str, np.ndarray]:
    """The signature's inputs from the request, checked against it; binary data consumed in
    input order must add up to the binary tail exactly."""
    entries = request.header.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise InvalidInput("inputs must be a non-empty list")
    tensors: dict[str, np.ndarray] = {}
    at = 0
    for i, entry in enumerate(entries):
        where = f"inputs[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput(f"{where} must be an object with a name")
        name = entry["name"]
        if name not in spec.inputs:
            raise InvalidInput(
                f"{where}: unknown input {clip(name)!r}; signature {spec.name} takes"
                f" {sorted(spec.inputs)}"
            )
        if name in tensors:
            raise InvalidInput(f"{where}: input {clip(name)!r} given twice")
        want = spec.inputs[name]
        datatype = V2_DATATYPES.get(want.dtype)
        if entry.get("datatype") != datatype:
            raise InvalidInput(
                f"{where}: {name} is {datatype}, not {clip(entry.get('datatype'))!r}"
            )
        shape = _shape(entry, where)
        if not _fits(shape, want.shape):
            dims = [-1 if d < 0 else d for d in want.shape or ()]
            raise InvalidInput(f"{where}: shape {list(shape)} does not fit {name}'s {dims}")
        count = math.prod(shape)
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or at + size > len(request.binary):
                raise InvalidInput(
                    f"{where}: binary_data_size {size} is past the {len(request.binary)} bytes"
                    " of binary data"
                )
            raw = request.binary[at : at + size]
            at += size
            if datatype == "BYTES":
                values: Any = _bytes_elements(raw, where)
            else:
                itemsize = np.dtype(NUMPY[datatype]).itemsize
                if size != count * itemsize:
                    raise InvalidInput(
                        f"{where}: {size} bytes of binary data for {count} {datatype} values"
                        f" ({count * itemsize} bytes)"
                    )
                values = np.frombuffer(raw, NUMPY[datatype])
        else:
            if "data" not in entry:
                raise InvalidInput(f"{where}: no data and no binary_data_size")
            flat = _flatten(entry["data"])
            values = _json_bytes(flat, name, where) if datatype == "BYTES" else flat
        if len(values) != count:
            raise InvalidInput(
                f"{where}: shape {list(shape)} holds {count} values, not {len(values)}"
            )
        if datatype == "BYTES":
            array = np.empty(count, object)
            array[:] = values
        else:
            try:
                array = np.asarray(values, NUMPY[datatype])
            except (TypeError, ValueError):
                raise InvalidInput(f"{where}: data are not {datatype} values") from None
        tensors[name] = array.reshape(shape)
    if at != len(request.binary):
        raise InvalidInput(
            f"the inputs' binary_data_size add up to {at} bytes, but {len(request.binary)}"
            " bytes of binary data were sent"
        )
    _fill_from_parameters(tensors, request.parameters, spec)
    missing = sorted(set(spec.inputs) - set(tensors))
    if missing:
        raise InvalidInput(f"signature {spec.name} needs inputs {missing}")
    return tensors


def _fill_from_parameters(
    tensors: dict[str, np.ndarray], parameters: dict[str, Any], spec: SignatureSpec
) -> None:
    rows = next((len(a) for a in tensors.values() if a.ndim), None)
    for name in FILLED_BY_PARAMETERS:
        value = parameters.get(name)
        if value is None or name in tensors:
            continue
        if name not in spec.inputs:
            raise InvalidInput(f"parameters.{name}: signature {spec.name} takes no {name}")
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidInput(f"parameters.{name} must be an integer")
        tensors[name] = np.full(rows or 1, value, np.int32)


def _json_values(name: str, array: np.ndarray) -> list[Any]:
    flat = array.reshape(-1)
    if array.dtype.kind in ("O", "S", "U"):
        if name.endswith("_bytes"):
            return [base64.b64encode(bytes(v)).decode("ascii") for v in flat]
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat.tolist()


def datatype_of(array: np.ndarray) -> str:
    if array.dtype.kind in ("O", "S", "U"):
        return "BYTES"
    return next((k for k, v in NUMPY.items() if np.dtype(v) == array.dtype), "FP32")


def raw_bytes(array: np.ndarray) -> bytes:
    """A tensor as v2 binary data: little-endian values, or length-prefixed BYTES elements."""
    if array.dtype.kind in ("O", "S", "U"):
        parts = []
        for v in array.reshape(-1):
            data = v if isinstance(v, bytes) else str(v).encode()
            parts += [struct.pack("<I", len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def selected_outputs(
    request: InferRequest, outputs: dict[str, np.ndarray]
) -> list[tuple[str, np.ndarray]]:
    """The outputs the request names (all, sorted, when it names none); an unknown name is a
    400 listing what the signature gives."""
    unknown = sorted(set(request.outputs) - set(outputs))
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; the signature gives {sorted(outputs)}")
    names = list(request.outputs) or sorted(outputs)
    return [(name, np.asarray(outputs[name])) for name in names]


def answer(
    model: str, version: int, request: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The v2 REST answer body, and its JSON header's length when binary data follow it."""
    entries, tail = [], []
    for name, array in selected_outputs(request, outputs):
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array),
            "shape": list(array.shape),
        }
        if request.outputs.get(name):
            raw = raw_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = _json_values(name, array)
        entries.append(entry)
    body: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": entries}
    if request.id is not None:
        body["id"] = request.id
    head = json.dumps(body, separators=(",", ":")).encode()
    if not tail:
        return head, None
    return head + b"".join(tail), len(head)


def tensor_metadata(spec: SignatureSpec) -> dict[str, list[dict[str, Any]]]:
    """v2 model metadata's `inputs` and `outputs` for a signature (-1: any size)."""

    def one(name: str, tensor) -> dict[str, Any]:
        shape = [-1 if d < 0 else d for d in tensor.shape] if tensor.shape is not None else [-1]
        datatype = V2_DATATYPES.get(tensor.dtype, tensor.dtype)
        return {"name": name, "datatype": datatype, "shape": shape}

    return {
        "inputs": [one(n, t) for n, t in sorted(spec.inputs.items())],
        "outputs": [one(n, t) for n, t in sorted(spec.outputs.items())],
    }
