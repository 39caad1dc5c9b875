#!/usr/bin/env bash
# A local stand-in for the default CUDA PyTorch base image (BASE_IMAGE, pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime),
# for machines that cannot pull from Docker Hub (offline CI, air-gapped users), built as its twin: Debian from its
# packages (debootstrap -> docker import), a Python venv of the same minor version, and the same torch + torchvision
# from PyPI (the CUDA build: it runs on CPUs too), installed inside the container.
#
#   scripts/build_local_base.sh [TAG] [EXTRA_CA_FILE]
#   scripts/build_local_base.sh --cpu [TAG] [EXTRA_CA_FILE]
#       the twin of the CPU serving image's base instead (DEFAULT_CPU_BASE_IMAGE, python:3.11-slim-bookworm;
#       default tag dogbreed-base-cpu:local): the same rootfs and Python minor, no torch (docker/base/Dockerfile.cpu).
#
# The versions live in ONE place, docker/base/versions.env (the tests read it too). Where they were read, in the real
# image's published build definition (github.com/pytorch/pytorch):
#   - .github/workflows/docker-release.yml runs `make -f docker.Makefile runtime-image` on the release tag (v2.9.1),
#     PYTORCH_VERSION from .github/scripts/generate_pytorch_version.py --no-build-suffix -> 2.9.1;
#   - docker.Makefile tags the runtime image $(PYTORCH_VERSION)-cuda$(CUDA_VERSION_SHORT)-cudnn$(CUDNN_VERSION)-runtime
#     (2.9.1-cuda12.8-cudnn9-runtime) and passes PYTHON_VERSION ?= 3.11 (docker-release.yml does not override it);
#   - Dockerfile: `ARG PYTHON_VERSION=3.11`, `conda install -y python=${PYTHON_VERSION}` (the 2.9 release build ran
#     `conda install -y python=3.11 conda=25.7.0`, pytorch/pytorch#164575 and #164774), then pip installs
#     `torch torchvision torchaudio` from download.pytorch.org/whl/cu128: torch 2.9.1 with torchvision 0.24.1.
# Python 3.11 is Debian bookworm's python3 (BASE_DEBIAN_SUITE); the build fails if the suite's python3 is another minor.
#
# EXTRA_CA_FILE: a PEM certificate to trust, for a TLS-intercepting proxy between the build and PyPI.
# The Debian mirror is the one this machine's apt uses (or DEBIAN_MIRROR). The image is linux/amd64 (as SageMaker's).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CPU=0
if [ "${1:-}" = --cpu ]; then
  CPU=1
  shift
fi
if [ "$CPU" = 1 ]; then TAG="${1:-dogbreed-base-cpu:local}"; else TAG="${1:-dogbreed-base:local}"; fi
EXTRA_CA="${2:-${EXTRA_CA:-}}"
die() { echo "build_local_base: $*" >&2; exit 1; }

# the pins: KEY=VALUE lines of docker/base/versions.env (read, not sourced)
pin() {
  local value
  value="$(sed -n "s/^$1=//p" "$ROOT/docker/base/versions.env" | tail -1)"
  [ -n "$value" ] || die "$1 is missing from docker/base/versions.env"
  printf '%s' "$value"
}
DEFAULT_BASE_IMAGE="$(pin DEFAULT_BASE_IMAGE)"
BASE_TORCH_VERSION="$(pin BASE_TORCH_VERSION)"
BASE_TORCHVISION_VERSION="$(pin BASE_TORCHVISION_VERSION)"
BASE_PYTHON_VERSION="$(pin BASE_PYTHON_VERSION)"
DEFAULT_CPU_BASE_IMAGE="$(pin DEFAULT_CPU_BASE_IMAGE)"
SUITE="${DEBIAN_SUITE:-$(pin BASE_DEBIAN_SUITE)}"

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no docker daemon answers (scripts/start_dockerd.sh starts one)"
command -v debootstrap >/dev/null || die "debootstrap is not installed: apt-get install debootstrap"

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(grep -rhoE '^(URIs:|deb) +[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
            | awk '{print $2}' | head -1 || true)"
fi
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt; set DEBIAN_MIRROR"

ROOTFS_TAG="dogbreed-debian-rootfs:${SUITE}"
if ! docker image inspect "$ROOTFS_TAG" >/dev/null 2>&1; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  echo "== debootstrap $SUITE (amd64) from $mirror"
  debootstrap --arch=amd64 --variant=minbase \
    --include=ca-certificates,python3,python3-venv,python3-dev,python3-pip \
    "$SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  echo "== docker import -> $ROOTFS_TAG"
  tar -C "$work/rootfs" -c . | docker import --platform linux/amd64 - "$ROOTFS_TAG" >/dev/null
  rm -rf "$work"
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
if [ "$CPU" = 1 ]; then
  cp "$ROOT/docker/base/Dockerfile.cpu" "$ctx/Dockerfile"
else
  cp "$ROOT/docker/base/Dockerfile" "$ctx/Dockerfile"
fi
mkdir -p "$ctx/certs"
if [ -n "$EXTRA_CA" ]; then
  [ -f "$EXTRA_CA" ] || die "extra CA file $EXTRA_CA not found"
  cp "$EXTRA_CA" "$ctx/certs/extra-ca.crt"
fi
if [ "$CPU" = 1 ]; then
  echo "== docker build $TAG: twin of $DEFAULT_CPU_BASE_IMAGE (Python $BASE_PYTHON_VERSION, no torch)"
  pins=(--build-arg "DEFAULT_CPU_BASE_IMAGE=$DEFAULT_CPU_BASE_IMAGE")
else
  echo "== docker build $TAG: twin of $DEFAULT_BASE_IMAGE (torch $BASE_TORCH_VERSION, torchvision $BASE_TORCHVISION_VERSION, Python $BASE_PYTHON_VERSION)"
  pins=(--build-arg "DEFAULT_BASE_IMAGE=$DEFAULT_BASE_IMAGE" --build-arg "BASE_TORCH_VERSION=$BASE_TORCH_VERSION"
        --build-arg "BASE_TORCHVISION_VERSION=$BASE_TORCHVISION_VERSION")
fi
docker build --platform linux/amd64 --build-arg "ROOTFS=$ROOTFS_TAG" --build-arg "BASE_PYTHON_VERSION=$BASE_PYTHON_VERSION" \
  "${pins[@]}" -t "$TAG" "$ctx"
# a rebuild leaves the previous base untagged: drop it (and any other dangling image) so that disks do not fill
docker image prune -f >/dev/null 2>&1 || true
docker image inspect "$TAG" --format "$TAG: {{.Size}} bytes" | awk '{printf "%s %.2f GB\n", $1, $2/1e9}'
