"""`glimpse batch submit|status|list|cancel`: gcloud's `ai-platform jobs` for our service.

`submit` runs the job here (plain runner, or Beam with `--runner beam`) and ends with a
summary; with `--url` it creates the job on a gateway instead, and `--wait` follows it.
Exit status: 0 succeeded, 1 failed, 2 bad usage, 130 cancelled.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # glimpse_client is imported when a command talks to a gateway
    from glimpse_client import Client, Job
    from service.batch.spec import JobSpec

batch_app = typer.Typer(
    help="Batch prediction from Cloud Storage or local JSON lines, gcloud-style.",
    no_args_is_help=True,
)

EXIT = {"SUCCEEDED": 0, "FAILED": 1, "CANCELLED": 130}
EXAMPLES = """
Examples:

  glimpse batch submit --input-paths 'gs://bucket/in/*.jsonl' --output-path gs://bucket/out/

  glimpse batch submit --input-paths in/a.jsonl,in/b.jsonl --output-path out/ --batch-size 32

  glimpse batch submit --runner beam --input-paths 'gs://b/in/*' --output-path gs://b/out/ \\
      --model-dir gs://b/models/saccader/1 -- --runner=DataflowRunner --project=P \\
      --region=europe-west4 --temp_location=gs://b/tmp

  glimpse batch submit --url http://127.0.0.1:8080 --wait --input-paths 'gs://b/in/*' \\
      --output-path gs://b/out/
"""


def _split(values: list[str]) -> list[str]:
    return [p for v in values for p in v.split(",") if p.strip()]


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _summary(report) -> None:
    from rich.table import Table

    table = Table(title=f"batch job {report.state.value}", show_header=False)
    rows = [
        ("job", report.job_id),
        ("output", report.output_path),
        ("input files", str(len(report.input_files))),
        ("lines", str(report.lines)),
        ("predictions", str(report.predictions)),
        ("errors", str(report.errors)),
        *((f"  {k}", str(v)) for k, v in report.errors_by_kind.items()),
        ("shards", str(report.shards)),
        ("seconds", f"{report.seconds:.1f}"),
        ("instances/s", f"{report.instances_per_s:.1f}"),
    ]
    if report.error_message:
        rows.append(("reason", report.error_message))
    for name, value in rows:
        table.add_row(name, value)
    _console().print(table)


async def _run_local(spec, settings, model_dir: str | None, quiet: bool):
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from service.batch.model_source import StandaloneModel, settings_for_model_dir
    from service.batch.runner import run_job

    local = settings_for_model_dir(settings, model_dir)
    model = StandaloneModel(local)
    runner = await model.start()
    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, cancel.set)
    loop.add_signal_handler(signal.SIGTERM, cancel.set)
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=_console(), disable=quiet) as bar:
            task = bar.add_task("lines 0", total=None)

            def on_progress(p) -> None:
                bar.update(
                    task,
                    total=p.bytes_total,
                    completed=p.bytes_read,
                    description=f"lines {p.lines} ok {p.predictions} errors {p.errors}",
                )

            return await run_job(spec, runner, local, on_progress=on_progress, cancel=cancel)
    finally:
        await model.close()


@batch_app.command("submit", epilog=EXAMPLES, context_settings={"allow_extra_args": True})
def submit(
    ctx: typer.Context,
    input_paths: Annotated[
        list[str],
        typer.Option(
            help="JSON-lines files: gs://, file:// or local; comma-separated, "
            "repeatable; wildcards * ? ** allowed."
        ),  # fmt: skip
    ],
    output_path: Annotated[str, typer.Option(help="Folder for prediction.results-* shards.")],
    data_format: Annotated[str, typer.Option(help="text (JSON lines); also JSON.")] = "text",
    model_dir: Annotated[
        str | None, typer.Option(help="SavedModel folder or model base (default: GLIMPSE_*).")
    ] = None,
    max_worker_count: Annotated[int, typer.Option(min=1, max=64)] = 4,
    batch_size: Annotated[int, typer.Option(min=1, max=1024)] = 64,
    job_id: Annotated[str | None, typer.Option(help="Default: glimpse_batch_<time>.")] = None,
    num_glimpses: Annotated[int, typer.Option(min=1, max=16)] = 6,
    top_k: Annotated[int, typer.Option(min=1, max=20)] = 5,
    annotated_image: Annotated[bool, typer.Option(help="Include the annotated image.")] = True,
    runner: Annotated[
        str, typer.Option(help="local, or beam (extra args after -- go to Beam).")
    ] = "local",  # fmt: skip
    url: Annotated[
        str | None, typer.Option(help="Create the job on this gateway instead.")
    ] = None,  # fmt: skip
    project: Annotated[str, typer.Option(help="Project in the jobs API path.")] = "local",
    wait: Annotated[bool, typer.Option(help="With --url: follow the job to its end.")] = False,
    token: Annotated[str | None, typer.Option(envvar="GLIMPSE_AUTH_TOKEN")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Run a batch prediction job (like `gcloud ai-platform jobs submit prediction`)."""
    from pydantic import ValidationError

    from service.batch.spec import JobSpec, new_job_id
    from service.schemas import PredictParameters
    from service.settings import GatewaySettings

    if data_format.lower() not in ("text", "json"):
        raise typer.BadParameter("only text (JSON lines) is supported", param_hint="--data-format")
    if runner not in ("local", "beam"):
        raise typer.BadParameter("local or beam", param_hint="--runner")
    try:
        params = PredictParameters(
            num_glimpses=num_glimpses, top_k=top_k, annotated_image=annotated_image
        )
        spec = JobSpec(
            job_id=job_id or new_job_id(),
            input_paths=_split(input_paths),
            output_path=output_path,
            batch_size=batch_size,
            max_worker_count=max_worker_count,
            parameters=params,
        )
    except ValidationError as e:
        raise typer.BadParameter(str(e)) from None
    if url:
        _submit_remote(url, project, token, spec, wait)
        return
    settings = GatewaySettings()
    from service.log_config import configure

    configure("text", "WARNING")
    if runner == "beam":
        try:  # the `beam` extra, imported only here
            from service.batch.pipeline import run_beam
        except ImportError as e:
            from rich.markup import escape

            _console().print(f"[red]error:[/red] {escape(str(e))}")
            raise typer.Exit(2) from None
        report = run_beam(spec, settings, model_dir, list(ctx.args))
    else:
        report = asyncio.run(_run_local(spec, settings, model_dir, quiet))
    _summary(report)
    typer.echo(report.model_dump_json())
    raise typer.Exit(EXIT.get(report.state.value, 1))


