"""AI Platform's batch prediction jobs API: create, get, list, cancel.

The `{project}` in the path is not checked: one deployment serves one project.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.batch.job_resource import CreateJob, Job, JobList
from service.routes.deps import JobsDep, require_token
from service.schemas import ErrorBody

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_token)])
_ERRORS = {
    400: {"model": ErrorBody, "description": "Invalid job (the message names the field)"},
    401: {"model": ErrorBody, "description": "Missing or invalid bearer token"},
    404: {"model": ErrorBody, "description": "Unknown job"},
    409: {"model": ErrorBody, "description": "The job id is taken"},
}
_BODY_ERRORS = {
    **_ERRORS,
    413: {"model": ErrorBody, "description": "Body over the payload limit"},
}


@router.post(
    "/v1/projects/{project}/jobs",
    response_model=Job,
    response_model_by_alias=True,
    response_model_exclude_none=True,
    responses=_BODY_ERRORS,
    summary="Create a batch prediction job (runs in the background)",
)
async def create_job(project: str, body: CreateJob, jobs: JobsDep) -> Job:
    return jobs.create(body)


@router.get(
    "/v1/projects/{project}/jobs/{job}",
    response_model=Job,
    response_model_by_alias=True,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="A job's state and counts",
)
async def get_job(project: str, job: str, jobs: JobsDep) -> Job:
    return jobs.get(job)


@router.get(
    "/v1/projects/{project}/jobs",
    response_model=JobList,
    response_model_by_alias=True,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="Jobs, newest first",
)
async def list_jobs(
    project: str,
    jobs: JobsDep,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(alias="pageToken", max_length=512)] = None,
) -> JobList:
    return jobs.list(page_size, page_token)


@router.post(
    "/v1/projects/{project}/jobs/{job}:cancel",
    responses=_ERRORS,
    summary="Cancel a queued or running job (its output is left as it was)",
)
async def cancel_job(project: str, job: str, jobs: JobsDep) -> dict:
    jobs.cancel(job)
    return {}
