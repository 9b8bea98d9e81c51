"""The `glimpse` console script: serve, export, classify, predict, batch and bench."""

from __future__ import annotations

import typer

from model_export.cli import app
from service import cli_bench, cli_predict
from service.batch.cli import batch_app

app.add_typer(batch_app, name="batch")
cli_predict.register(app)
cli_bench.register(app)


@app.command(
    "serve",
    epilog="""Examples:

  GLIMPSE_MODEL_DIR=models glimpse serve            # http://127.0.0.1:8080/docs

  PORT=9000 GLIMPSE_HOST=0.0.0.0 GLIMPSE_AUTH_TOKEN=s3cret glimpse serve

  GLIMPSE_BACKEND=tfserving GLIMPSE_TFSERVING_ADDRESS=localhost:8500 glimpse serve
""",
)
def serve() -> None:
    """Start the gateway (settings from GLIMPSE_* environment variables and PORT)."""
    import uvicorn

    from service.app import create_app
    from service.log_config import configure
    from service.settings import GatewaySettings

    settings = GatewaySettings()
    configure(settings.log_format, settings.log_level)
    typer.echo(
        f"glimpse: {settings.backend} backend, model {settings.model_name!r}; demo at "
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
