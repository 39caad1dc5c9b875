"""scripts/build_and_push.sh against moto's ECR API (AWS is unreachable here) and a real registry on loopback."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest

from tests.conftest import ROOT, free_port
from tests.docker_support import TAG, build_cpu_image, remove_images, sh

pytestmark = [pytest.mark.docker, pytest.mark.slow]
SCRIPT = str(ROOT / "scripts/build_and_push.sh")
REPOS = ("dogbreed-train", "dogbreed-serve")  # what the tests push (IMAGES="train serve"), but the last one's
CPU_REPO = "dogbreed-serve-cpu"  # the default IMAGES ("train serve serve-cpu") pushes it too
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join([  # what a client that takes any of them asks for: the registry answers what it holds
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json", DOCKER_V2,
])


def _wait_http(url: str, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


def _manifest(registry: str, repo: str, tag: str) -> tuple[str, dict]:
    """GET /v2/<repo>/manifests/<tag> from the registry itself: (Content-Type, the manifest)."""
    request = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["Content-Type"], json.loads(response.read())


def _blob(registry: str, repo: str, digest: str) -> dict:
    with urllib.request.urlopen(f"http://{registry}/v2/{repo}/blobs/{digest}", timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real registry on loopback, one for the module: a second push to it sends no layer again."""
    tmp_path = tmp_path_factory.mktemp("registry")
    binary = shutil.which("docker-registry")
    if not binary:
        pytest.fail("docker-registry is not installed (.ci/run installs Debian's docker-registry)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry-data'}\n"
        f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen([binary, "serve", str(config)], stdout=open(tmp_path / "registry.log", "w"),
                               stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/v2/")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)
        shutil.rmtree(tmp_path / "registry-data", ignore_errors=True)  # gigabytes of layers
        sh("docker", "logout", f"127.0.0.1:{port}", check=False)  # no stale entry per run in ~/.docker/config.json
        # the pushed tags name this session's port: drop them, or every run would leave two more
        remove_images(*(f"127.0.0.1:{port}/{repo}:{tag}" for repo in (*REPOS, CPU_REPO)
                        for tag in {line.split(":")[-1] for line in sh("docker", "images", "--format", "{{.Tag}}",
                                                                       f"127.0.0.1:{port}/{repo}").stdout.split()}))


@pytest.fixture
def refusing_registry():
    """A registry on loopback that refuses every login, as a registry does: 401 with its reason."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}).encode()
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="dogbreed-test-registry"')
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _env(moto_url=None, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # the images the `images` fixture builds; the default (all three, the CPU serving image too) is the last test's
    env.update({"AWS_REGION": "eu-west-1", "REVISION": TAG, "PYTHON": os.sys.executable, "IMAGES": "train serve"})
    if moto_url:
        env.update({"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    env.update(extra)
    return env


def test_push_creates_the_repositories_pushes_and_the_image_pulls_back_and_runs(images, moto_endpoint, registry):
    moto_server = moto_endpoint
    import boto3

    # a region of its own on the session's moto server: other tests (the CPU image's) push there too
    region = "eu-north-1"
    result = sh(SCRIPT, env=_env(moto_server, REGISTRY=registry, AWS_REGION=region), timeout=1800)
    lines = dict(line.split("=", 1) for line in result.stdout.strip().splitlines() if "=" in line)
    assert lines["train_image_uri"] == f"{registry}/dogbreed-train:{TAG}"
    assert lines["serve_image_uri"] == f"{registry}/dogbreed-serve:{TAG}"
    assert result.stderr.count("created ECR repository") == 2, result.stderr
    ecr = boto3.client("ecr", region_name=region, endpoint_url=moto_server,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    created = ecr.describe_repositories()["repositories"]
    assert {r["repositoryName"] for r in created} == {"dogbreed-train", "dogbreed-serve"}
    assert {r["imageTagMutability"] for r in created} == {"IMMUTABLE"}
    for repo in REPOS:
        # what SageMaker gets: one Docker v2 schema 2 manifest (no OCI index, no attestation), linux/amd64
        content_type, manifest = _manifest(registry, repo, TAG)
        assert content_type == DOCKER_V2 and manifest["mediaType"] == DOCKER_V2, (repo, content_type, manifest.get("mediaType"))
        assert manifest["schemaVersion"] == 2 and "manifests" not in manifest
        config = _blob(registry, repo, manifest["config"]["digest"])
        assert (config["os"], config["architecture"]) == ("linux", "amd64")
    tags = json.loads(urllib.request.urlopen(f"http://{registry}/v2/dogbreed-train/tags/list", timeout=30).read())["tags"]
    assert TAG in tags and "latest" not in tags  # the revision only: no mutable latest
    pushed = lines["serve_image_uri"]
    sh("docker", "rmi", pushed)
    sh("docker", "pull", pushed, timeout=900)
    ran = sh("docker", "run", "--rm", "--entrypoint", "python", pushed, "-c", "import dogbreed.serving.server; print('ok')")
    assert ran.stdout.strip() == "ok"
    # a second push finds the repositories and creates nothing; the same images are there already (an immutable
    # ECR tag would refuse a second push of the tag)
    again = sh(SCRIPT, env=_env(moto_server, REGISTRY=registry, AWS_REGION=region), timeout=1800)
    assert "created ECR repository" not in again.stderr
    assert again.stderr.count("already pushed (the same image)") == 2, again.stderr
    assert dict(line.split("=", 1) for line in again.stdout.strip().splitlines() if "=" in line) == lines


def test_another_image_under_a_pushed_tag_is_refused_in_one_line(images, moto_endpoint, registry, tmp_path):
    revision = f"conflict-{registry.rsplit(':', 1)[1]}"
    sh("docker", "tag", f"dogbreed-train:{TAG}", f"dogbreed-train:{revision}")
    other = tmp_path / "other.tar"
    subprocess.run(["tar", "-cf", str(other), "-T", "/dev/null"], check=True)
    try:
        env = _env(moto_endpoint, REGISTRY=registry, REVISION=revision, IMAGES="train")
        sh(SCRIPT, env=env, timeout=1800)
        # a change built under the same revision: another image under the tag the registry holds
        sh("docker", "import", str(other), f"dogbreed-train:{revision}")
        result = subprocess.run([SCRIPT], env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode != 0
        errors = [line for line in result.stderr.strip().splitlines() if line.strip()]
        assert len(errors) == 1 and "already holds another image" in errors[0], result.stderr
        assert errors[0].startswith(f"push: {registry}/dogbreed-train:{revision} "), errors[0]
    finally:
        remove_images(f"dogbreed-train:{revision}", f"{registry}/dogbreed-train:{revision}")


def test_a_repository_with_mutable_tags_is_named_on_push(images, moto_endpoint, registry):
    import boto3

    region = "ca-central-1"  # its own region on the session's moto server: the repository made as an old push did
    ecr = boto3.client("ecr", region_name=region, endpoint_url=moto_endpoint,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ecr.create_repository(repositoryName="dogbreed-train", imageTagMutability="MUTABLE")
    result = sh(SCRIPT, env=_env(moto_endpoint, REGISTRY=registry, AWS_REGION=region, IMAGES="train"), timeout=1800)
    assert "ECR repository dogbreed-train has MUTABLE tags" in result.stderr, result.stderr
    assert "put-image-tag-mutability" in result.stderr


@pytest.mark.parametrize("case,needle", [
    ("no credentials", "AWS"),
    ("no docker", "docker is not installed"),
    ("no image", "run make build"),
])
def test_push_failures_are_one_clear_line(images, tmp_path, case, needle):
    env = _env(None)
    if case == "no credentials":
        env.update({"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                    "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_MAX_ATTEMPTS": "1"})
    elif case == "no docker":
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for tool in ("git", "dirname", "awk", "cat"):
            if shutil.which(tool):
                os.symlink(shutil.which(tool), bin_dir / tool)
        env["PATH"] = str(bin_dir)
    else:
        env["REVISION"] = "no-such-revision"
    result = subprocess.run([shutil.which("bash"), SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("push: ") and needle in errors[0], result.stderr


def test_a_refused_login_shows_the_registry_s_own_error(images, moto_endpoint, refusing_registry):
    result = subprocess.run([SCRIPT], env=_env(moto_endpoint, REGISTRY=refusing_registry), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode != 0
    errors = [line for line in result.stderr.strip().splitlines() if line.strip() and "created ECR repository" not in line]
    assert len(errors) == 1 and errors[0].startswith(f"push: docker login to {refusing_registry} failed: "), result.stderr
    assert "401 Unauthorized" in errors[0], errors[0]  # the registry's answer, as docker reported it


def test_the_region_comes_from_dogbreed_toml_when_no_aws_region_is_set(images, moto_endpoint, registry, tmp_path):
    import boto3

    (tmp_path / "dogbreed.toml").write_text('region = "ap-southeast-2"\n')
    env = _env(moto_endpoint, REGISTRY=registry, AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "DOGBREED_CONFIG"):
        env.pop(name, None)
    # make push from the folder that holds dogbreed.toml, as the launchers read it
    result = subprocess.run([SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr
    ecr = boto3.client("ecr", region_name="ap-southeast-2", endpoint_url=moto_endpoint,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    assert {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]} == set(REPOS)
    assert all(":ap-southeast-2:" in r["repositoryArn"] for r in ecr.describe_repositories()["repositories"])
    # DOGBREED_CONFIG names the file too, relative to where make push runs
    (tmp_path / "other.toml").write_text('region = "sa-east-1"\n')
    env["DOGBREED_CONFIG"] = "other.toml"
    result = subprocess.run([SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr
    ecr = boto3.client("ecr", region_name="sa-east-1", endpoint_url=moto_endpoint,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    assert {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]} == set(REPOS)


def test_the_printed_tags_are_the_git_revision_never_latest(images, moto_endpoint, registry):
    revision = sh(str(ROOT / "scripts/build_images.sh"), "--revision").stdout.strip()
    commit = sh("git", "-C", str(ROOT), "rev-parse", "--short=7", "HEAD").stdout.strip()
    assert re.fullmatch(rf"{commit}(-dirty-[0-9a-f]{{8}})?", revision), revision
    local = [f"{repo}:{revision}" for repo in REPOS]
    for repo, name in zip(REPOS, local, strict=True):
        sh("docker", "tag", f"{repo}:{TAG}", name)  # as make build tags them
    try:
        env = _env(moto_endpoint, REGISTRY=registry)
        env.pop("REVISION")
        result = sh(SCRIPT, env=env, timeout=1800)
        uris = [line.split("=", 1)[1] for line in result.stdout.strip().splitlines() if line.endswith(f":{revision}")]
        assert uris == [f"{registry}/{name}" for name in local], result.stdout
        assert ":latest" not in result.stdout
    finally:
        remove_images(*local)


@pytest.fixture(scope="module")
def cpu_image(docker):
    return build_cpu_image()  # as test_cpu_image.py builds it: docker's layer cache when it is up to date


def _ecr_names(moto_url: str) -> set[str]:
    import boto3

    ecr = boto3.client("ecr", region_name="eu-west-1", endpoint_url=moto_url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    return {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}


def test_the_default_pushes_the_cpu_serving_image_too(images, cpu_image, moto_endpoint, registry):
    """make push with no IMAGES: the training image and both serving images, each URI on its own line; the
    launchers read serve_image_cpu_uri for CPU instances and serverless. (Last in the file: the first test counts
    the ECR repositories it creates on the session's moto server.)"""
    env = _env(moto_endpoint, REGISTRY=registry)
    env.pop("IMAGES")
    result = sh(SCRIPT, env=env, timeout=1800)
    lines = dict(line.split("=", 1) for line in result.stdout.strip().splitlines() if "=" in line)
    assert lines == {"train_image_uri": f"{registry}/dogbreed-train:{TAG}",
                     "serve_image_uri": f"{registry}/dogbreed-serve:{TAG}",
                     "serve_image_cpu_uri": f"{registry}/{CPU_REPO}:{TAG}"}, result.stdout
    assert {*REPOS, CPU_REPO} <= _ecr_names(moto_endpoint)
    content_type, manifest = _manifest(registry, CPU_REPO, TAG)
    assert content_type == DOCKER_V2 and manifest["mediaType"] == DOCKER_V2, (content_type, manifest.get("mediaType"))
    config = _blob(registry, CPU_REPO, manifest["config"]["digest"])
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
