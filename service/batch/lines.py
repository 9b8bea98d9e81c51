"""One input line -> a model-ready image, or a record of why that line failed.

A line is an instance in the online format (`{"input_image_bytes": {"b64": ...}, "key": ...}`
or TF Serving's bare `{"b64": ...}`), validated by the same code as an online request. Every
line ends up either as a prediction or as an error record naming its file, line number, key
and reason: nothing is dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from service.errors import InvalidInput
from service.instances import DecodeLimits, ImageInput, decode_instance, explain_validation
from service.schemas import Instance, instance_key


@dataclass(frozen=True, order=True)
class LineRef:
    path: str
    line: int  # 1-based


@dataclass(frozen=True)
class Failure:
    """A line that produced no prediction; `kind` groups reasons for the summary."""

    ref: LineRef
    key: str | int | float | None  # as the line gave it: 3 stays 3, "3" stays "3"
    kind: str  # empty_line | line_too_long | not_json | invalid_instance | invalid_image | ...
    reason: str

    def to_json(self) -> str:
        record = {"input_path": self.ref.path, "line": self.ref.line, "key": self.key}
        return json.dumps({**record, "kind": self.kind, "error": self.reason})


@dataclass(frozen=True)
class Success:
    ref: LineRef
    json: str  # the online prediction object, serialised


Outcome = Success | Failure
RawLine = tuple[LineRef, bytes | int]  # bytes, or the length of a line over the limit

_BOM = b"\xef\xbb\xbf"


def _key_of(raw: bytes) -> str | int | float | None:
    """Best effort: the key of a line that failed validation, so users can find it, as the
    line gave it; None for what could not be a key (schemas.instance_key's rules) and would
    make the record unreadable."""
    try:
        return instance_key(json.loads(raw).get("key"))
    except (ValueError, AttributeError, RecursionError):
        return None


def decode_line(ref: LineRef, raw: bytes | int, limits: DecodeLimits) -> ImageInput | Failure:
    if isinstance(raw, int):
        return Failure(ref, None, "line_too_long", f"line is {raw} bytes, over the limit")
    if ref.line == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    raw = raw.rstrip(b"\r")
    if not raw.strip():
        return Failure(ref, None, "empty_line", "empty line")
    try:
        instance = Instance.model_validate_json(raw)
    except ValidationError as e:
        errors = e.errors()
        if any(err["type"] == "json_invalid" for err in errors):
            return Failure(ref, None, "not_json", explain_validation(errors))
        reason = explain_validation(errors)
        return Failure(ref, _key_of(raw), "invalid_instance", f"instance: {reason}")
    try:
        return decode_instance(instance, limits.image_pixels, budget=limits.budget())
    except InvalidInput as e:
        return Failure(ref, instance.key, "invalid_image", e.message)
