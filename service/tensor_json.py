"""TF Serving's JSON tensor format: request bodies to named tensors, output tensors to JSON.

The gateway answers TF Serving's own request forms for any signature the SavedModel has (row
`instances`, columnar `inputs`, `signature_name`), so this follows TF Serving's
`util/json_tensor.cc` rule for rule, with its error messages: `{"b64": ...}` decoded for string
inputs whatever their name, string outputs named `*_bytes` written as `{"b64": ...}`, a row per
batch item (a bare value when the signature has one output), columns otherwise. Input specs
come from the model's metadata (its `signature_def`), so the same code serves the embedded
model and a remote TF Serving.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

import numpy as np

from service.errors import InvalidInput
from service.instances import b64decode
from service.signatures import SignatureSpec, TensorSpec

Form = Literal["row", "columnar"]

# The dtypes TF Serving's JSON converts (json_tensor.cc), as numpy types.
_DTYPES: dict[str, Any] = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_INT8": np.int8,
    "DT_UINT8": np.uint8,
    "DT_INT16": np.int16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64,
    "DT_BOOL": np.bool_,
    "DT_STRING": object,
}


def _debug(value: Any, limit: int = 120) -> str:
    """A JSON value in an error message, cut short: messages must not echo megabytes."""
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= limit else text[:limit] + "..."


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else "array"


def _leaf(value: Any, dtype: str) -> Any:
    """One JSON leaf as a value of `dtype`, or TF Serving's type error."""
    if dtype == "DT_STRING":
        if _is_b64(value):
            try:
                return b64decode(value["b64"])  # padded or not, either alphabet
            except (TypeError, ValueError):
                raise InvalidInput("Unable to base64 decode") from None
        if isinstance(value, str):
            return value.encode()
    elif dtype == "DT_BOOL":
        if isinstance(value, bool):
            return value
    elif isinstance(value, int) and not isinstance(value, bool):
        return value  # its range is the dtype's to check (np.asarray: OverflowError)
    elif isinstance(value, float):
        if dtype in ("DT_FLOAT", "DT_DOUBLE") or value.is_integer():
            return value
    raise InvalidInput(
        f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected type: "
        f"{dtype.removeprefix('DT_').lower()}"
    )


def _shape(value: Any) -> tuple[int, ...]:
    """The dense shape a JSON value claims, from its first elements (json_tensor.cc)."""
    dims: list[int] = []
    while isinstance(value, list):
        dims.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(dims)


def _fill(value: Any, level: int, shape: tuple[int, ...], dtype: str, out: list) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise InvalidInput(
                f"JSON Value: {_debug(value)} found at incorrect level: {level + 1} in the JSON"
                f" DOM. Expected at level: {len(shape)}"
            )
        out.append(_leaf(value, dtype))
        return
    if level >= len(shape):
        raise InvalidInput(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise InvalidInput(
            f"Encountered list at unexpected size: {len(value)} at level: {level}"
            f" expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


_MAX_RANK = 8  # more than any signature here; bounds the recursion below


def _tensor(value: Any, spec: TensorSpec) -> np.ndarray:
    """`value` as a tensor of `spec`'s dtype, its shape from its own nesting (as TF Serving
    reads it; the signature's shape is checked after, _check_shape)."""
    if spec.dtype not in _DTYPES:
        raise InvalidInput(f"inputs of type {spec.dtype} are not supported in JSON")
    shape = _shape(value)
    if len(shape) > _MAX_RANK:
        raise InvalidInput(f"JSON Value: lists nested deeper than {_MAX_RANK} levels")
    flat: list = []
    _fill(value, 0, shape, spec.dtype, flat)
    if spec.dtype == "DT_STRING":
        array = np.empty(len(flat), object)
        array[:] = flat
        return array.reshape(shape)
    try:
        return np.asarray(flat, _DTYPES[spec.dtype]).reshape(shape)
    except (OverflowError, ValueError):
        raise InvalidInput(
            f"a value is out of range for {spec.dtype.removeprefix('DT_').lower()}"
        ) from None


def _check_shape(name: str, array: np.ndarray, spec: TensorSpec) -> None:
    """What TF itself would refuse with a graph error, said first and plainly."""
    if spec.shape is None:
        return
    if array.ndim != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, array.shape, strict=False)
    ):
        expected = "[" + ",".join("?" if d < 0 else str(d) for d in spec.shape) + "]"
        raise InvalidInput(
            f"input {name} has shape {list(array.shape)}, the signature expects {expected}"
        )


def _instances(rows: list[Any], inputs: dict[str, TensorSpec]) -> dict[str, np.ndarray]:
    def is_object(v: Any) -> bool:
        return isinstance(v, dict) and not _is_b64(v)

    if not is_object(rows[0]) and len(inputs) > 1:
        raise InvalidInput(
            "instances is a plain list, but expecting list of objects as multiple input tensors"
            " required as per tensorinfo_map"
        )
    objects = is_object(rows[0])
    names = sorted(inputs)
    columns: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i, row in enumerate(rows):
        if objects:
            if not is_object(row):
                raise InvalidInput(f"Expecting object but got list at item {i} of input list")
            for key, value in row.items():
                if key not in inputs:
                    raise InvalidInput(
                        f"Failed to process element: {i} key: {key} of 'instances' list."
                        f" Error: JSON object: does not have named input: {key}"
                    )
                columns[key].append(_item(value, key, inputs[key], i, columns[key]))
            if set(row) != set(names):
                raise InvalidInput(
                    f"Failed to process element: {i} of 'instances' list. JSON object:"
                    f" {_debug(row)} keys must be equal to: {','.join(names)}"
                )
        else:
            if is_object(row):
                raise InvalidInput(f"Expecting value/list but got object at item {i} of input list")
            name = names[0]
            columns[name].append(_item(row, name, inputs[name], i, columns[name], keyed=False))
    return {n: np.stack(c) for n, c in columns.items()}


