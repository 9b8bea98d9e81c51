"""The `glimpse` console script: serve, export, train, classify, predict, batch and bench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from model_export.cli import app
from model_export.training import cli as train_cli
from service import cli_bench, cli_predict
from service.batch.cli import batch_app

app.add_typer(batch_app, name="batch")
cli_predict.register(app)
cli_bench.register(app)
train_cli.register(app)


@app.command(
    "serve",
    epilog="""Examples:

  GLIMPSE_MODEL_DIR=models glimpse serve            # every model under models/

  glimpse serve --model-config-file models.config   # TF Serving's model config file

  PORT=9000 GLIMPSE_HOST=0.0.0.0 GLIMPSE_AUTH_TOKEN=s3cret glimpse serve

  GLIMPSE_BACKEND=tfserving GLIMPSE_TFSERVING_ADDRESS=localhost:8500 glimpse serve
""",
)
def serve(
    model_config_file: Annotated[
        Path | None,
        typer.Option(
            help="TF Serving's model config file (text ModelServerConfig): the models to"
            " serve. Default: GLIMPSE_MODEL_CONFIG_FILE, else every model under"
            " GLIMPSE_MODEL_DIR.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Open Inference Protocol gRPC port (default: GLIMPSE_GRPC_PORT, else 8081;"
            " 0: any free port).",
        ),
    ] = None,
) -> None:
    """Start the gateway (settings from GLIMPSE_* environment variables and PORT)."""
    import uvicorn

    from service.app import create_app
    from service.log_config import configure
    from service.settings import GatewaySettings

    given: dict = {} if model_config_file is None else {"model_config_file": model_config_file}
    if grpc_port is not None:
        given["grpc_port"] = grpc_port
    settings = GatewaySettings(**given)
    configure(settings.log_format, settings.log_level)
    models = (
        f"the models of {settings.model_config_file}"
        if settings.model_config_file
        else f"every model under {settings.model_dir}/"
    )
    typer.echo(
        f"glimpse: {settings.backend} backend, {models}; demo at "
        f"http://{settings.host}:{settings.port}/, API docs at /docs"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        **settings.server_options(),
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
