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
from tests.docker_support import BASE, HPS, LOCAL_BASE, base_pins, image_versions, sh
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
        top_3 = {"X-Amzn-SageMaker-Custom-Attributes": "top_k=3"}
        deadline, status, answer = time.time() + 180, None, None
        while time.time() < deadline:
            try:
                status, answer, _ = post(url, body, headers=top_3)
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert status == 200, answer
        assert get(url, "/ping")[0] == 200
        rows = answer["predictions"][0]
        # the right breed for a known image, the exact k asked for (the sample has 5 breeds, the default k is 5),
        # and the model's answer on the base's torch matches the host's within bf16's error
        assert [r["breed"] for r in rows][:1] == ["Affenpinscher"] and len(rows) == 3, rows
        assert rows[0]["probability"] == pytest.approx(probability, abs=0.05)
        assert len({r["breed"] for r in rows}) == 3 and rows == sorted(rows, key=lambda r: -r["probability"])
    finally:
        start = time.time()
        sh("docker", "stop", "-t", "30", name, check=False)
        assert time.time() - start < 30, "serve did not stop on SIGTERM within 30 s"


def _local_session():
    import boto3
    from sagemaker.local import LocalSession

    boto = boto3.Session(region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
    config = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
    session = LocalSession(boto_session=boto, sagemaker_config=config)
    session.config = {"local": {"local_code": True}}
    return session


ROLE = "arn:aws:iam::123456789012:role/dogbreed-local"


def test_sagemaker_sdk_local_mode_trains_deploys_and_predicts(images, compose, sample_dir, tmp_path):
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.estimator import Estimator
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer

    from dogbreed import metrics

    session = _local_session()
    estimator = Estimator(image_uri=images["train"], role=ROLE, instance_count=1, instance_type="local",
                          output_path=f"file://{tmp_path}/out", sagemaker_session=session, hyperparameters=HPS,
                          metric_definitions=metrics.metric_definitions())
    estimator.fit({"train": f"file://{sample_dir}"}, wait=True, logs=False)
    archive = Path(estimator.model_data.replace("file://", ""))
    with tarfile.open(archive) as tar:
        assert {"model.pth", "model.json"} <= set(tar.getnames())
    model = Model(image_uri=images["serve"], model_data=estimator.model_data, role=ROLE, sagemaker_session=session)
    model.deploy(initial_instance_count=1, instance_type="local", wait=False)
    predictor = Predictor(model.endpoint_name, sagemaker_session=session,
                          serializer=IdentitySerializer("image/jpeg"), deserializer=JSONDeserializer())
    try:
        model_dir = tmp_path / "model"
        model_dir.mkdir()
        with tarfile.open(archive) as tar:
            tar.extractall(model_dir, filter="data")
        jpeg, expected, _ = _known_image(model_dir, sample_dir / "test/002.Beagle", k=2)
        answer = predictor.predict(jpeg, custom_attributes="top_k=2")
        rows = answer["predictions"][0]
        # two of the five breeds, Beagle first: the SDK passed the custom attributes and the model answered
        assert len(rows) == 2 and rows[0]["breed"] == "Beagle" == expected[0], rows
        assert {r["breed"] for r in rows} < {"Affenpinscher", "Beagle", "Border collie", "Dalmatian", "Golden retriever"}
    finally:
        predictor.delete_endpoint()


def test_sagemaker_local_mode_two_instances_train_one_model_with_ddp(images, compose, sample_dir, tmp_path):
    from sagemaker.estimator import Estimator

    session = _local_session()
    estimator = Estimator(image_uri=images["train"], role=ROLE, instance_count=2, instance_type="local",
                          output_path=f"file://{tmp_path}/out", sagemaker_session=session,
                          hyperparameters={**HPS, "epochs": "1"})
    estimator.fit({"train": f"file://{sample_dir}"}, wait=True, logs=False)
    archive = Path(estimator.model_data.replace("file://", ""))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert sorted(names) == ["model.json", "model.pth"]
    output = tmp_path / "out" / "output.tar.gz"
    with tarfile.open(output) as tar:
        metrics_file = tar.extractfile("data/metrics.json")
        summary = json.loads(metrics_file.read())
    assert summary["world_size"] == 2  # the two containers trained together (gloo), rank 0 wrote the model
