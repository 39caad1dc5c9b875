#!/usr/bin/env bash
# make build: both images, tagged with the git revision and latest; prints each image's size.
#   BASE_IMAGE (the CUDA PyTorch base), REVISION, EXTRA_CA (a PEM file to trust while building),
#   TRAIN_REPO / SERVE_REPO (image names).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BASE_IMAGE="${BASE_IMAGE:-pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime}"
REVISION="${REVISION:-$(git rev-parse --short HEAD 2>/dev/null || echo dev)}"
TRAIN_REPO="${TRAIN_REPO:-dogbreed-train}"
SERVE_REPO="${SERVE_REPO:-dogbreed-serve}"
die() { echo "build: $*" >&2; exit 1; }
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no docker daemon answers"

cleanup() { rm -f docker/certs/extra-ca.crt; }
trap cleanup EXIT
if [ -n "${EXTRA_CA:-}" ]; then
  [ -f "$EXTRA_CA" ] || die "EXTRA_CA file $EXTRA_CA not found"
  cp "$EXTRA_CA" docker/certs/extra-ca.crt
fi

for kind in train serve; do
  repo="$TRAIN_REPO"; [ "$kind" = serve ] && repo="$SERVE_REPO"
  echo "== $repo:$REVISION (FROM $BASE_IMAGE)"
  docker build -f "docker/Dockerfile.$kind" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --label "org.opencontainers.image.revision=$REVISION" \
    -t "$repo:$REVISION" -t "$repo:latest" . ${DOCKER_BUILD_ARGS:-}
done
for repo in "$TRAIN_REPO" "$SERVE_REPO"; do
  docker image inspect "$repo:$REVISION" --format "{{.Size}}" | awk -v r="$repo:$REVISION" '{printf "%s  %.2f GB\n", r, $1/1e9}'
done
