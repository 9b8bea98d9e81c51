"""Batch prediction: JSON lines in (Cloud Storage or local), sharded predictions out.

storage.py   gs:// and local files behind one API, with retries
lines.py     one input line -> a model-ready image, or a per-line error record
predict.py   the per-batch function the plain runner and the Beam pipeline share
output.py    staging shards and committing them into place, whole or not at all
runner.py    the plain (asyncio) runner behind `glimpse batch submit` and the jobs API
pipeline.py  the same job as an Apache Beam pipeline
jobs.py      the managed jobs API: job resources, a SQLite store and the scheduler
"""
