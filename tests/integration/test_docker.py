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
from tests.docker_support import HPS, sh
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


def test_docker_run_serve_classifies_and_stops_in_time(images, trained, tmp_path):
    port = free_port()
    name = f"dogbreed-test-serve-{port}"
    sh("docker", "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8080",
       "-v", f"{trained['model_dir']}:/opt/ml/model:ro", images["serve"], "serve")
    try:
        url = f"http://127.0.0.1:{port}"
        jpeg = next(iter(sorted((Path(trained["work"]) / "opt_ml/input/data/test").iterdir()))).iterdir()
        body = sorted(jpeg)[0].read_bytes()
        deadline, status, answer = time.time() + 180, None, None
        while time.time() < deadline:
            try:
                status, answer, _ = post(url, body)
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert status == 200, answer
        assert get(url, "/ping")[0] == 200
        assert answer["predictions"][0][0]["breed"] == "Affenpinscher" or len(answer["predictions"][0]) == 5
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
        jpeg = sorted((sample_dir / "test/002.Beagle").iterdir())[0].read_bytes()
        answer = predictor.predict(jpeg)
        rows = answer["predictions"][0]
        assert len(rows) == 5 and {r["breed"] for r in rows} == {"Affenpinscher", "Beagle", "Border collie", "Dalmatian", "Golden retriever"}
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
