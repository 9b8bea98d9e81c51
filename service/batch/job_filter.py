"""The `filter` of `projects.jobs.list`: the part of AIP-160 that AI Platform documents for jobs.

A filter is conditions joined by `AND`, each `FIELD OP VALUE`:

    state       =  !=  :              a state name: `state=SUCCEEDED`, `state!=FAILED`
    jobId       =  !=  :              a job id; a trailing `*` matches a prefix (`jobId:census*`)
    labels.KEY  =  !=  :              a label's value; `labels.team:*` means the label is set
    createTime  =  !=  <  <=  >  >=   an RFC 3339 time: `createTime>"2026-01-01T00:00:00Z"`

Values may be quoted (`"..."`, with `\\"` inside) or bare. `:` (AIP-160's "has") means `=`
here, as in the examples of the ml v1 discovery document (`state:FAILED`). A job without the
label matches `labels.KEY!=...` and nothing else; a time without a zone is UTC.

Anything else (OR, NOT, parentheses, other fields, lowercase `and`, two conditions without
AND between them) is refused with a message naming it: a filter silently ignored would list
jobs the caller asked not to see.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from service.batch.job_resource import LABEL_KEY, Job
from service.batch.spec import JobState
from service.errors import InvalidInput

# Every state of the API's enum: STATE_UNSPECIFIED matches no job here (PREPARING only
# training jobs), but a client filtering on it asks a valid question.
STATES = ("STATE_UNSPECIFIED", *(s.value for s in JobState))
_TEXT_OPS = ("=", "!=", ":")
_TIME_OPS = ("=", "!=", "<", "<=", ">", ">=")
FIELDS = "state, jobId, labels.KEY, createTime"

_SPACE = re.compile(r"\s*")
_FIELD = re.compile(r"[A-Za-z_][\w.-]*")
_OP = re.compile(r"<=|>=|!=|=|<|>|:")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_BARE = re.compile(r'[^\s()"]+')
_WORD = re.compile(r"\S+")
_KEYWORDS = ("OR", "NOT")  # AIP-160's, refused in any case
_SYMBOLS = ("-", "(", ")")  # negation and grouping
_COMPARE: dict[str, Callable[[datetime, datetime], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Condition:
    """One `FIELD OP VALUE`; `when` is the parsed time of a createTime condition."""

    field: str
    op: str
    value: str
    when: datetime | None = None

    def matches(self, job: Job) -> bool:
        if self.field == "createTime":
            assert self.when is not None
            return _COMPARE[self.op](_time(job.create_time), self.when)
        if self.field == "state":
            actual: str | None = job.state.value
        elif self.field == "jobId":
            actual = job.job_id
        else:
            actual = job.labels.get(self.field.removeprefix("labels."))
        equal = actual is not None and (
            actual.startswith(self.value[:-1]) if self.value.endswith("*") else actual == self.value
        )
        return not equal if self.op == "!=" else equal

    def __str__(self) -> str:
        value = self.when.isoformat() if self.when else self.value
        return f"{self.field}{self.op}{json.dumps(value)}"


@dataclass(frozen=True)
class JobFilter:
    """Parsed filter: a job is listed when every condition matches (none: every job)."""

    conditions: tuple[Condition, ...] = ()

    def matches(self, job: Job) -> bool:
        return all(c.matches(job) for c in self.conditions)

    def __str__(self) -> str:
        """The same text for filters that mean the same (page tokens are bound to it)."""
        return " AND ".join(str(c) for c in self.conditions)


def parse(text: str | None) -> JobFilter:
    """`filter` -> JobFilter, or InvalidInput naming the first part it does not support."""
    conditions: list[Condition] = []
    scan = _Scanner(text or "")
    while not scan.done():
        if conditions:
            scan.expect_and()
        conditions.append(scan.condition())
    return JobFilter(tuple(conditions))


class _Scanner:
    def __init__(self, text: str):
        self.text, self.pos = text, 0
        self._skip()

    def done(self) -> bool:
        return self.pos >= len(self.text)

    def _skip(self) -> None:
        self.pos = _SPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def _take(self, pattern: re.Pattern) -> re.Match | None:
        match = pattern.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            self._skip()
        return match

    def _word(self) -> str:
        """The next word, for error messages."""
        match = _WORD.match(self.text, self.pos)
        return match.group()[:40] if match else ""

    def _refuse_operator(self) -> None:
        """OR, NOT, `-` and parentheses, named rather than misread as a field."""
        word = self._word()
        bad = word.upper() if word.upper() in _KEYWORDS else word[:1]
        if bad in _KEYWORDS or bad in _SYMBOLS:
            raise InvalidInput(
                f"filter: {bad!r} is not supported: conditions can only be joined by AND"
            )

    def expect_and(self) -> None:
        word = self._word()
        if word == "AND":
            self.pos += 3
            self._skip()
            if self.done():
                raise InvalidInput("filter: a condition is missing after AND")
            return
        if word.lower() == "and":
            raise InvalidInput(f"filter: write AND in capitals, not {word!r}")
        self._refuse_operator()
        raise InvalidInput(f"filter: expected AND before {word!r} (conditions are joined by AND)")

    def condition(self) -> Condition:
        self._refuse_operator()
        field_match = self._take(_FIELD)
        if not field_match:
            raise InvalidInput(f"filter: expected a field ({FIELDS}) at {self._word()!r}")
        field = field_match.group()
        op_match = self._take(_OP)
        if not op_match:
            raise InvalidInput(
                f"filter: expected an operator (=, !=, :, <, <=, >, >=) after {field!r}"
            )
        op = op_match.group()
        quoted = self._take(_QUOTED)
        if quoted:
            value = re.sub(r"\\(.)", r"\1", quoted.group(1))
        elif bare := self._take(_BARE):
            value = bare.group()
        elif self.text.startswith('"', self.pos):
            raise InvalidInput(f"filter: the quoted value after {field}{op} is not closed")
        else:
            raise InvalidInput(f"filter: a value is missing after {field}{op}")
        return _condition(field, op, value)


def _condition(field: str, op: str, value: str) -> Condition:
    """Checks what the field allows, so that a wrong filter is a 400, not an empty list."""
    if field == "createTime":
        _check_op(field, op, _TIME_OPS)
        return Condition(field, op, value, _parse_time(value))
    if field == "state":
        _check_op(field, op, _TEXT_OPS)
        if value not in STATES:
            raise InvalidInput(
                f"filter: state: unknown state {value!r} (one of {', '.join(STATES)})"
            )
        return Condition(field, "=" if op == ":" else op, value)
    if field == "jobId" or field.startswith("labels."):
        if field.startswith("labels.") and not LABEL_KEY.match(field.removeprefix("labels.")):
            raise InvalidInput(
                f"filter: {field!r}: a label key is a lowercase letter, then a-z0-9_-"
            )
        _check_op(field, op, _TEXT_OPS)
        if "*" in value[:-1]:
            raise InvalidInput(f"filter: {field}: '*' only at the end of a value (a prefix)")
        return Condition(field, "=" if op == ":" else op, value)
    if field == "labels":
        raise InvalidInput("filter: 'labels': name the label, e.g. labels.team=vision")
    raise InvalidInput(f"filter: field {field!r} is not supported (supported: {FIELDS})")


def _check_op(field: str, op: str, allowed: tuple[str, ...]) -> None:
    if op not in allowed:
        raise InvalidInput(f"filter: {field} does not support {op!r} (only {', '.join(allowed)})")


def _parse_time(value: str) -> datetime:
    try:
        return _time(value)
    except ValueError:
        raise InvalidInput(
            f"filter: createTime: {value[:40]!r} is not an RFC 3339 time"
            " (like 2026-01-01T00:00:00Z)"
        ) from None


def _time(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when
