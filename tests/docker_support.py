"""Docker helpers shared by the docker tests: build the images once per session, run commands."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

TAG = "test"
TRAIN_IMAGE = f"dogbreed-train:{TAG}"
SERVE_IMAGE = f"dogbreed-serve:{TAG}"
BASE = os.environ.get("DOGBREED_TEST_BASE_IMAGE", "dogbreed-base:local")
HPS = {"model": "resnet18", "pretrained-weights": "none", "input-size": "64", "epochs": "2", "batch-size": "25",
       "num-workers": "1"}


def sh(*command, check=True, timeout=1800, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _image_exists(name: str) -> bool:
    return sh("docker", "image", "inspect", name, check=False).returncode == 0


def build_images():
    if not _image_exists(BASE):
        if BASE != "dogbreed-base:local":
            pytest.fail(f"base image {BASE} is not present")
        extra_ca = "/etc/ssl/certs/ca-certificates.crt" if Path("/etc/ssl/certs/ca-certificates.crt").is_file() else ""
        sh(str(ROOT / "scripts/build_local_base.sh"), BASE, extra_ca, timeout=3000)
    env = {**os.environ, "BASE_IMAGE": BASE, "REVISION": TAG}
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        env["EXTRA_CA"] = "/etc/ssl/certs/ca-certificates.crt"  # the TLS proxy between this machine and PyPI
    build = sh(str(ROOT / "scripts/build_images.sh"), env=env, cwd=ROOT, timeout=3000)
    assert "dogbreed-train:test" in build.stdout and "GB" in build.stdout  # sizes printed
    return {"train": TRAIN_IMAGE, "serve": SERVE_IMAGE}


def remove_containers():
    for image in (TRAIN_IMAGE, SERVE_IMAGE):  # exited containers of this session's images
        ids = sh("docker", "ps", "-aq", "--filter", f"ancestor={image}", check=False).stdout.split()
        if ids:
            sh("docker", "rm", "-f", *ids, check=False)


