"""A signature as the gateway reads it from a model's metadata (TF Serving's GetModelMetadata
body, which both backends give): input and output names, dtypes and shapes.

Protocol-neutral: TF Serving's JSON (service/tensor_json.py) and the data plane's cost checks
and pieces read it, and so will any other tensor protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model_export.contract import SERVING_DEFAULT
from service.errors import InvalidInput, clip


@dataclass(frozen=True)
class TensorSpec:
    dtype: str  # "DT_STRING", ...
    shape: tuple[int, ...] | None  # -1 for unknown sizes; None for unknown rank


@dataclass(frozen=True)
class SignatureSpec:
    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


def _spec(info: dict[str, Any]) -> TensorSpec:
    shape = info.get("tensor_shape", {})
    dims = (
        None if shape.get("unknown_rank") else tuple(int(d["size"]) for d in shape.get("dim", []))
    )
    return TensorSpec(info.get("dtype", "DT_INVALID"), dims)


def signature_defs(metadata: dict[str, Any]) -> dict[str, Any]:
    """The signature defs of a GetModelMetadata body, by name."""
    return metadata.get("metadata", {}).get("signature_def", {}).get("signature_def", {})


def signature_spec(metadata: dict[str, Any], name: str | None) -> SignatureSpec:
    """The named signature from a GetModelMetadata body; TF Serving's 400 when it has none."""
    wanted = name or SERVING_DEFAULT
    defs = signature_defs(metadata)
    if wanted not in defs:
        raise InvalidInput(f'Serving signature name: "{clip(wanted)}" not found in signature def')
    sig = defs[wanted]
    return SignatureSpec(
        wanted,
        {k: _spec(v) for k, v in sig.get("inputs", {}).items()},
        {k: _spec(v) for k, v in sig.get("outputs", {}).items()},
    )


def batch_rows(tensors: dict[str, Any]) -> int:
    """The rows a tensor request runs: its largest leading dimension (1 for scalars)."""
    return max((len(t) for t in tensors.values() if getattr(t, "ndim", 0)), default=1)


def splittable(spec: SignatureSpec, tensors: dict[str, Any]) -> bool:
    """Whether a call can run in pieces along its first axis and the pieces' outputs be
    joined: every input and output of the signature is batched (leading dimension -1), and
    every input given has the same number of rows."""
    specs = [*spec.inputs.values(), *spec.outputs.values()]
    if any(not s.shape or s.shape[0] != -1 for s in specs):
        return False
    lengths = {len(t) for t in tensors.values() if getattr(t, "ndim", 0)}
    return len(lengths) == 1 and len(tensors) == len(spec.inputs)
