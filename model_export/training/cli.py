"""`glimpse train IMPORT_FILE --model-name NAME`: a head for the user's labels, as a new version.

Exit status as `glimpse batch`: 0 succeeded, 1 failed (the dataset or a photo limit, said on
stderr), 2 bad usage, 130 cancelled (Ctrl-C; nothing is left half-written).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

EXAMPLES = """Examples:

  glimpse train ../shared/data/superclasses-train.csv --model-name superclasses

  glimpse train gs://bucket/flowers.jsonl --model-name flowers --version 2

  glimpse train gs://bucket/big.csv --model-name parts --runner beam -- \\
      --runner=DataflowRunner --project=P --region=europe-west1 --temp_location=gs://b/tmp
"""


def _console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _summary(report) -> None:
    from rich.console import Console
    from rich.table import Table

    meta = report.evaluation["metadata"]
    console = Console()
    table = Table(title=f"{report.path}", title_justify="left")
    table.add_column("label", no_wrap=True, overflow="ellipsis", max_width=32)
    for name in ("training", "validation", "test", "precision", "recall"):
        table.add_column(name, justify="right", no_wrap=True)
    per_label = {r["displayName"]: r for r in meta["perLabel"]}
    counts = report.split_counts
    for label in report.labels:
        r = per_label[label]
        table.add_row(
            label,
            *(str(counts[label].get(s, 0)) for s in ("training", "validation", "test")),
            "-" if r["precision"] is None else f"{r['precision']:.2f}",
            "-" if r["recall"] is None else f"{r['recall']:.2f}",
        )
    console.print(table)

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    bars = "  ".join(f"T={t} {pct(v)}" for t, v in meta["glimpseTop1"].items())
    console.print(
        f"test top-1: glimpses {bars}; full image {pct(meta['fullImageTop1'])};"
        f" glimpses/full {meta['glimpseOverFull']}; distinct glimpses"
        f" {meta['distinctGlimpses']}; coverage {pct(meta['coverage'])}"
    )
    console.print(
        f"{sum(report.counts.values())} photos ({report.cached_photos} features and"
        f" {report.canvas_cached} glimpse canvases from cache,"
        f" {report.photos_per_second:.1f} photos/s extracted); {report.bad_lines} bad lines,"
        f" {len(report.bad_images)} unreadable photos, {report.duplicates} duplicates;"
        f" L2 C={report.chosen_c}; {report.seconds['total']:.0f} s"
    )
    for bad in report.bad_images[:20]:
        console.print(f"  skipped line {bad.line} ({bad.uri}): {bad.reason}", markup=False)


def train_command(
    import_file: Annotated[
        str, typer.Argument(help="Vertex AI import file (CSV or JSON Lines), local or gs://.")
    ],
    model_name: Annotated[str, typer.Option(help="The model to create (or add a version to).")],
    model_base: Annotated[
        Path, typer.Option(help="Model base path (TF Serving layout): writes NAME/VERSION/.")
    ] = Path("models"),
    version: Annotated[
        int | None,
        typer.Option(min=1, help="Version to write; needed to add one to an existing model."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Split and fit seed (results repeat for a seed).")] = 0,
    runner: Annotated[
        str, typer.Option(help="local, or beam: feature extraction as an Apache Beam pipeline.")
    ] = "local",
    cache_dir: Annotated[
        str | None,
        typer.Option(
            help="Feature cache, a folder or gs:// (default: GLIMPSE_FEATURE_CACHE or"
            " ~/.cache/glimpse/features)."
        ),
    ] = None,
    max_bad_fraction: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Fail above this share of bad lines and photos."),
    ] = 0.05,
    backbone: Annotated[str, typer.Option(help="lite0 (pretrained), or tiny (tests).")] = "lite0",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    beam_args: Annotated[
        list[str] | None, typer.Argument(help="Pipeline options after `--` (--runner beam).")
    ] = None,
) -> None:
    """Train a head on your labelled photos and export it as a new served version."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ chatter
    from model_export.training.import_file import DatasetError
    from model_export.training.trainer import Cancelled, Trainer, TrainingError, TrainSpec

    if runner not in ("local", "beam"):
        raise typer.BadParameter("local or beam", param_hint="--runner")
    if beam_args and runner != "beam":
        raise typer.BadParameter("pipeline options need --runner beam", param_hint="--")
    spec = TrainSpec(
        import_file=import_file,
        model_name=model_name,
        model_base=model_base,
        version=version,
        seed=seed,
        backbone=backbone,
        cache_dir=cache_dir,
        max_bad_fraction=max_bad_fraction,
        runner=runner,
        beam_args=tuple(beam_args or ()),
    )
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    tasks: dict[str, int] = {}
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=_console(), disable=quiet) as bar:

            def on_progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done)

            report = Trainer(spec, on_progress, cancel).run()
    except (TrainingError, DatasetError) as e:
        _console().print(f"glimpse train: {e}", markup=False)
        raise typer.Exit(1) from None
    except Cancelled:
        _console().print("glimpse train: cancelled; no version written", markup=False)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    _summary(report)


def register(app: typer.Typer) -> None:
    app.command("train", epilog=EXAMPLES)(train_command)
