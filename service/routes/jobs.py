"""AI Platform's jobs API: create, get, list, cancel, for batch prediction (`predictionInput`)
and training (`trainingInput`: `glimpse train`'s arguments, service/batch/train_job.py).

Jobs are scoped by the `{project}` in the path: each project sees and cancels only its own
jobs, and job ids are unique per project (job_store.py). The project is not authenticated:
the bearer token, when set, guards every project alike.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.batch.job_resource import CreateJob, Job, JobList
from service.routes.deps import JobsDep, error_responses, require_token

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_token)])
_ERRORS = error_responses(
    {
        400: "Invalid job (the message names the field)",
        401: "Missing or invalid bearer token",
        404: "Unknown job (or another project's)",
        409: "The project has a job with this id",
    }
)
_BODY_ERRORS = {**_ERRORS, **error_responses({413: "Body over the payload limit"})}


@router.post(
    "/v1/projects/{project}/jobs",
    response_model=Job,
    response_model_exclude_none=True,
    responses=_BODY_ERRORS,
    summary="Create a batch prediction or training job (runs in the background)",
)
async def create_job(project: str, body: CreateJob, jobs: JobsDep) -> Job:
    """Output-only fields in the body (`state`, `createTime`, `predictionOutput`, ...) are
    ignored, so a job copied from an earlier answer can be sent again under a new id. A
    training job's `trainingInput.args` are `glimpse train`'s arguments, without
    `--model-base`: the version is written into the gateway's model base and served."""
    return await jobs.create(project, body)


@router.get(
    "/v1/projects/{project}/jobs/{job}",
    response_model=Job,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="A job's state and counts",
)
async def get_job(project: str, job: str, jobs: JobsDep) -> Job:
    return jobs.get(project, job)


@router.get(
    "/v1/projects/{project}/jobs",
    response_model=JobList,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="The project's jobs, newest first",
)
def list_jobs(  # a plain def: a filtered page may parse thousands of stored jobs (threadpool)
    project: str,
    jobs: JobsDep,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(alias="pageToken", max_length=512)] = None,
    filter_text: Annotated[
        str | None,
        Query(
            alias="filter",
            max_length=2048,
            description=(
                "Conditions joined by AND on `state`, `jobId`, `labels.KEY` (=, !=, :) and"
                " `createTime` (=, !=, <, <=, >, >=), e.g. `state=SUCCEEDED AND createTime>"
                '"2026-01-01T00:00:00Z"`; anything else is a 400 naming it.'
            ),
        ),
    ] = None,
) -> JobList:
    return jobs.list(project, page_size, page_token, filter_text)


@router.post(
    "/v1/projects/{project}/jobs/{job}:cancel",
    responses=_ERRORS,
    summary="Cancel a queued or running job (its output is left as it was; no version)",
)
async def cancel_job(project: str, job: str, jobs: JobsDep) -> dict:
    jobs.cancel(project, job)
    return {}