# -- the gateway's jobs API, through glimpse_client ----------------------------------------


@contextmanager
def _gateway(url: str, project: str, token: str | None) -> Iterator[Client]:
    """A client for the gateway's jobs API; an error answer is printed and exits 1."""
    from glimpse_client import Client, GlimpseError

    try:
        with Client(url, token, project=project, flavour="gateway", timeout=30) as client:
            yield client
    except GlimpseError as e:
        status = f" {e.status}" if e.status is not None else ""
        _console().print(f"[red]error{status}:[/red] {e.message}")
        raise typer.Exit(1) from None


def _follow(client: Client, job_id: str) -> Job:
    """Wait for the job to end, showing its progress on one line of stderr."""

    def show(job: Job) -> None:
        out = job.prediction_output
        lines, errors = (out.line_count, out.error_count) if out else (0, 0)
        progress = _training(job) or f"{lines} lines, {errors} errors"
        _console().print(f"{job.state}: {progress}", end="\r")

    return client.wait_job(job_id, timeout=None, poll_interval=1.0, on_poll=show)


def _training(job: Job) -> str | None:
    """A training job's progress or new version, from its answer; None for batch jobs."""
    if job.body.get("trainingInput") is None:
        return None
    out = job.body.get("trainingOutput") or {}
    path = (out.get("builtInAlgorithmOutput") or {}).get("modelPath")
    if path:
        return f"training: {path}"
    if not out.get("stage"):
        return "training"
    return f"training: {out['stage']} {out.get('photosDone')}/{out.get('photosTotal')}"


def _submit_remote(url: str, project: str, token: str | None, spec: JobSpec, wait: bool) -> None:
    params = spec.parameters
    with _gateway(url, project, token) as client:
        job = client.submit_job(
            spec.input_paths,
            spec.output_path,
            spec.job_id,
            num_glimpses=params.num_glimpses,
            top_k=params.top_k,
            annotated_image=params.annotated_image,
            batch_size=spec.batch_size,
            max_worker_count=spec.max_worker_count,
        )
        if wait:
            job = _follow(client, spec.job_id)
    typer.echo(json.dumps(job.body, indent=1))
    raise typer.Exit(EXIT.get(job.state, 0) if wait else 0)


Url = Annotated[str, typer.Option(help="The gateway, e.g. http://127.0.0.1:8080.")]
Project = Annotated[str, typer.Option(help="Project in the jobs API path.")]
Token = Annotated[str | None, typer.Option(envvar="GLIMPSE_AUTH_TOKEN")]


@batch_app.command(
    "status", epilog="Example:\n\n  glimpse batch status my_job --url http://127.0.0.1:8080 --wait"
)
def status(
    job_id: str,
    url: Url = "http://127.0.0.1:8080",
    project: Project = "local",
    token: Token = None,
    wait: Annotated[bool, typer.Option(help="Follow the job to its end.")] = False,
) -> None:
    """Show a job; the exit status follows its state once it has ended."""
    with _gateway(url, project, token) as client:
        job = _follow(client, job_id) if wait else client.get_job(job_id)
    typer.echo(json.dumps(job.body, indent=1))
    raise typer.Exit(EXIT.get(job.state, 0))


@batch_app.command("list", epilog="Example:\n\n  glimpse batch list --url http://127.0.0.1:8080")
def list_jobs(
    url: Url = "http://127.0.0.1:8080", project: Project = "local", token: Token = None
) -> None:
    """Jobs on a gateway, newest first."""
    with _gateway(url, project, token) as client:
        jobs = client.list_jobs()
    for job in jobs:
        out = job.prediction_output
        predictions, errors = (out.prediction_count, out.error_count) if out else (0, 0)
        shown = _training(job) or f"{predictions} predictions\t{errors} errors"
        typer.echo(f"{job.job_id}\t{job.state}\t{shown}")


@batch_app.command(
    "cancel", epilog="Example:\n\n  glimpse batch cancel my_job --url http://127.0.0.1:8080"
)
def cancel(
    job_id: str, url: Url = "http://127.0.0.1:8080", project: Project = "local", token: Token = None
) -> None:
    """Cancel a queued or running job; its output path is left as it was."""
    with _gateway(url, project, token) as client:
        client.cancel_job(job_id)
    typer.echo(f"cancel requested for {job_id}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(batch_app())
