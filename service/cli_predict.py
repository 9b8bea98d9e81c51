"""`glimpse predict IMAGE...`: classify photos with a running service through glimpse_client.

One request per photo, so one unreadable or rejected photo is reported on its own line and the
others still get their answers. Exit status: 0 every photo classified, 1 some failed (each
named on stderr), 2 bad usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from glimpse_client import ClassScore, Glimpse, Prediction

EXAMPLES = """
Examples:

  glimpse predict cat.jpg                                   # against http://127.0.0.1:8080

  glimpse predict photos/*.jpg --out annotated/ --num-glimpses 4 --top-k 3

  glimpse predict cat.jpg --url http://tfserving:8501 --flavour tfserving

  GLIMPSE_AUTH_TOKEN=... glimpse predict cat.jpg --url https://glimpse.example.com --json
"""


def _annotated_path(out: Path, image: Path, fmt: str, taken: set[Path]) -> Path:
    """`<out>/<stem>.glimpses.<ext>`, numbered when two inputs share a stem."""
    ext = "jpg" if fmt == "jpeg" else "png"
    path, n = out / f"{image.stem}.glimpses.{ext}", 1
    while path in taken:
        n += 1
        path = out / f"{image.stem}-{n}.glimpses.{ext}"
    taken.add(path)
    return path


def class_text(c: ClassScore) -> str:
    """The label, then the synset on a line of its own (one wide column would take the width
    the file name and glimpses need); models with their own labels ("dog", "vehicle") have no
    synset, so nothing follows, and a model without names still says which class it is."""
    label = c.label or c.synset or f"class {c.index}"
    return f"{label}\n({c.synset})" if c.synset and c.synset != label else label


def glimpse_text(g: Glimpse) -> str:
    """`1: y40-104 x144-208 100%`: spaces only between parts that read on their own, so that a
    narrow column wraps a glimpse into whole ranges, never through a number."""
    box = g.box
    return (
        f"{g.order}: y{box.ymin:.0f}-{box.ymax:.0f} x{box.xmin:.0f}-{box.xmax:.0f} "
        f"{g.new_pixels:.0%}"
    )


def predictions_table(out: Path | None = None) -> Table:
    """The table `predict` prints. Class and score never wrap; in an 80- or 100-column
    terminal the file name is shortened (…) and the glimpses wrap, so that the answer shows
    whole (rich takes width from wrappable columns first)."""
    from rich.table import Table

    caption = None if out is None else f"annotated images in {out}"
    table = Table(title="glimpse predict", caption=caption)
    table.add_column("file", overflow="ellipsis")
    table.add_column("class", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("coverage", justify="right", no_wrap=True)
    table.add_column("glimpses (view px, new pixels)", overflow="ellipsis")
    if out is not None:
        table.add_column("annotated", overflow="ellipsis")
    return table


def prediction_row(image: Path, p: Prediction) -> list[Text]:
    """One photo's cells, as plain text (a label or file name is never read as rich markup).
    The file's name only: its full path would take the width from the answer."""
    from rich.text import Text

    cells = [
        image.name,
        class_text(p.top_class),
        f"{p.top_class.score:.3f}",
        f"{p.coverage:.0%}",
        "\n".join(glimpse_text(g) for g in p.glimpses),
    ]
    return [Text(c) for c in cells]


def predict_command(
    images: Annotated[
        list[Path], typer.Argument(help="Photos (JPEG, PNG, WebP, BMP, GIF).", show_default=False)
    ],
    url: Annotated[
        str, typer.Option(envvar="GLIMPSE_URL", help="The gateway or a TF Serving REST endpoint.")
    ] = "http://127.0.0.1:8080",
    out: Annotated[
        Path | None,
        typer.Option(file_okay=False, help="Write the annotated images here (created)."),
    ] = None,
    num_glimpses: Annotated[int, typer.Option(min=1, max=16)] = 6,
    top_k: Annotated[
        int | None,
        typer.Option(min=1, max=20, help="Classes listed per photo (default 5, or all if fewer)."),
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="GLIMPSE_AUTH_TOKEN", help="Bearer token.")
    ] = None,
    model: Annotated[str, typer.Option(help="Served model name.")] = "saccader",
    flavour: Annotated[
        str, typer.Option(help="auto, gateway or tfserving (auto asks the service).")
    ] = "auto",
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per request.")] = 60.0,
    retries: Annotated[
        int, typer.Option(min=0, help="Retries of 429/503 answers (Retry-After honoured).")
    ] = 2,
    json_lines: Annotated[
        bool,
        typer.Option("--json", help="One JSON prediction per line on stdout instead of a table."),
    ] = False,
) -> None:
    """Classify photos with a running service (gateway or TF Serving).

    Prints the class, score, coverage and glimpses (boxes in the 224x224 view) per photo;
    --out writes the annotated images. Exit status 0: all classified, 1: some failed (named on
    stderr), 2: bad usage.
    """
    from rich.console import Console
    from rich.progress import Progress
    from rich.text import Text

    from glimpse_client import Client, GlimpseError

    if flavour not in ("auto", "gateway", "tfserving"):
        raise typer.BadParameter("auto, gateway or tfserving", param_hint="--flavour")
    stdout, stderr = Console(), Console(stderr=True)
    table = predictions_table(out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[Path, str]] = []
    taken: set[Path] = set()
    client = Client(
        url,
        token,
        model,
        flavour=flavour,  # type: ignore[arg-type]  # checked above
        timeout=timeout,
        retries=retries,
    )
    with client, Progress(console=stderr, transient=True, disable=len(images) < 2) as bar:
        task = bar.add_task("predicting", total=len(images))
        for image in images:
            bar.advance(task)
            try:
                p = client.predict(
                    image, num_glimpses, top_k, key=image.name, annotated_image=out is not None
                )
            except OSError as e:
                failed.append((image, e.strerror or str(e)))
                continue
            except GlimpseError as e:
                failed.append((image, str(e)))
                if e.status is None:  # nothing answers: the other photos would fail the same
                    failed += [(i, "not sent") for i in images[images.index(image) + 1 :]]
                    break
                continue
            if json_lines:
                stdout.print_json(p.model_dump_json(exclude={"annotated_image"}), indent=None)
            row = prediction_row(image, p)
            if out is not None and p.annotated_image is not None:
                fmt = p.annotated_image_format or "jpeg"
                saved = p.save_annotated(_annotated_path(out, image, fmt, taken))
                row.append(Text(saved.name))  # in `out`, which the caption names
            table.add_row(*row)
    if not json_lines and table.row_count:
        stdout.print(table)
    for image, message in failed:
        stderr.print(f"[red]{image}[/red]: {message}", highlight=False)
    if failed:
        stderr.print(f"{len(failed)} of {len(images)} failed")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("predict", epilog=EXAMPLES)(predict_command)
