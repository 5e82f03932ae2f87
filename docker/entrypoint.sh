#!/bin/sh
# The image's entry point: `python -m server --config_path /workspace/config.json --port 9000 --host 0.0.0.0`,
# with any extra arguments passed through (a later flag wins, e.g. `--device GPU` or `--port 9100`).
# Environment (all optional): CONFIG_PATH, PORT, HOST, PYTHON, APP_DIR; the server itself reads MODEL_PATH,
# DEVICE, OV_CACHE_DIR, LOG_LEVEL. Outside Docker, point CONFIG_PATH and MODEL_PATH at a servable and a model.
set -eu

APP_DIR="${APP_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
CONFIG_PATH="${CONFIG_PATH:-/workspace/config.json}"

if [ ! -f "$CONFIG_PATH" ]; then
    echo "error: no servable config at $CONFIG_PATH; mount one, e.g. -v \$PWD/servable_stream:/workspace" >&2
    exit 2
fi

cd "$APP_DIR"
# exec: the server becomes PID 1 and gets SIGTERM itself, so `docker stop` drains running calls.
exec "${PYTHON:-python}" -m server \
    --config_path "$CONFIG_PATH" \
    --port "${PORT:-9000}" \
    --host "${HOST:-0.0.0.0}" \
    "$@"
