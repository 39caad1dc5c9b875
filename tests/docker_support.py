"""Docker helpers shared by the docker tests: build the images once per session (on the local twin of the default
BASE_IMAGE unless DOGBREED_TEST_BASE_IMAGE names another base; the CPU serving image on the local twin of the default
CPU_BASE_IMAGE unless DOGBREED_TEST_CPU_BASE_IMAGE names another), run commands, clean up after the session."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

# DOGBREED_TEST_TAG: a tag of its own for each pytest session that builds images at once (two worktrees on one
# daemon would otherwise test each other's images)
TAG = os.environ.get("DOGBREED_TEST_TAG", "test")
TRAIN_IMAGE = f"dogbreed-train:{TAG}"
SERVE_IMAGE = f"dogbreed-serve:{TAG}"
SERVE_CPU_IMAGE = f"dogbreed-serve-cpu:{TAG}"
LOCAL_BASE = "dogbreed-base:local"
BASE = os.environ.get("DOGBREED_TEST_BASE_IMAGE", LOCAL_BASE)
LOCAL_CPU_BASE = "dogbreed-base-cpu:local"
CPU_BASE = os.environ.get("DOGBREED_TEST_CPU_BASE_IMAGE", LOCAL_CPU_BASE)
VERSIONS = ROOT / "docker" / "base" / "versions.env"
# what an image answers: its torch, its torchvision, its Python minor
VERSIONS_PROBE = ("import sys, torch, torchvision; "
                  "print(torch.__version__, torchvision.__version__, '%d.%d' % sys.version_info[:2])")
HPS = {"model": "resnet18", "pretrained-weights": "none", "input-size": "64", "epochs": "2", "batch-size": "25",
       "num-workers": "1"}


def sh(*command, check=True, timeout=1800, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def base_pins() -> dict[str, str]:
    """docker/base/versions.env: DEFAULT_BASE_IMAGE and the torch, torchvision and Python minor it holds."""
    values = {}
    for line in VERSIONS.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def image_versions(image: str) -> dict[str, str]:
    """torch, torchvision (as torch.__version__ says: 2.9.1+cu128) and the Python minor inside IMAGE."""
    out = sh("docker", "run", "--rm", "--entrypoint", "python", image, "-c", VERSIONS_PROBE, timeout=300).stdout
    torch, torchvision, python = out.split()[-3:]
    return {"torch": torch, "torchvision": torchvision, "python": python}


def _image_exists(name: str) -> bool:
    return sh("docker", "image", "inspect", name, check=False).returncode == 0


def _extra_ca() -> str:
    # the TLS proxy between this machine and PyPI (its CA is in the host's bundle)
    return "/etc/ssl/certs/ca-certificates.crt" if Path("/etc/ssl/certs/ca-certificates.crt").is_file() else ""


def build_images():
    if BASE == LOCAL_BASE:
        # always: a base built from older pins is rebuilt; an up-to-date one is docker's layer cache (seconds)
        sh(str(ROOT / "scripts/build_local_base.sh"), BASE, _extra_ca(), timeout=3000)
    elif not _image_exists(BASE):
        pytest.fail(f"base image {BASE} is not present")
    env = {**os.environ, "BASE_IMAGE": BASE, "REVISION": TAG, "EXTRA_CA": _extra_ca(), "IMAGES": "train serve"}
    build = sh(str(ROOT / "scripts/build_images.sh"), env=env, cwd=ROOT, timeout=3000)
    assert f"{TRAIN_IMAGE}  " in build.stdout and "GB" in build.stdout and "linux/amd64" in build.stdout  # sizes printed
    return {"train": TRAIN_IMAGE, "serve": SERVE_IMAGE}


def build_cpu_image() -> str:
    """The CPU serving image (docker/Dockerfile.serve-cpu), built as make build builds it, on CPU_BASE."""
    if CPU_BASE == LOCAL_CPU_BASE:
        # always, as for the CUDA twin: seconds when it is up to date (it shares the CUDA twin's Debian rootfs)
        sh(str(ROOT / "scripts/build_local_base.sh"), "--cpu", CPU_BASE, _extra_ca(), timeout=3000)
    elif not _image_exists(CPU_BASE):
        pytest.fail(f"CPU base image {CPU_BASE} is not present")
    env = {**os.environ, "CPU_BASE_IMAGE": CPU_BASE, "REVISION": TAG, "EXTRA_CA": _extra_ca(), "IMAGES": "serve-cpu"}
    build = sh(str(ROOT / "scripts/build_images.sh"), env=env, cwd=ROOT, timeout=3000)
    assert f"{SERVE_CPU_IMAGE}  " in build.stdout and "linux/amd64" in build.stdout, build.stdout[-2000:]
    return SERVE_CPU_IMAGE


def image_size(image: str) -> int:
    """Bytes, as `docker images` shows them (uncompressed)."""
    return int(sh("docker", "image", "inspect", image, "--format", "{{.Size}}").stdout.strip())


def remove_containers():
    # exited containers of this session's images; the bases' only under the default tag (under a tag of its own, a
    # session shares the daemon, and "ancestor=BASE" would match the other sessions' containers too)
    bases = (BASE, CPU_BASE) if TAG == "test" else ()
    for image in (TRAIN_IMAGE, SERVE_IMAGE, SERVE_CPU_IMAGE, *bases):
        ids = sh("docker", "ps", "-aq", "--filter", f"ancestor={image}", check=False).stdout.split()
        if ids:
            sh("docker", "rm", "-f", *ids, check=False)


def remove_images(*names: str):
    """Tags this session made (pushed copies, retags); the layers stay while another tag holds them."""
    for name in names:
        sh("docker", "rmi", name, check=False)
    sh("docker", "image", "prune", "-f", check=False)  # whatever became dangling


def assert_native_front_stops_cleanly(name: str, what: str) -> None:
    """A container serving with the native front: one Python process and no JVM, stopped by SIGTERM within the
    30 s grace, exit code 0."""
    import time

    processes = sh("docker", "top", name).stdout
    assert "java" not in processes and "dogbreed.serving.server" in processes, processes
    start = time.perf_counter()
    sh("docker", "stop", "-t", "30", name)
    assert time.perf_counter() - start < 30, f"{what} did not stop on SIGTERM within 30 s"
    code = sh("docker", "inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
    assert code == "0", sh("docker", "logs", name, check=False).stderr[-2000:]


@contextlib.contextmanager
def serving_container(image: str, model_dir, name: str, port: int, body: bytes, index: int, *options: str):
    """``docker run IMAGE serve`` on ``model_dir``, published on loopback ``port``, entered once it answers ``body``
    with class ``index`` (its log in the failure where it never does); removed on the way out."""
    from dogbreed.serving.client import wait_until_correct

    sh("docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", *options,
       "-v", f"{model_dir}:/opt/ml/model:ro", image, "serve")
    try:
        try:
            wait_until_correct("127.0.0.1", port, body, index, timeout=180)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{sh('docker', 'logs', name, check=False).stderr[-3000:]}") from None
        yield
    finally:
        sh("docker", "rm", "-f", name, check=False)
