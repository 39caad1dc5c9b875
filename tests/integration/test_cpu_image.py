"""The CPU serving image (dogbreed-serve-cpu, docker/Dockerfile.serve-cpu): the CUDA image's torch version with no
CUDA library in it, the SageMaker container contract (labels, port 8080, `serve`, SIGTERM), the native front only.

Built once per session as make build builds it, on the local twin of its slim Python base (docker/base/Dockerfile.cpu).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.docker_support import (
    TAG,
    assert_native_front_stops_cleanly,
    base_pins,
    build_cpu_image,
    image_size,
    image_versions,
    remove_containers,
    remove_images,
    serving_container,
    sh,
)
from tests.integration.test_push import DOCKER_V2, SCRIPT, _env, _manifest, registry  # noqa: F401 - the fixture
from tests.serving_helpers import get, post

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Every library file named as NVIDIA's are (CUDA runtime, cuBLAS, cuDNN, cuFFT, NCCL, nvJPEG, ...) anywhere in the
# image, with its size and whether it is one of the image's stubs (docker/cpu/cuda_stubs.py writes the marker).
_NVIDIA_FILES = r"""
import os, re
pattern = re.compile(r"^lib(cu|nccl|nvrtc|nvjpeg|nvshmem|nvJitLink|nvToolsExt|cusparseLt)[^/]*\.so")
for top in ("/usr", "/opt", "/lib"):
    for folder, _, names in os.walk(top):
        for name in names:
            path = os.path.join(folder, name)
            if pattern.match(name) and os.path.isfile(path):
                stub = b"not in this CPU-only image" in open(path, "rb").read()
                print(path, os.path.getsize(path), "stub" if stub else "REAL")
"""
_NO_CUDA_WHEELS = ("from importlib.metadata import distributions; "
                   "print(sorted(d.metadata['Name'] for d in distributions() "
                   "if d.metadata['Name'].lower().startswith(('nvidia-', 'triton'))))")


@pytest.fixture(scope="session")
def cpu_image(docker):
    image = build_cpu_image()
    yield image
    remove_containers()


def test_the_cpu_image_runs_the_cuda_images_torch_without_any_cuda_library(cpu_image):
    pins = base_pins()
    versions = image_versions(cpu_image)
    release = {key: value.split("+")[0] for key, value in versions.items()}
    assert release == {"torch": pins["BASE_TORCH_VERSION"], "torchvision": pins["BASE_TORCHVISION_VERSION"],
                       "python": pins["BASE_PYTHON_VERSION"]}, versions
    wheels = sh("docker", "run", "--rm", "--entrypoint", "python", cpu_image, "-c", _NO_CUDA_WHEELS).stdout.strip()
    assert wheels == "[]", f"CUDA wheels in the CPU image: {wheels}"
    listing = sh("docker", "run", "--rm", "--entrypoint", "python", cpu_image, "-c", _NVIDIA_FILES).stdout.split("\n")
    files = [line.split() for line in listing if line.strip()]
    real = [f for f in files if f[2] != "stub" or int(f[1]) > 100_000]
    assert not real, f"NVIDIA libraries in the CPU image: {real}"
    assert any(f[0].endswith("/libcudart.so.12") for f in files)  # torch's CUDA runtime is there, as a stub
    cuda = sh("docker", "run", "--rm", "--entrypoint", "python", cpu_image, "-c",
              "import os, torch; print(os.path.getsize(os.path.join(os.path.dirname(torch.__file__), "
              "'lib', 'libtorch_cuda.so')))").stdout.split()[-1]
    assert int(cuda) < 300e6, f"libtorch_cuda.so still holds its GPU kernels: {int(cuda) / 1e6:.0f} MB"
    probe = ("import torch; x = torch.nn.functional.conv2d(torch.ones(1, 3, 5, 5), torch.ones(2, 3, 3, 3)); "
             "print(torch.cuda.is_available(), torch.cuda.device_count(), x.sum().item())")
    out = sh("docker", "run", "--rm", "--entrypoint", "python", cpu_image, "-c", probe).stdout.split()
    assert out[-3:] == ["False", "0", str(2 * 9 * 27.0)], out  # 2 channels x 3x3 outputs, each a sum of 27 ones


def test_the_cpu_image_keeps_the_container_contract_and_is_small(cpu_image):
    config = json.loads(sh("docker", "image", "inspect", cpu_image, "--format", "{{json .Config}}").stdout)
    assert config["Labels"].get("com.amazonaws.sagemaker.capabilities.accept-bind-to-port") == "true"
    assert config["Labels"].get("com.amazonaws.sagemaker.capabilities.multi-models") == "false"
    assert "8080/tcp" in config["ExposedPorts"] and config["StopSignal"] == "SIGTERM"
    size = image_size(cpu_image)
    print(f"\n{cpu_image}: {size / 1e9:.2f} GB")
    assert size < 2e9, f"{cpu_image} is {size / 1e9:.2f} GB"  # the CUDA serve image is over 8 GB


def test_the_cpu_image_says_in_one_line_that_it_serves_no_mms(cpu_image):
    result = sh("docker", "run", "--rm", "-e", "DOGBREED_SERVER=mms", cpu_image, "serve", check=False, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "DOGBREED_SERVER=native" in lines[0] and "no Java" in lines[0], result.stderr


def _known_photo(model_dir: Path, folder: Path) -> tuple[bytes, int]:
    """A photo of FOLDER's breed that the model classifies right on this host: (JPEG, its class index)."""
    from PIL import Image

    from dogbreed.serving.predictor import Predictor

    predictor = Predictor(model_dir, precision="fp32", graph="eager")
    breed = folder.name.split(".", 1)[1].replace("_", " ")
    for path in sorted(folder.iterdir()):
        top = predictor.top_k([Image.open(path)], 1)[0][0]
        if top["breed"] == breed:
            return path.read_bytes(), int(top["index"])
    raise AssertionError(f"the model classifies no {breed} test photo right")


