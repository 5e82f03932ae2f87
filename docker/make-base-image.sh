#!/usr/bin/env bash
# Makes the Dockerfile's base image when it is not already there: `docker pull` it, and where no image
# registry answers, build a stand-in from Debian's packages with mmdebstrap (what the official
# debian:bookworm-slim is: a minbase bookworm without docs, man pages and locales, CMD bash).
# Usage: docker/make-base-image.sh [IMAGE]   (default debian:bookworm-slim; DOCKER overrides the client)
set -euo pipefail
IMAGE="${1:-debian:bookworm-slim}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
DOCKER="${DOCKER:-docker}"

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE: present"
    exit 0
fi
if timeout 300 "$DOCKER" pull "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE: pulled"
    exit 0
fi
echo "base image $IMAGE: no registry answered; building a stand-in from Debian's $SUITE packages"
if ! command -v mmdebstrap >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "error: mmdebstrap is missing; install it (apt-get install mmdebstrap)" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi
# The slim variant's dpkg filters and the official image's apt settings (no caches, no downloaded packages kept,
# no translations), so the stand-in is the same size and shape and behaves the same under a Dockerfile.
APT_CONF='Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\nAPT::Keep-Downloaded-Packages "false";\n'
mmdebstrap --variant=minbase --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="printf '$APT_CONF' > \"\$1/etc/apt/apt.conf.d/docker-clean\"" \
    --customize-hook="echo 'Acquire::Languages \"none\";' > \"\$1/etc/apt/apt.conf.d/docker-no-languages\"" \
    --customize-hook="echo 'Acquire::GzipIndexes \"true\";' > \"\$1/etc/apt/apt.conf.d/docker-gzip-indexes\"" \
    --customize-hook='rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap" "$1"/var/cache/apt/*.bin' \
    "$SUITE" - \
    "deb $MIRROR $SUITE main" \
    "deb $MIRROR $SUITE-updates main" \
    "deb ${MIRROR%/debian}/debian-security $SUITE-security main" \
  | "$DOCKER" import --change 'CMD ["bash"]' --message "stand-in for $IMAGE, mmdebstrap $SUITE minbase" - "$IMAGE" >/dev/null
echo "base image $IMAGE: built from Debian's packages ($("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
