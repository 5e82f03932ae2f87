# syntax=docker/dockerfile:1
# The LLM gRPC server (OpenVINO) for CPU or Intel GPU.
#   make docker-build                  (docker build -t llm-grpc-server .)
#   CPU-only PyTorch, a much smaller image:
#     docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t llm-grpc-server .
#   docker run -p 9000:9000 -v $PWD/servable_stream:/workspace -v $PWD/models/NAME:/model llm-grpc-server
#   Intel GPU: add  --device /dev/dri --group-add=$(stat -c "%g" /dev/dri/render*)  and pass  --device GPU
# Extra arguments after the image name go to `python -m server` (a later flag wins over the entry point's).
FROM python:3.11-slim-bookworm

# A failing command anywhere in a pipe fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Intel GPU compute runtime from Debian bookworm: the OpenCL ICD that OpenVINO's GPU plugin drives, the ICD
# loader, and the Level Zero loader (bookworm ships no Level Zero GPU driver, intel-level-zero-gpu; OpenVINO's
# GPU plugin works through OpenCL). Versions are bookworm/main's (`apt-cache policy intel-opencl-icd`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        intel-opencl-icd=22.43.24595.41-1 \
        ocl-icd-libopencl1=2.3.1-1 \
        libze1=1.8.12-1 \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    MODEL_PATH=/model \
    OV_CACHE_DIR=/cache

WORKDIR /app

# Dependencies in their own layer, rebuilt only when requirements.txt changes. The test-only pins (from the
# "# tests" line on) stay out of the image. With TORCH_INDEX_URL set, the pinned torch and torchvision come
# from that index first (e.g. CPU-only wheels, version 2.14.1+cpu, which satisfies the pin torch==2.14.1);
# their own dependencies and everything else then come from PyPI.
ARG TORCH_INDEX_URL=""
COPY requirements.txt .
RUN sed '/^# tests/,$d' requirements.txt > /tmp/requirements-runtime.txt \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
        grep -E '^(torch|torchvision)==' /tmp/requirements-runtime.txt \
        | xargs pip install --no-deps --index-url "$TORCH_INDEX_URL"; \
    fi \
 && pip install -r /tmp/requirements-runtime.txt \
 && rm /tmp/requirements-runtime.txt

# The gRPC stubs are generated from the contract at build time (`make proto`), never copied in.
COPY proto/ proto/
RUN python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. proto/llm.proto

COPY server/ server/
COPY client/ client/
COPY modelprep/ modelprep/
COPY download_model.py compress_model.py ./
COPY docker/ docker/
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

EXPOSE 9000

# Loading and compiling a large model can take minutes: a long start period, checked every 5 s meanwhile.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10m --start-interval=5s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "--timeout", "5"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
