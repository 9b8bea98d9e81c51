"""The jobs list `filter` (service/batch/job_filter.py): what it accepts, what it matches, and
the 400 that names what it does not support."""

from __future__ import annotations

import pytest

from service.batch.job_filter import parse
from service.batch.job_resource import Job, PredictionInput
from service.batch.spec import JobState
from service.errors import InvalidInput

pytestmark = pytest.mark.fast

GIVEN = PredictionInput(data_format="JSON", input_paths=["in.jsonl"], output_path="out")


def job(job_id: str, state: str, created: str, **labels: str) -> Job:
    return Job(
        job_id=job_id,
        state=JobState(state),
        create_time=created,
        labels=labels,
        prediction_input=GIVEN,
    )


JOBS = [
    job("census_1", "SUCCEEDED", "2025-12-31T23:59:59.999Z", team="vision"),
    job("census_2", "FAILED", "2026-01-01T00:00:00.000Z", team="audio"),
    job("rnn_1", "RUNNING", "2026-01-02T12:00:00.000Z"),
    job("rnn_2", "QUEUED", "2026-02-01T00:00:00.000Z", team="vision", env="prod-eu"),
]


def matching(text: str) -> list[str]:
    chosen = parse(text)
    return [j.job_id for j in JOBS if chosen.matches(j)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["census_1", "census_2", "rnn_1", "rnn_2"]),
        ("   ", ["census_1", "census_2", "rnn_1", "rnn_2"]),
        ("state=SUCCEEDED", ["census_1"]),
        ('state = "SUCCEEDED"', ["census_1"]),
        ("state:FAILED", ["census_2"]),
        ("state!=FAILED", ["census_1", "rnn_1", "rnn_2"]),
        ("state=PREPARING", []),
        ("labels.team=vision", ["census_1", "rnn_2"]),
        ('labels.team="vision"', ["census_1", "rnn_2"]),
        ("labels.team!=vision", ["census_2", "rnn_1"]),  # no label: not vision
        ("labels.team:*", ["census_1", "census_2", "rnn_2"]),
        ("labels.env=prod-eu", ["rnn_2"]),
        ("jobId:census*", ["census_1", "census_2"]),
        ("jobId=rnn_1", ["rnn_1"]),
        ("jobId!=rnn*", ["census_1", "census_2"]),
        ('createTime>"2026-01-01T00:00:00Z"', ["rnn_1", "rnn_2"]),
        ("createTime>=2026-01-01T00:00:00Z", ["census_2", "rnn_1", "rnn_2"]),
        ("createTime<2026-01-01T00:00:00Z", ["census_1"]),
        ("createTime<=2026-01-01T00:00:00Z", ["census_1", "census_2"]),
        ("createTime=2026-01-01T01:00:00+01:00", ["census_2"]),  # the same instant
        ("createTime!=2026-01-01T00:00:00Z", ["census_1", "rnn_1", "rnn_2"]),
        ("createTime>2026-01-02", ["rnn_1", "rnn_2"]),  # no zone: UTC
        ("state!=FAILED AND labels.team=vision", ["census_1", "rnn_2"]),
        (
            'state!=FAILED AND labels.team=vision AND createTime<"2026-01-15T00:00:00Z"',
            ["census_1"],
        ),
        ("jobId:rnn*   AND   state=QUEUED", ["rnn_2"]),
    ],
)
def test_what_a_filter_matches(text: str, expected: list[str]) -> None:
    assert matching(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("state=SUCCEEDED OR state=FAILED", "'OR' is not supported"),
        ("state=SUCCEEDED or state=FAILED", "'OR' is not supported"),
        ("NOT state=FAILED", "'NOT' is not supported"),
        ("-state=FAILED", "'-' is not supported"),
        ("(state=FAILED)", "'(' is not supported"),
        ("state=SUCCEEDED and labels.team=vision", "write AND in capitals, not 'and'"),
        ("state=SUCCEEDED labels.team=vision", "expected AND before 'labels.team=vision'"),
        ("state=SUCCEEDED AND", "a condition is missing after AND"),
        ("jobType=PREDICTION", "field 'jobType' is not supported"),
        ("predictionInput.batchSize=64", "field 'predictionInput.batchSize' is not supported"),
        ("labels:team", "name the label"),
        ("labels.Team=x", "'labels.Team': a label key"),
        ("state=DONE", "unknown state 'DONE'"),
        ("state=succeeded", "unknown state 'succeeded'"),
        ("state>SUCCEEDED", "state does not support '>'"),
        ("jobId<=a", "jobId does not support '<='"),
        ("createTime:2026", "createTime does not support ':'"),
        ("createTime>yesterday", "'yesterday' is not an RFC 3339 time"),
        ("createTime>", "a value is missing after createTime>"),
        ('state="SUCCEEDED', "the quoted value after state= is not closed"),
        ("state", "expected an operator"),
        ("=SUCCEEDED", "expected a field"),
        ("jobId=a*b", "'*' only at the end"),
    ],
)
def test_what_a_filter_refuses_is_named(text: str, words: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse(text)
    assert refused.value.message.startswith("filter: ")
    assert words in refused.value.message


def test_filters_that_mean_the_same_have_one_normal_form() -> None:
    """Page tokens are bound to it: respelling a filter between pages is not a new listing."""
    assert str(parse("state:FAILED")) == str(parse('state = "FAILED"'))
    assert str(parse("createTime>2026-01-01T00:00:00Z")) == str(
        parse('createTime > "2026-01-01T00:00:00+00:00"')
    )
    assert str(parse("state=FAILED")) != str(parse("state!=FAILED"))
    assert str(parse("")) == ""


def test_quoted_values_may_hold_escaped_quotes() -> None:
    assert parse(r'jobId="a\"b"').conditions[0].value == 'a"b'
