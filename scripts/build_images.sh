#!/usr/bin/env bash
# make build: the three images, for linux/amd64 (SageMaker's platform, whatever this machine is), tagged with the git
# revision (immutable: what make push pushes) and latest (local convenience only); prints each image's size.
#   train      dogbreed-train       docker/Dockerfile.train      FROM BASE_IMAGE (the CUDA PyTorch base)
#   serve      dogbreed-serve       docker/Dockerfile.serve      FROM BASE_IMAGE: GPU instances
#   serve-cpu  dogbreed-serve-cpu   docker/Dockerfile.serve-cpu  FROM CPU_BASE_IMAGE (slim Python): CPU instances and
#                                   serverless; the CUDA image's torch/torchvision versions, no CUDA libraries
#   BASE_IMAGE / CPU_BASE_IMAGE (defaults from docker/base/versions.env), REVISION, EXTRA_CA (a PEM file to trust
#   while building), TRAIN_REPO / SERVE_REPO / SERVE_CPU_REPO (image names), IMAGES (which to build, default
#   "train serve serve-cpu"), TORCH_CPU_INDEX (serve-cpu: PyTorch's CPU-only wheels from that index instead of
#   PyPI's torch with its CUDA libraries stubbed; Dockerfile.serve-cpu), DOCKER_BUILD_ARGS (more build flags).
#
#   scripts/build_images.sh --revision    prints the default revision: the short commit, plus -dirty-<hash of the
#                                         uncommitted changes> when the tree differs from it (make build and make
#                                         push share this one definition).
# With BuildKit (buildx), the build writes no provenance or SBOM attestation, so that a push is one Docker v2
# schema 2 manifest (no OCI index), as SageMaker needs; the legacy builder never writes them.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

revision() {
  local rev
  rev="$(git rev-parse --short=7 HEAD 2>/dev/null)" || { echo dev; return; }
  # Dirty: changed or untracked (not ignored) files; a new module that is not yet added goes into the image too.
  if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    rev="$rev-dirty-$({ git diff HEAD --binary --; git ls-files -o --exclude-standard -z | xargs -0 -r sha256sum; } \
                       2>/dev/null | sha256sum | cut -c1-8)"
  fi
  echo "$rev"
}
if [ "${1:-}" = --revision ]; then
  revision
  exit 0
fi

pin() { sed -n "s/^$1=//p" docker/base/versions.env | tail -1; }
BASE_IMAGE="${BASE_IMAGE:-$(pin DEFAULT_BASE_IMAGE)}"
CPU_BASE_IMAGE="${CPU_BASE_IMAGE:-$(pin DEFAULT_CPU_BASE_IMAGE)}"
REVISION="${REVISION:-$(revision)}"
TRAIN_REPO="${TRAIN_REPO:-dogbreed-train}"
SERVE_REPO="${SERVE_REPO:-dogbreed-serve}"
SERVE_CPU_REPO="${SERVE_CPU_REPO:-dogbreed-serve-cpu}"
IMAGES="${IMAGES:-train serve serve-cpu}"
PLATFORM=linux/amd64
die() { echo "build: $*" >&2; exit 1; }
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no docker daemon answers"

cleanup() { rm -f docker/certs/extra-ca.crt; }
trap cleanup EXIT
if [ -n "${EXTRA_CA:-}" ]; then
  [ -f "$EXTRA_CA" ] || die "EXTRA_CA file $EXTRA_CA not found"
  cp "$EXTRA_CA" docker/certs/extra-ca.crt
fi

if docker buildx version >/dev/null 2>&1; then
  build=(docker buildx build --load --provenance=false --sbom=false)
else
  build=(docker build)
fi
repos=()
for kind in $IMAGES; do
  case "$kind" in
    train) repo="$TRAIN_REPO"; base="$BASE_IMAGE"; args=(--build-arg "BASE_IMAGE=$BASE_IMAGE") ;;
    serve) repo="$SERVE_REPO"; base="$BASE_IMAGE"; args=(--build-arg "BASE_IMAGE=$BASE_IMAGE") ;;
    serve-cpu)
      repo="$SERVE_CPU_REPO"; base="$CPU_BASE_IMAGE"; args=(--build-arg "CPU_BASE_IMAGE=$CPU_BASE_IMAGE")
      for key in BASE_TORCH_VERSION BASE_TORCHVISION_VERSION BASE_PYTHON_VERSION; do
        args+=(--build-arg "$key=$(pin "$key")")
      done
      args+=(--build-arg "TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-}") ;;
    *) die "IMAGES: unknown image '$kind' (train, serve, serve-cpu)" ;;
  esac
  echo "== $repo:$REVISION ($PLATFORM, FROM $base)"
  # shellcheck disable=SC2086  # DOCKER_BUILD_ARGS: several flags
  "${build[@]}" --platform "$PLATFORM" -f "docker/Dockerfile.$kind" "${args[@]}" \
    --label "org.opencontainers.image.revision=$REVISION" \
    -t "$repo:$REVISION" -t "$repo:latest" . ${DOCKER_BUILD_ARGS:-}
  repos+=("$repo")
done
# the images these tags held before are untagged now: drop them (and any other dangling image) so disks do not fill
docker image prune -f >/dev/null 2>&1 || true
for repo in "${repos[@]}"; do
  docker image inspect "$repo:$REVISION" --format "{{.Size}} {{.Os}}/{{.Architecture}}" \
    | awk -v r="$repo:$REVISION" '{printf "%s  %.2f GB  %s\n", r, $1/1e9, $2}'
done