def test_the_cpu_image_serves_a_trained_model_from_cold_and_stops_on_sigterm(cpu_image, trained):
    """`docker run IMAGE serve`, as SageMaker runs it: the first correct answer to a dog photo (cold start timed from
    `docker run`), no JVM, and `docker stop` (SIGTERM) ends the container with exit code 0."""
    folder = sorted((Path(trained["work"]) / "opt_ml/input/data/test").iterdir())[0]
    body, index = _known_photo(trained["model_dir"], folder)
    port = free_port()
    name = f"dogbreed-test-serve-cpu-{port}"
    start = time.perf_counter()
    with serving_container(cpu_image, trained["model_dir"], name, port, body, index):
        cold = time.perf_counter() - start
        print(f"\n{cpu_image}: cold start to the first correct answer {cold:.1f} s")
        status, answer, _ = post(f"http://127.0.0.1:{port}", body, headers={"X-Amzn-SageMaker-Custom-Attributes": "top_k=2"})
        assert status == 200 and answer["predictions"][0][0]["index"] == index and len(answer["predictions"][0]) == 2
        assert get(f"http://127.0.0.1:{port}", "/ping")[0] == 200
        status, page = get(f"http://127.0.0.1:{port}", "/")  # the page to try a photo, run locally (homepage.py)
        assert status == 200 and page.startswith("<!doctype html>") and "/invocations" in page
        assert_native_front_stops_cleanly(name, "the CPU image")


def test_the_largest_transparent_images_at_once_never_kill_a_4_gb_container(cpu_image, trained):
    """16 requests at once, each a 40-MP RGBA PNG (170 KB of body, the largest image the endpoint decodes), on a
    serverless-sized container (4 GB): each is answered (200, or a 503 to retry), and the container lives on. It
    was OOM-killed with 8 of them, the request threads counted at 150 MB each."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    folder = sorted((Path(trained["work"]) / "opt_ml/input/data/test").iterdir())[0]
    body, index = _known_photo(trained["model_dir"], folder)
    buffer = io.BytesIO()
    Image.new("RGBA", (6300, 6300), (1, 2, 3, 100)).save(buffer, "PNG")
    port = free_port()
    name = f"dogbreed-test-serve-cpu-memory-{port}"
    url = f"http://127.0.0.1:{port}"
    with serving_container(cpu_image, trained["model_dir"], name, port, body, index, "--memory", "4g", "--cpus", "2"):
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: post(url, buffer.getvalue(), "image/png", timeout=120), range(16)))
        assert {status for status, _, _ in answers} <= {200, 503}, [answer[:2] for answer in answers]
        assert any(status == 200 for status, _, _ in answers)
        state = sh("docker", "inspect", "-f", "{{.State.Running}} {{.State.OOMKilled}}", name).stdout.split()
        assert state == ["true", "false"], state
        status, answer, _ = post(url, body)
        assert status == 200 and answer["predictions"][0][0]["index"] == index


def test_make_push_pushes_the_cpu_image_as_sagemaker_takes_it(cpu_image, moto_endpoint, registry):  # noqa: F811
    """scripts/build_and_push.sh (IMAGES=serve-cpu) against moto's ECR API and a registry on loopback: the ECR
    repository is created, the image is one Docker v2 schema 2 manifest, and serve_image_cpu_uri names it."""
    import boto3

    result = sh(SCRIPT, env=_env(moto_endpoint, REGISTRY=registry, IMAGES="serve-cpu"), timeout=1800)
    pushed = f"{registry}/dogbreed-serve-cpu:{TAG}"
    try:
        assert result.stdout.strip().splitlines()[-1] == f"serve_image_cpu_uri={pushed}", result.stdout
        ecr = boto3.client("ecr", region_name="eu-west-1", endpoint_url=moto_endpoint,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        assert {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]} == {"dogbreed-serve-cpu"}
        content_type, manifest = _manifest(registry, "dogbreed-serve-cpu", TAG)
        assert content_type == DOCKER_V2 and "manifests" not in manifest
        compressed = sum(layer["size"] for layer in manifest["layers"])
        print(f"\n{cpu_image}: {compressed / 1e9:.2f} GB compressed in the registry")
    finally:
        remove_images(pushed)
