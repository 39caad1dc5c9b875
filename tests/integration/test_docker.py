"""The images honour the SageMaker container contract: docker run train/serve, SDK local mode, push.

The images are (re)built once per session from the working tree on BASE_IMAGE (default: the local
Debian-built stand-in for the CUDA PyTorch base, built first if missing); docker's layer cache makes a
rebuild after a code change take seconds.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from dogbreed.local import layout
from tests.conftest import free_port
from tests.docker_support import BASE, HPS, LOCAL_BASE, assert_native_front_stops_cleanly, base_pins, image_versions, sh
from tests.serving_helpers import get, post

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _opt_ml(tmp_path: Path, hps=HPS) -> Path:
    base = layout(tmp_path, {}, hps)
    return base


def test_images_are_labelled_and_hold_no_data_or_credentials(images):
    labels = json.loads(sh("docker", "image", "inspect", images["serve"], "--format", "{{json .Config.Labels}}").stdout)
    assert labels.get("com.amazonaws.sagemaker.capabilities.accept-bind-to-port") == "true"
    listing = sh("docker", "run", "--rm", "--entrypoint", "sh", images["train"], "-c",
                 "ls /opt/dogbreed; ls -a /root; env").stdout
    assert "AWS_SECRET_ACCESS_KEY" not in listing and ".aws" not in listing
    assert "dogImages" not in listing and "shared" not in listing.split()
    torch_count = sh("docker", "run", "--rm", "--entrypoint", "sh", images["train"], "-c",
                     "pip list 2>/dev/null | grep -c '^torch '").stdout.strip()
    assert torch_count == "1"  # the base's torch, never a second one


def test_the_images_run_the_base_torch_and_python_of_the_default_base_image(images):
    """The images keep their base's torch (never a second one), and CI's base is the twin of the default BASE_IMAGE."""
    pins = base_pins()
    base = image_versions(BASE)
    release = {"torch": base["torch"].split("+")[0], "torchvision": base["torchvision"].split("+")[0], "python": base["python"]}
    if BASE == LOCAL_BASE or BASE == pins["DEFAULT_BASE_IMAGE"]:
        assert release == {"torch": pins["BASE_TORCH_VERSION"], "torchvision": pins["BASE_TORCHVISION_VERSION"],
                           "python": pins["BASE_PYTHON_VERSION"]}, f"{BASE} is not a twin of {pins['DEFAULT_BASE_IMAGE']}"
    for kind in ("train", "serve"):
        assert image_versions(images[kind]) == base, f"the {kind} image does not run its base's torch/Python"


def test_the_serve_image_holds_the_patched_mms_response_decoder(images):
    """The builder stage's classes reached the frontend jar the server runs (scripts/patch_mms_frontend.py)."""
    check = sh("docker", "run", "--rm", "--entrypoint", "python", images["serve"],
               "/opt/dogbreed/scripts/patch_mms_frontend.py", "check", check=False, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr


def test_docker_run_train_writes_the_model(images, sample_dir, tmp_path):
    base = _opt_ml(tmp_path)
    result = sh("docker", "run", "--rm", "-v", f"{base}:/opt/ml", "-v", f"{sample_dir}:/opt/ml/input/data/train:ro",
                images["train"], "train", timeout=900)
    assert "epoch=2 " in result.stdout and "test_acc=" in result.stdout
    meta = json.loads((base / "model/model.json").read_text())
    assert meta["arch"] == "resnet18" and (base / "model/model.pth").stat().st_size > 1_000_000
    assert (base / "output/data/metrics.json").is_file()


def test_a_broken_run_writes_the_failure_file_and_exits_non_zero(images, sample_dir, tmp_path):
    base = _opt_ml(tmp_path)
    data = tmp_path / "only-train"
    shutil.copytree(sample_dir / "train", data / "train")
    result = sh("docker", "run", "--rm", "-v", f"{base}:/opt/ml", "-v", f"{data}:/opt/ml/input/data/train:ro",
                images["train"], "train", check=False, timeout=600)
    assert result.returncode != 0
    assert "missing 'valid' split" in (base / "output/failure").read_text()


def _known_image(model_dir: Path, folder: Path, k: int) -> tuple[bytes, list[str], float]:
    """An image of FOLDER's breed that the model (on this host's torch, fp32) classifies right: (JPEG, top-k, p1)."""
    from PIL import Image

    from dogbreed.serving.predictor import Predictor

    predictor = Predictor(model_dir, precision="fp32", graph="eager")
    breed = folder.name.split(".", 1)[1].replace("_", " ")
    for path in sorted(folder.iterdir()):
        rows = predictor.top_k([Image.open(path)], k)[0]
        if rows[0]["breed"] == breed:
            return path.read_bytes(), [r["breed"] for r in rows], rows[0]["probability"]
    raise AssertionError(f"the model classifies no {breed} test image right")


def _first_answer(url: str, body: bytes, headers: dict, timeout: float = 180) -> tuple[int | None, object]:
    """Post until the server answers 200 (or the time is up): (the last status, its answer)."""
    deadline, status, answer = time.time() + timeout, None, None
    while time.time() < deadline:
        try:
            status, answer, _ = post(url, body, headers=headers)
            if status == 200:
                break
        except OSError:
            pass
        time.sleep(0.5)
    return status, answer


# A would-be model archive host inside the serve container's own network namespace (its loopback): the container
# could reach it, so a management API on the inference port would fetch from it. It records every request.
_ARCHIVE_HOST = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        open('/tmp/archive-hits', 'a').write(self.path + chr(10))
        self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()
http.server.HTTPServer(('127.0.0.1', 9911), H).serve_forever()
"""
_MANAGEMENT_CALLS = [("POST", "/models?url=http://127.0.0.1:9911/evil.mar&model_name=evil&handler=evil:handle"
                              "&initial_workers=1&synchronous=true"),
                     ("GET", "/models"), ("PUT", "/models/model?min_worker=0&synchronous=true"),
                     ("DELETE", "/models/model")]


def _assert_no_management_api(name: str, url: str) -> None:
    """An attacker on the container's published port: every management call is 404/405 and nothing is fetched."""
    import urllib.request

    sh("docker", "exec", "-d", name, "python", "-c", _ARCHIVE_HOST)
    listening = "import socket; socket.create_connection(('127.0.0.1', 9911), 2)"
    deadline = time.time() + 30
    while sh("docker", "exec", name, "python", "-c", listening, check=False).returncode != 0:
        assert time.time() < deadline, "the archive host in the container did not start"
        time.sleep(0.5)
    for method, path in _MANAGEMENT_CALLS:
        request = urllib.request.Request(url + path, method=method, data=b"" if method in ("POST", "PUT") else None)
        try:
            status = urllib.request.urlopen(request, timeout=30).status
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status in (404, 405), (method, path, status)
    hits = sh("docker", "exec", name, "sh", "-c", "cat /tmp/archive-hits 2>/dev/null || true").stdout
    assert hits == "", f"the serve container fetched {hits!r}"


def test_docker_run_serve_native_answers_and_exits_0_on_sigterm(images, trained):
    """DOGBREED_SERVER=native in the serve image: no JVM in the container, /ping and /invocations answer,
    and SIGTERM (docker stop) ends the container with exit code 0."""
    port = free_port()
    name = f"dogbreed-test-serve-native-{port}"
    folder = sorted((Path(trained["work"]) / "opt_ml/input/data/test").iterdir())[0]  # 001.Affenpinscher
    body, expected, _ = _known_image(trained["model_dir"], folder, k=2)
    sh("docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-e", "DOGBREED_SERVER=native",
       "-v", f"{trained['model_dir']}:/opt/ml/model:ro", images["serve"], "serve")
    try:
        url = f"http://127.0.0.1:{port}"
        status, answer = _first_answer(url, body, {"X-Amzn-SageMaker-Custom-Attributes": "top_k=2"})
        assert status == 200, answer
        assert [r["breed"] for r in answer["predictions"][0]] == expected[:2]
        assert get(url, "/ping")[0] == 200
        _assert_no_management_api(name, url)
        assert_native_front_stops_cleanly(name, "native serve")
    finally:
        sh("docker", "rm", "-f", name, check=False)


def test_docker_run_serve_classifies_and_stops_in_time(images, trained, tmp_path):
    port = free_port()
    name = f"dogbreed-test-serve-{port}"
    folder = sorted((Path(trained["work"]) / "opt_ml/input/data/test").iterdir())[0]  # 001.Affenpinscher
    body, expected, probability = _known_image(trained["model_dir"], folder, k=3)
    assert expected[0] == "Affenpinscher"
    sh("docker", "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8080",
       "-v", f"{trained['model_dir']}:/opt/ml/model:ro", images["serve"], "serve")
    try:
        url = f"http://127.0.0.1:{port}"
        status, answer = _first_answer(url, body, {"X-Amzn-SageMaker-Custom-Attributes": "top_k=3"})
        assert status == 200, answer
        assert get(url, "/ping")[0] == 200
        rows = answer["predictions"][0]
        # the right breed for a known image, the exact k asked for (the sample has 5 breeds, the default k is 5),
        # and the model's answer on the base's torch matches the host's within bf16's error
        assert [r["breed"] for r in rows][:1] == ["Affenpinscher"] and len(rows) == 3, rows
        assert rows[0]["probability"] == pytest.approx(probability, abs=0.05)
        assert len({r["breed"] for r in rows}) == 3 and rows == sorted(rows, key=lambda r: -r["probability"])
        _assert_no_management_api(name, url)
        assert post(url, body)[0] == 200  # the model is still served
    finally:
        start = time.time()
        sh("docker", "stop", "-t", "30", name, check=False)
        assert time.time() - start < 30, "serve did not stop on SIGTERM within 30 s"


ROLE = "arn:aws:iam::123456789012:role/dogbreed-local"


def _local_trainer(image: str, root: Path, instance_count: int, hyperparameters: dict):
    """SDK v3's local container mode: ModelTrainer(training_mode=Mode.LOCAL_CONTAINER) writes /opt/ml for each
    host and runs the image with docker compose, as SageMaker would, but with no command (it passes no `train`):
    the image's default command trains. No AWS session: local data, local output."""
    from sagemaker.core.training.configs import Compute
    from sagemaker.train import ModelTrainer
    from sagemaker.train.model_trainer import Mode

    root.mkdir(parents=True, exist_ok=True)
    return ModelTrainer(training_image=image, training_mode=Mode.LOCAL_CONTAINER, role=ROLE, base_job_name="dogbreed-local",
                        compute=Compute(instance_type="local_cpu", instance_count=instance_count),
                        hyperparameters=hyperparameters, local_container_root=str(root))


def _local_train(image: str, root: Path, sample_dir: Path, instance_count: int, hyperparameters: dict) -> Path:
    from sagemaker.core.training.configs import InputData

    trainer = _local_trainer(image, root, instance_count, hyperparameters)
    trainer.train(input_data_config=[InputData(channel_name="train", data_source=str(sample_dir))], wait=True, logs=False)
    return root / "compressed_artifacts"


def test_sagemaker_sdk_v3_local_mode_trains_and_docker_run_serves(images, compose, sample_dir, tmp_path):
    """Training through SDK v3's local container mode; serving stays on `docker run IMAGE serve`: v3's
    ModelBuilder local mode starts only the model servers it knows (TorchServe, Triton, ...), not a custom image."""
    artifacts = _local_train(images["train"], tmp_path / "local", sample_dir, 1, HPS)
    with tarfile.open(artifacts / "model.tar.gz") as tar:
        assert {"model.pth", "model.json"} <= set(tar.getnames())
        model_dir = tmp_path / "model"
        tar.extractall(model_dir, filter="data")
    jpeg, expected, _ = _known_image(model_dir, sample_dir / "test/002.Beagle", k=2)
    port = free_port()
    name = f"dogbreed-test-local-serve-{port}"
    sh("docker", "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8080",
       "-v", f"{model_dir}:/opt/ml/model:ro", images["serve"], "serve")
    try:
        top_2 = {"X-Amzn-SageMaker-Custom-Attributes": "top_k=2"}
        deadline, status, answer = time.time() + 180, None, None
        while time.time() < deadline and status != 200:
            try:
                status, answer, _ = post(f"http://127.0.0.1:{port}", jpeg, headers=top_2)
            except OSError:
                pass
            time.sleep(0.5 if status != 200 else 0)
        assert status == 200, answer
        rows = answer["predictions"][0]
        # two of the five breeds, Beagle first: the model SDK v3's local mode trained answers right
        assert len(rows) == 2 and rows[0]["breed"] == "Beagle" == expected[0], rows
    finally:
        sh("docker", "stop", "-t", "30", name, check=False)


def test_sagemaker_sdk_v3_local_mode_two_instances_train_one_model_with_ddp(images, compose, sample_dir, tmp_path):
    artifacts = _local_train(images["train"], tmp_path / "local", sample_dir, 2, {**HPS, "epochs": "1"})
    with tarfile.open(artifacts / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["model.json", "model.pth"]
    with tarfile.open(artifacts / "output.tar.gz") as tar:
        summary = json.loads(tar.extractfile("data/metrics.json").read())
    assert summary["world_size"] == 2  # the two containers trained together (gloo), rank 0 wrote the model
