"""scripts/build_and_push.sh against moto's ECR API (AWS is unreachable here) and a real registry on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import ROOT, free_port
from tests.docker_support import TAG, sh

pytestmark = [pytest.mark.docker, pytest.mark.slow]
SCRIPT = str(ROOT / "scripts/build_and_push.sh")


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


@pytest.fixture
def registry(tmp_path):
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


def _env(moto_url=None, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_REGION": "eu-west-1", "REVISION": TAG, "PYTHON": os.sys.executable})
    if moto_url:
        env.update({"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    env.update(extra)
    return env


def test_push_creates_the_repositories_pushes_and_the_image_pulls_back_and_runs(images, moto_endpoint, registry):
    moto_server = moto_endpoint
    import boto3

    result = sh(SCRIPT, env=_env(moto_server, REGISTRY=registry), timeout=1800)
    lines = dict(line.split("=", 1) for line in result.stdout.strip().splitlines() if "=" in line)
    assert lines["train_image_uri"] == f"{registry}/dogbreed-train:{TAG}"
    assert lines["serve_image_uri"] == f"{registry}/dogbreed-serve:{TAG}"
    ecr = boto3.client("ecr", region_name="eu-west-1", endpoint_url=moto_server,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    names = {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}
    assert names == {"dogbreed-train", "dogbreed-serve"}
    pushed = lines["serve_image_uri"]
    sh("docker", "rmi", pushed)
    sh("docker", "pull", pushed, timeout=900)
    ran = sh("docker", "run", "--rm", "--entrypoint", "python", pushed, "-c", "import dogbreed.serving.server; print('ok')")
    assert ran.stdout.strip() == "ok"
    # a second push finds the repositories and creates nothing
    again = sh(SCRIPT, env=_env(moto_server, REGISTRY=registry), timeout=1800)
    assert "created ECR repository" not in again.stderr


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
