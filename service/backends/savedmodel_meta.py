"""TF Serving's status and metadata bodies for a SavedModel on disk.

Both the embedded backend and the test gRPC server answer from the same `saved_model.pb`, so
`GET /v1/models/saccader/metadata` looks the same whichever backend is behind the gateway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format

from service.errors import ModelNotFound


def versions(model_base: Path) -> list[int]:
    """Numeric version directories that hold a SavedModel, highest first."""
    if not model_base.is_dir():
        return []
    found = [
        int(p.name)
        for p in model_base.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").exists()
    ]
    return sorted(found, reverse=True)


def resolve_version(model_base: Path, name: str, version: int | None) -> int:
    available = versions(model_base)
    if not available:
        raise ModelNotFound(f"Could not find any versions of model {name}")
    if version is None:
        return available[0]
    if version not in available:
        raise ModelNotFound(f"Could not find version {version} of model {name}")
    return version


def signature_def_map(saved_model_dir: Path):
    """The SavedModel's SignatureDefMap proto, as TF Serving's GetModelMetadata returns it."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    out = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in sm.meta_graphs[0].signature_def.items():
        if not key.startswith("__"):  # __saved_model_init_op is not a serving signature
            out.signature_def[key].CopyFrom(sig)
    return out


def message_to_dict(message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def status_body(name: str, served: list[int]) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(v),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in served
        ]
    }


def metadata_body(name: str, version: int, signature_map) -> dict[str, Any]:
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": message_to_dict(signature_map)},
    }
