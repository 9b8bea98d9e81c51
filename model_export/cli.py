"""`glimpse`: export the hard-attention model as a TF Serving SavedModel, or classify with it.

glimpse export --model-dir models                 # models/saccader/1/, pretrained Lite0
glimpse export --model-dir /tmp/m --variant tiny  # random weights, seconds, for tests
glimpse export --policy random --version 2        # a baseline, served side by side
glimpse classify photo.jpg --num-glimpses 4
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from model_export.config import POLICIES, SaccaderConfig

app = typer.Typer(add_completion=False, help="Glimpse: hard-attention ImageNet classifier.")

ModelDir = Annotated[Path, typer.Option(help="Model base path (TF Serving layout).")]
Version = Annotated[int, typer.Option(min=1, help="Numeric version directory.")]


@app.command(
    "export",
    epilog="""Examples:

  glimpse export --model-dir models                 # models/saccader/1/, pretrained Lite0

  glimpse export --model-dir /tmp/m --variant tiny  # random weights, seconds, for tests

  glimpse export --policy random --version 2        # a baseline, served side by side

  glimpse export --name saccader-fast --where-size 128 --canvas-size 160  # cheaper, less accurate
""",
)
def export_command(
    model_dir: ModelDir = Path("models"),
    version: Version = 1,
    variant: Annotated[str, typer.Option(help="lite0 (pretrained) or tiny (random).")] = "lite0",
    policy: Annotated[str, typer.Option(help=f"One of {', '.join(POLICIES)}.")] = "cam",
    glimpse_size: Annotated[int, typer.Option(help="Glimpse side in view px.")] = (
        SaccaderConfig.glimpse_size
    ),
    min_new_fraction: Annotated[
        float, typer.Option(help="New pixels each glimpse after the focus region must add.")
    ] = SaccaderConfig.min_new_fraction,
    where_size: Annotated[
        int, typer.Option(help="The where pass's input side (cheaper below 224, less accurate).")
    ] = SaccaderConfig.where_size,
    canvas_size: Annotated[
        int, typer.Option(help="The what pass's canvas side (cheaper below 224, less accurate).")
    ] = SaccaderConfig.canvas_size,
    annotated_format: Annotated[
        str, typer.Option(help="The annotated picture's encoding: jpeg or png.")
    ] = SaccaderConfig.annotated_format,
    name: Annotated[str, typer.Option(help="Model name: the folder under --model-dir.")] = (
        "saccader"
    ),
    if_missing: Annotated[
        bool, typer.Option(help="Keep an existing export made by this exporter.")
    ] = False,
) -> None:
    """Export `<model_dir>/<name>/<version>/`."""
    target = model_dir / name / str(version)
    try:
        cfg = SaccaderConfig(
            variant=variant,
            policy=policy,  # type: ignore[arg-type]  # validated by SaccaderConfig
            glimpse_size=glimpse_size,
            min_new_fraction=min_new_fraction,
            where_size=where_size,
            canvas_size=canvas_size,
            annotated_format=annotated_format,  # type: ignore[arg-type]  # validated there
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if if_missing and (target / "saved_model.pb").exists():
        from model_export.signatures import stale_reason

        reason = stale_reason(target, cfg)
        if reason is None:
            typer.echo(f"{target} exists; reusing it")
            return
        typer.echo(f"{target} {reason}; exporting it again")
        shutil.rmtree(target)
    from model_export.signatures import build, export  # TensorFlow only when exporting

    path = export(build(cfg), model_dir, version, name)
    typer.echo(f"exported {cfg} to {path}")


@app.command(
    "classify",
    epilog="""Examples:

  glimpse classify photo.jpg --num-glimpses 4

  glimpse classify photos/*.jpg --model-dir models --version 2
""",
)
def classify_command(
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, GIF, BMP).")],
    model_dir: ModelDir = Path("models"),
    version: Version = 1,
    num_glimpses: Annotated[int, typer.Option(min=1, max=16)] = 6,
) -> None:
    """Classify images in-process with the exported model; print class, glimpses, coverage."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(model_dir / "saccader" / str(version))).signatures[
        "serving_options"
    ]
    for path in images:
        out = fn(
            input_image_bytes=tf.constant([path.read_bytes()]),
            num_glimpses=tf.constant([num_glimpses]),
            top_k=tf.constant([1]),
        )
        name = out["class_names"][0, 0].numpy().decode()
        full = out["full_image_name"][0].numpy().decode()
        boxes = out["glimpse_boxes"][0].numpy().astype(int).tolist()
        typer.echo(
            f"{path.name}: {name} ({float(out['scores'][0, 0]):.2f}) from "
            f"{float(out['coverage'][0]):.0%} of the view; full image says {full}; "
            f"glimpses (ymin, xmin, ymax, xmax in the 224 view): {boxes}"
        )


def main() -> None:
    app()
