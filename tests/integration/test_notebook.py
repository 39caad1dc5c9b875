"""The notebook runs top to bottom (nbclient) against moto's server (AWS is unreachable here), with jobs that
take several describe calls to finish (tests/conftest.py SlowJobs), as jobs on AWS take hours."""

from __future__ import annotations

import json
import os
import urllib.request

import boto3
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.conftest import ROOT, moto_env

pytestmark = pytest.mark.slow

NOTEBOOK = ROOT / "notebooks/train_and_deploy.ipynb"


def _prepare(moto_endpoint, slow_moto, tmp_path, sample_dir, monkeypatch):
    s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=moto_endpoint,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    try:
        s3.create_bucket(Bucket="dogbreed-nb", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    config = tmp_path / "dogbreed.toml"
    config.write_text('''region = "eu-west-1"
role = "arn:aws:iam::123456789012:role/dogbreed-sagemaker"
bucket = "dogbreed-nb"
train_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-train:t"
serve_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-serve:t"
[wait]
poll_s = 0.05
''')
    # moto answers InvokeEndpoint with a canned body: give it the shape our endpoint answers with.
    canned = {"predictions": [[{"breed": "Beagle", "index": 1, "probability": 0.9}]], "model": "resnet50"}
    request = urllib.request.Request(
        f"{moto_endpoint}/moto-api/static/sagemaker/endpoint-results", method="POST",
        data=json.dumps({"account_id": "123456789012", "region": "eu-west-1",
                         "results": [{"Body": json.dumps(canned), "ContentType": "application/json"}]}).encode(),
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10)
    image = sorted((sample_dir / "test/002.Beagle").iterdir())[0]
    env = moto_env(slow_moto.url)  # the notebook talks to the slow jobs, not to moto directly
    for key, value in {**env, "DOGBREED_CONFIG": str(config), "DOGBREED_EXAMPLE_IMAGE": str(image)}.items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("AWS_") and k not in env]:
        monkeypatch.delenv(key)


def _run(notebook, tmp_path):
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return "".join(o.get("text", "") + json.dumps(o.get("data", {})) + "".join(o.get("traceback", []))
                   for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))


def _names(slow_moto, kind):
    return [name for (k, name) in slow_moto.describes if k == kind]


def test_notebook_waits_for_jobs_that_take_several_describes(moto_endpoint, slow_moto, tmp_path, sample_dir, monkeypatch):
    _prepare(moto_endpoint, slow_moto, tmp_path, sample_dir, monkeypatch)
    outputs = _run(nbformat.read(NOTEBOOK, as_version=4), tmp_path)
    assert "Beagle 90.0%" in outputs
    assert "s3://dogbreed-nb" in outputs
    # every job was seen unfinished, then finished: the notebook waited
    for kind in ("tuning", "training", "endpoint"):
        names = _names(slow_moto, kind)
        assert names, f"the notebook never described a {kind}"
        assert all(slow_moto.describes[(kind, name)] > slow_moto.steps for name in names), slow_moto.describes
    assert "InProgress" in outputs and "Completed" in outputs and "InService" in outputs
    assert slow_moto.refused_invocations == []
    sm = boto3.client("sagemaker", region_name="eu-west-1", endpoint_url=moto_endpoint,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    training_job = _names(slow_moto, "training")[0]
    described = sm.describe_training_job(TrainingJobName=training_job)
    assert described["CheckpointConfig"]["S3Uri"] == f"s3://dogbreed-nb/dogbreed/checkpoints/{training_job}/"
    assert f"models/{training_job}/output/model.tar.gz" in outputs
    assert sm.list_endpoints()["Endpoints"] == []  # the last cell cleaned up


@pytest.mark.parametrize("drop,error,message", [
    ('jobs.wait_for(sm, "tuning"', "ConfigError", "has no best training job yet (status InProgress)"),
    ('jobs.wait_for(sm, "training"', "ConfigError", "has no model artifacts (status InProgress)"),
    ("wait=True", "ValidationError", "is not in service yet"),
], ids=["no-tuning-wait", "no-training-wait", "no-endpoint-wait"])
def test_the_slow_jobs_fail_the_notebook_without_each_wait(moto_endpoint, slow_moto, tmp_path, sample_dir, monkeypatch,
                                                            drop, error, message):
    """The same notebook without one of its waits fails on the unfinished job: each wait matters, and the
    fake jobs can make a notebook that does not wait fail."""
    _prepare(moto_endpoint, slow_moto, tmp_path, sample_dir, monkeypatch)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    changed = 0
    for cell in notebook.cells:
        if cell.cell_type == "code" and drop in cell.source:
            if drop == "wait=True":
                cell.source = cell.source.replace("wait=True)[\"EndpointStatus\"]", "wait=False)")
            else:
                cell.source = "\n".join(line for line in cell.source.splitlines() if drop not in line)
            changed += 1
    assert changed == 1, f"{drop!r} not found once in the notebook"
    with pytest.raises(CellExecutionError) as failed:
        _run(notebook, tmp_path)
    assert failed.value.ename == error and message in failed.value.evalue, (failed.value.ename, failed.value.evalue)
