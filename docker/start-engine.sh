#!/usr/bin/env bash
# Makes sure a Docker engine answers: if none does and we are root, installs Debian's docker.io when dockerd
# is missing and starts dockerd in the background (log: /var/log/dockerd.log). Exits non-zero, saying why,
# when no engine can be had. DOCKER overrides the client.
set -euo pipefail
DOCKER="${DOCKER:-docker}"

answers() { command -v "$DOCKER" >/dev/null && "$DOCKER" info >/dev/null 2>&1; }

if answers; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: no Docker engine answers ($DOCKER info) and only root may start one here" >&2
    exit 1
fi
if ! command -v dockerd >/dev/null || [ ! -x /usr/bin/docker ]; then
    echo "docker: installing Debian's docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
# A dockerd (or its containerd) that was killed, e.g. with the machine's previous session, leaves its pid file;
# a new dockerd refuses to start while it exists.
# Its number may since belong to another process: what counts is whether that process is dockerd/containerd.
for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    if [ -f "$pidfile" ] && ! grep -qs -e dockerd -e containerd "/proc/$(cat "$pidfile")/comm"; then
        echo "docker: removing the stale $pidfile"
        rm -f "$pidfile"
    fi
done
echo "docker: starting dockerd"
setsid nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
for _ in $(seq 60); do
    answers && exit 0
    sleep 1
done
echo "error: dockerd did not answer within 60 s; its log:" >&2
tail -n 20 /var/log/dockerd.log >&2
exit 1
