#!/usr/bin/env bash
# make push: push the training and serving images to ECR and print the image URIs the launchers use.
#
#   account from STS, region from AWS_REGION / AWS_DEFAULT_REGION (or the config), repositories created
#   if missing, `get-login-password | docker login --password-stdin`, tag, push.
#   BUILD=1 builds first (make build). REGISTRY overrides the ECR host (e.g. a registry mirror).
#   Every failure is one clear line on stderr and a non-zero exit.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
REVISION="${REVISION:-$(git rev-parse --short HEAD 2>/dev/null || echo dev)}"
TRAIN_REPO="${TRAIN_REPO:-dogbreed-train}"
SERVE_REPO="${SERVE_REPO:-dogbreed-serve}"
die() { echo "push: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no docker daemon answers (is dockerd running? are you in the docker group?)"
if [ "${BUILD:-0}" = 1 ]; then
  scripts/build_images.sh || die "the image build failed"
fi
for repo in "$TRAIN_REPO" "$SERVE_REPO"; do
  docker image inspect "$repo:$REVISION" >/dev/null 2>&1 || die "no local image $repo:$REVISION: run make build first"
done

region="$("$PY" -m dogbreed.launch.ecr region 2>&1)" || die "${region#ecr: }"
account="$("$PY" -m dogbreed.launch.ecr account 2>&1)" || die "cannot read the AWS account: ${account#ecr: }"
registry="${REGISTRY:-$account.dkr.ecr.$region.amazonaws.com}"

for repo in "$TRAIN_REPO" "$SERVE_REPO"; do
  out="$("$PY" -m dogbreed.launch.ecr ensure-repo "$repo" 2>&1)" || die "cannot create the ECR repository $repo: ${out#ecr: }"
done

password="$("$PY" -m dogbreed.launch.ecr login-password 2>/dev/null)" || die "cannot get an ECR login password (ecr:GetAuthorizationToken denied?)"
printf '%s' "$password" | docker login --username AWS --password-stdin "$registry" >/dev/null 2>&1 \
  || die "docker login to $registry failed"

uris=()
for repo in "$TRAIN_REPO" "$SERVE_REPO"; do
  for tag in "$REVISION" latest; do
    docker tag "$repo:$REVISION" "$registry/$repo:$tag" || die "docker tag failed"
    docker push "$registry/$repo:$tag" >/dev/null || die "docker push $registry/$repo:$tag failed"
  done
  uris+=("$registry/$repo:$REVISION")
done
echo "train_image_uri=${uris[0]}"
echo "serve_image_uri=${uris[1]}"
