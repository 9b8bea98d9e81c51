"""The AI Platform `projects.jobs` resource as the gateway returns it (docs/batch.md).

On the wire fields are camelCase and counts are int64-as-string, Google's REST convention;
here they are snake_case attributes and counts are ints. `Job.body` keeps the answer as it came,
for tools that show users the API's own JSON (`glimpse batch status`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr
from pydantic.alias_generators import to_camel

ENDED = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


class _Api(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class JobOutput(_Api):
    output_path: str
    prediction_count: int = 0
    error_count: int = 0
    line_count: int = 0
    errors_by_kind: dict[str, int] = {}
    bytes_read: int = 0
    bytes_total: int = 0
    shards: int = 0
    attempt: int = 0
    node_hours: float = 0.0


class Job(_Api):
    job_id: str
    state: str = "STATE_UNSPECIFIED"
    create_time: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    error_message: str | None = None
    labels: dict[str, str] = {}
    prediction_input: dict[str, Any] = {}
    prediction_output: JobOutput | None = None
    _body: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Job:
        """The job from the gateway's JSON answer, which it keeps as `body`."""
        job = cls.model_validate(body)
        job._body = body
        return job

    @property
    def body(self) -> dict[str, Any]:
        """The JSON the gateway answered (camelCase, counts as strings, fields this client does
        not know included); empty for a Job not made by `from_body`."""
        return self._body

    def __eq__(self, other: object) -> bool:
        """Equal fields make equal jobs: `body` records an answer, it is not part of the job."""
        if not isinstance(other, Job):
            return NotImplemented
        return self.__dict__ == other.__dict__

    @property
    def done(self) -> bool:
        """SUCCEEDED, FAILED or CANCELLED: the state will not change again."""
        return self.state in ENDED

    @property
    def succeeded(self) -> bool:
        return self.state == "SUCCEEDED"