def _item(
    value: Any, name: str, spec: TensorSpec, i: int, seen: list[np.ndarray], keyed: bool = True
) -> np.ndarray:
    where = f"Failed to process element: {i}" + (f" key: {name}" if keyed else "")
    try:
        array = _tensor(value, spec)
    except InvalidInput as e:
        raise InvalidInput(f"{where} of 'instances' list. Error: {e.message}") from None
    if seen and array.shape != seen[0].shape:
        raise InvalidInput(
            f"{where} of 'instances' list. Error: Expecting shape {list(seen[0].shape)} but got:"
            f" {list(array.shape)}"
        )
    return array


def _columns(value: Any, inputs: dict[str, TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(inputs) > 1:
            raise InvalidInput(
                "inputs is a plain value/list, but expecting an object as multiple input tensors"
                " required as per tensorinfo_map"
            )
        name = next(iter(inputs))
        return {name: _tensor(value, inputs[name])}
    tensors = {}
    for name in sorted(inputs):
        if name not in value:
            raise InvalidInput(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _tensor(value[name], inputs[name])
    return tensors


def parse_request(body: dict[str, Any], signature: SignatureSpec) -> tuple[dict, Form]:
    """A predict body -> the signature's input tensors and the form to answer in."""
    if not signature.inputs:
        raise InvalidInput(f"Failed to get input map for signature: {signature.name}")
    if "instances" in body and "inputs" in body:
        raise InvalidInput(
            "JSON Value: {...} Not formatted correctly expecting only one of 'inputs' or"
            " 'instances' keys to exist "
        )
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise InvalidInput("JSON Value: {...} Expecting 'instances' to be an list/array")
        if not rows:
            raise InvalidInput("JSON Value: {...} No values in 'instances' array")
        tensors, form = _instances(rows, signature.inputs), "row"
    elif "inputs" in body:
        tensors, form = _columns(body["inputs"], signature.inputs), "columnar"
    else:
        raise InvalidInput("Missing 'inputs' or 'instances' key")
    for name, array in tensors.items():
        _check_shape(name, array, signature.inputs[name])
    return tensors, form  # type: ignore[return-value]


def _values(name: str, array: np.ndarray) -> Any:
    """An output tensor (or one row of it) as TF Serving writes it."""
    if array.dtype.kind in ("S", "O", "U"):
        as_bytes = name.endswith("_bytes")

        def text(v: Any) -> Any:
            raw = v if isinstance(v, bytes) else str(v).encode()
            if as_bytes:
                return {"b64": base64.b64encode(raw).decode("ascii")}
            return raw.decode("utf-8", errors="replace")

        return (
            np.vectorize(text, otypes=[object])(array).tolist()
            if array.ndim
            else text(array.item())
        )
    return array.tolist()


# Values per json.dumps call: a few milliseconds each. The C encoder holds the interpreter
# lock for a whole call, so a large tensor written in one (380 ms per million floats here)
# would stall the event loop, and the health probes with it; in pieces, it yields between.
_CHUNK = 8192


def _array(value: Any) -> np.ndarray:
    """One item of a string tensor is a bare `bytes`: kept whole (np.asarray would make it a
    fixed-width bytes array, which drops trailing NUL bytes)."""
    if isinstance(value, bytes | str):
        array = np.empty((), object)
        array[()] = value
        return array
    return np.asarray(value)


def _json(name: str, array: np.ndarray) -> str:
    """A tensor (or one batch item of it) as TF Serving writes it, as JSON text."""
    array = _array(array)
    if array.dtype.kind in ("S", "O", "U") or array.size <= _CHUNK or array.ndim == 0:
        return json.dumps(_values(name, array))
    if array.ndim == 1:
        pieces = (
            json.dumps(array[i : i + _CHUNK].tolist())[1:-1] for i in range(0, len(array), _CHUNK)
        )
        return "[" + ",".join(pieces) + "]"
    return "[" + ",".join(_json(name, item) for item in array) + "]"


def _batch(outputs: dict[str, np.ndarray]) -> int:
    if not outputs:
        raise InvalidInput("Cannot convert empty tensor map to JSON")
    batch = -1
    for name in sorted(outputs):
        array = outputs[name]
        if array.ndim == 0:
            raise InvalidInput(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise InvalidInput(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]}"
                f" expecting: {batch}"
            )
        batch = array.shape[0]
    return batch


def rows_json(outputs: dict[str, np.ndarray]) -> str:
    """`predictions`: one entry per batch item, an object of outputs (or the one output bare),
    as JSON text."""
    batch = _batch(outputs)
    names = sorted(outputs)
    if len(names) == 1:
        return _json(names[0], outputs[names[0]])
    items = (
        "{" + ",".join(f"{json.dumps(n)}:{_json(n, outputs[n][i])}" for n in names) + "}"
        for i in range(batch)
    )
    return "[" + ",".join(items) + "]"


def columns_json(outputs: dict[str, np.ndarray]) -> str:
    """`outputs`: the whole tensors by name (the one output bare), as JSON text."""
    if not outputs:
        raise InvalidInput("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if len(names) == 1:
        return _json(names[0], outputs[names[0]])
    return "{" + ",".join(f"{json.dumps(n)}:{_json(n, outputs[n])}" for n in names) + "}"


def row_values(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """One batch item's outputs (already sliced) as the object of its row."""
    return {name: _values(name, _array(value)) for name, value in outputs.items()}
