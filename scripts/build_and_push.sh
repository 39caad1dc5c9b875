#!/usr/bin/env bash
# make push: push the training image and both serving images (CUDA: dogbreed-serve, CPU: dogbreed-serve-cpu) to ECR
# and print the image URIs the launchers use (train_image_uri, serve_image_uri, serve_image_cpu_uri).
#   IMAGES: which of them (default "train serve serve-cpu", as make build builds them).
#
#   account from STS; region as the launchers take it: `region` in the config, then AWS_REGION / AWS_DEFAULT_REGION
#   (DOGBREED_CONFIG, or ./dogbreed.toml: the file the launchers read), or the AWS profile's; repositories created if
#   missing, `get-login-password | docker login --password-stdin`, tag, push.
#   The tag is immutable: the git revision (REVISION; default `scripts/build_images.sh --revision`: the short commit,
#   plus -dirty-<hash of the changes> for a tree with uncommitted changes), never latest. The repositories are
#   created IMMUTABLE (one found MUTABLE is named, with the command that changes it). A tag the registry already
#   holds is not pushed again: the same image is reported as pushed, another image under it is refused.
#   The images must be linux/amd64, and each pushed manifest must be a Docker v2 schema 2 manifest (no OCI index, no
#   attestation): SageMaker refuses anything else, so the push checks what the registry holds.
#   BUILD=1 builds first (make build). REGISTRY overrides the ECR host (e.g. a registry mirror).
#   Every failure is one clear line on stderr (with the tool's own error) and a non-zero exit.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
die() { echo "push: $*" >&2; exit 1; }
# a tool's (multi-line) error output as one line
oneline() { printf '%s' "$1" | sed '/^[[:space:]]*$/d' | tr '\n' ' ' | sed 's/[[:space:]]\+/ /g; s/ $//'; }
# the config file is looked up from where the user runs make push (a relative DOGBREED_CONFIG too)
if [ -n "${DOGBREED_CONFIG:-}" ]; then
  case "$DOGBREED_CONFIG" in /*) ;; *) DOGBREED_CONFIG="$PWD/$DOGBREED_CONFIG" ;; esac
  export DOGBREED_CONFIG
elif [ -f dogbreed.toml ]; then
  export DOGBREED_CONFIG="$PWD/dogbreed.toml"
fi
cd "$ROOT" || die "cannot enter $ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
REVISION="${REVISION:-$(scripts/build_images.sh --revision)}"
TRAIN_REPO="${TRAIN_REPO:-dogbreed-train}"
SERVE_REPO="${SERVE_REPO:-dogbreed-serve}"
SERVE_CPU_REPO="${SERVE_CPU_REPO:-dogbreed-serve-cpu}"
IMAGES="${IMAGES:-train serve serve-cpu}"
PLATFORM=linux/amd64
DOCKER_V2=application/vnd.docker.distribution.manifest.v2+json

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no docker daemon answers (is dockerd running? are you in the docker group?)"
[ "$REVISION" != latest ] || die "REVISION=latest is not an immutable tag: give a revision"
repos=()
names=()  # the name of each image's output line
for kind in $IMAGES; do
  case "$kind" in
    train) repos+=("$TRAIN_REPO"); names+=(train_image_uri) ;;
    serve) repos+=("$SERVE_REPO"); names+=(serve_image_uri) ;;
    serve-cpu) repos+=("$SERVE_CPU_REPO"); names+=(serve_image_cpu_uri) ;;
    *) die "IMAGES: unknown image '$kind' (train, serve, serve-cpu)" ;;
  esac
done
[ "${#repos[@]}" -gt 0 ] || die "IMAGES names no image"
if [ "${BUILD:-0}" = 1 ]; then
  REVISION="$REVISION" IMAGES="$IMAGES" scripts/build_images.sh >&2 || die "the image build failed"
fi
for repo in "${repos[@]}"; do
  platform="$(docker image inspect "$repo:$REVISION" --format '{{.Os}}/{{.Architecture}}' 2>/dev/null)" \
    || die "no local image $repo:$REVISION: run make build first"
  [ "$platform" = "$PLATFORM" ] || die "$repo:$REVISION is $platform; SageMaker runs $PLATFORM (make build builds it)"
done

errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
region="$("$PY" -m dogbreed.launch.ecr region 2>"$errors")" || die "$(oneline "$(sed 's/^ecr: //' "$errors")")"
export AWS_REGION="$region"  # every step below (and docker login's registry) uses this one region
account="$("$PY" -m dogbreed.launch.ecr account 2>&1)" || die "cannot read the AWS account: ${account#ecr: }"
registry="${REGISTRY:-$account.dkr.ecr.$region.amazonaws.com}"

for repo in "${repos[@]}"; do
  "$PY" -m dogbreed.launch.ecr ensure-repo "$repo" >/dev/null 2>"$errors" \
    || die "cannot create the ECR repository $repo: $(oneline "$(sed 's/^ecr: //' "$errors")")"
  cat "$errors" >&2  # what it said: created, or a repository whose tags are MUTABLE
done

password="$("$PY" -m dogbreed.launch.ecr login-password 2>/dev/null)" || die "cannot get an ECR login password (ecr:GetAuthorizationToken denied?)"
out="$(printf '%s' "$password" | docker login --username AWS --password-stdin "$registry" 2>&1)" \
  || die "docker login to $registry failed: $(oneline "$out")"

insecure=()
case "$registry" in 127.*|localhost|localhost:*) insecure=(--insecure) ;; esac  # a loopback registry speaks http
# The config digest of the image a tag already holds in the registry (the local image's id, where it is the same
# image); fails where the tag is not there.
pushed_config() {
  docker manifest inspect "${insecure[@]}" "$1" 2>/dev/null \
    | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["config"]["digest"])' 2>/dev/null
}
uris=()
for repo in "${repos[@]}"; do
  uri="$registry/$repo:$REVISION"
  docker tag "$repo:$REVISION" "$uri" || die "docker tag $uri failed"
  if pushed="$(pushed_config "$uri")"; then
    # The tag is immutable: the same image again is already there (ECR would refuse the tag's second push);
    # another image under the same revision is refused here in one line.
    [ "$pushed" = "$(docker image inspect "$repo:$REVISION" --format '{{.Id}}')" ] \
      || die "$uri already holds another image (config $pushed) and its tag is immutable: uncommitted changes, other build arguments, or a rebuild elsewhere (docker builds are not byte-for-byte reproducible); push the changes as a new commit, or this build as REVISION=<revision>-<n>"
    echo "$uri: already pushed (the same image)" >&2
  else
    out="$(docker push "$uri" 2>&1)" || die "docker push $uri failed: $(oneline "$out")"
  fi
  manifest="$(docker manifest inspect "${insecure[@]}" "$uri" 2>&1)" || die "cannot read the pushed manifest of $uri: $(oneline "$manifest")"
  media="$(printf '%s' "$manifest" | "$PY" -c 'import json, sys; print(json.load(sys.stdin).get("mediaType", "no mediaType (OCI)"))' 2>&1)"
  [ "$media" = "$DOCKER_V2" ] || die "$uri was pushed as $media, not a Docker v2 schema 2 manifest (SageMaker refuses it): build without attestations (buildx --provenance=false --sbom=false) and without the containerd image store"
  uris+=("$uri")
done
for i in "${!uris[@]}"; do
  echo "${names[$i]}=${uris[$i]}"
done
