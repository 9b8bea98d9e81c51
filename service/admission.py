"""The questions a request is asked before any work starts, that need no model: how its URL
names a version, and its size and parameters against the limits.

The data plane (service/dataplane.py) asks them in one order for every verb and protocol;
batch jobs ask the parameter checks too. Nothing here knows HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from model_export.contract import ModelInfo
from service.errors import InvalidInput, ModelNotFound, clip
from service.schemas import PredictParameters
from service.settings import LABEL_NAME, VERSION_NAME

_INT64_MAX = 2**63 - 1


class VersionForm(StrEnum):
    """How a URL names a version."""

    NUMBER = "number"  # TF Serving's /versions/{N} (AI Platform's `vN` read there too)
    LABEL = "label"  # TF Serving's /labels/{label}
    NAME = "name"  # AI Platform's versions/{name}: N, vN or a label


@dataclass(frozen=True)
class VersionRef:
    """A version as a request names it; `text` None is the model's default version."""

    text: str | None = None
    form: VersionForm = VersionForm.NUMBER

    @classmethod
    def name(cls, text: str | None) -> VersionRef:
        return cls(text, VersionForm.NAME)

    def as_number(self) -> int | None:
        """The number this names without asking the model: a version (`N`, `vN`) on the
        number and name forms; None for the default. A label raises LookupError (the model
        resolves it)."""
        if self.text is None:
            return None
        if self.form is VersionForm.LABEL or (
            self.form is VersionForm.NAME and not VERSION_NAME.fullmatch(self.text)
        ):
            raise LookupError(self.text)
        return parse_version(self.text)

    def is_label_syntax(self) -> bool:
        return self.text is not None and bool(LABEL_NAME.fullmatch(self.text))


def parse_version(text: str) -> int:
    """TF Serving versions are numbers; AI Platform's are names, accepted here as `v<N>`. A
    number past int64 is TF Serving's 400; anything else that is not a number names no
    version (404)."""
    match = VERSION_NAME.fullmatch(text)
    if not match:
        raise ModelNotFound(f"Could not find version {clip(text)}")
    digits = match.group(1).lstrip("0") or "0"
    if len(digits) > 19 or int(digits) > _INT64_MAX:  # no int() of a thousand digits
        raise InvalidInput(f"Failed to convert version: {clip(text)} to numeric.")
    return int(digits)


def check_instances(count: int, limit: int) -> None:
    """One request's instances against the gateway's limit (GLIMPSE_MAX_INSTANCES)."""
    if count > limit:
        raise InvalidInput(f"{count} instances is over the limit of {limit}")


def check_limits(
    info: ModelInfo | None, num_glimpses: int | None, top_k: int | None, boxes_given: bool = False
) -> None:
    """The request's parameters against the model's own limits (its model_info asset), named
    as the schema would name them. Without model info the model checks its own."""
    if info is None:
        return
    if num_glimpses is not None and num_glimpses > info.max_glimpses:
        if boxes_given:
            raise InvalidInput(
                f"parameters.glimpse_boxes: List should have at most {info.max_glimpses} items,"
                f" not {num_glimpses} (the model's max_glimpses)"
            )
        raise InvalidInput(
            f"parameters.num_glimpses: Input should be less than or equal to {info.max_glimpses}"
            " (the model's max_glimpses)"
        )
    if top_k is not None and top_k > info.max_top_k:
        raise InvalidInput(
            f"parameters.top_k: Input should be less than or equal to {info.max_top_k}"
            " (the model's max_top_k)"
        )


def check_parameters(info: ModelInfo | None, params: PredictParameters) -> PredictParameters:
    """:predict's parameters against the model's limits (online, job creation, batch), with
    the defaults the request left out fitted to the model: top_k 5 is every class of a model
    trained on fewer labels (asking for more than it has is a 400)."""
    if info is not None and "top_k" not in params.model_fields_set:
        if params.top_k > info.max_top_k:
            params = params.model_copy(update={"top_k": info.max_top_k})
    check_limits(info, params.num_glimpses, params.top_k, params.glimpse_boxes is not None)
    return params
