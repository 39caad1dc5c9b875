#!/usr/bin/env bash
# A local stand-in for the CUDA PyTorch base image, for machines that cannot pull from Docker Hub
# (offline CI, air-gapped users): Debian from its packages (debootstrap -> docker import), a Python
# venv, and the pinned torch + torchvision from PyPI (the CUDA build: it runs on CPUs too).
#
#   scripts/build_local_base.sh [TAG] [EXTRA_CA_FILE]
#
# EXTRA_CA_FILE: a PEM certificate to trust, for a TLS-intercepting proxy between the build and PyPI.
# The Debian mirror is the one this machine's apt uses (or DEBIAN_MIRROR).
set -euo pipefail
TAG="${1:-dogbreed-base:local}"
EXTRA_CA="${2:-${EXTRA_CA:-}}"
SUITE="${DEBIAN_SUITE:-bookworm}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
die() { echo "build_local_base: $*" >&2; exit 1; }

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
  echo "== debootstrap $SUITE from $mirror"
  debootstrap --variant=minbase \
    --include=ca-certificates,python3,python3-venv,python3-dev,python3-pip \
    "$SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  echo "== docker import -> $ROOTFS_TAG"
  tar -C "$work/rootfs" -c . | docker import - "$ROOTFS_TAG" >/dev/null
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$ROOT/docker/base/Dockerfile" "$ctx/Dockerfile"
grep -E '^(torch|torchvision|numpy)==' "$ROOT/requirements/constraints.txt" >"$ctx/torch-pins.txt"
mkdir -p "$ctx/certs"
if [ -n "$EXTRA_CA" ]; then
  [ -f "$EXTRA_CA" ] || die "extra CA file $EXTRA_CA not found"
  cp "$EXTRA_CA" "$ctx/certs/extra-ca.crt"
fi
echo "== docker build $TAG"
docker build --build-arg "ROOTFS=$ROOTFS_TAG" -t "$TAG" "$ctx"
docker image inspect "$TAG" --format "$TAG: {{.Size}} bytes" | awk '{printf "%s %.2f GB\n", $1, $2/1e9}'
