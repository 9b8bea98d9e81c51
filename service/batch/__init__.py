"""Batch prediction: JSON lines in (Cloud Storage or local), sharded predictions out.

A job's way through the package, and the one module that does each step, whichever runner:

storage.py       gs:// and local files behind one API, with retries
inputs.py        input patterns -> files (a pattern matching nothing fails the job), numbered lines
lines.py         one input line -> a model-ready image, or a per-line error record
predict.py       the per-batch function the plain runner and the Beam pipeline share
shard.py         one shard's outcomes -> local spool files -> staged shard files
output.py        staging shards and committing them into place, whole or not at all
finish.py        how every job ends: accounting checked and committed, or CANCELLED/FAILED
spec.py          what a job is asked to do (JobSpec) and what it reports (JobReport)
runner.py        the plain (asyncio) runner behind `glimpse batch submit` and the jobs API
pipeline.py      the same job as an Apache Beam pipeline (`--runner beam`, Dataflow)
model_source.py  the model a CLI or Beam job loads (`--model-dir`, gs:// fetched once)
cli.py           `glimpse batch`: run jobs here, or drive a gateway's jobs via glimpse_client

The gateway's managed jobs API (AI Platform's `projects.jobs`):
job_resource.py  the job resource as JSON clients see it (camelCase, int64 counts as strings)
job_store.py     job resources in SQLite, so jobs outlive the gateway process (per project)
job_filter.py    `jobs.list` filters: AI Platform's subset of AIP-160, anything else a 400
job_manager.py   create, get, list, cancel, and the scheduler that runs jobs with runner.py
"""
