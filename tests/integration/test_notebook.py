"""The notebook runs top to bottom (nbclient) against moto's server (AWS is unreachable here)."""

from __future__ import annotations

import json
import os
import urllib.request

import boto3
import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, moto_env

pytestmark = pytest.mark.slow


def test_notebook_runs_against_moto(moto_endpoint, tmp_path, sample_dir, monkeypatch):
    env = moto_env(moto_endpoint)
    s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=moto_endpoint,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="dogbreed-nb", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    config = tmp_path / "dogbreed.toml"
    config.write_text('''region = "eu-west-1"
role = "arn:aws:iam::123456789012:role/dogbreed"
bucket = "dogbreed-nb"
train_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-train:t"
serve_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-serve:t"
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
    for key, value in {**env, "DOGBREED_CONFIG": str(config), "DOGBREED_EXAMPLE_IMAGE": str(image)}.items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("AWS_") and k not in env]:
        monkeypatch.delenv(key)
    notebook = nbformat.read(ROOT / "notebooks/train_and_deploy.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") + json.dumps(o.get("data", {})) for c in notebook.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "Beagle 90.0%" in outputs
    assert "s3://dogbreed-nb" in outputs
    sm = boto3.client("sagemaker", region_name="eu-west-1", endpoint_url=moto_endpoint,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    assert sm.list_training_jobs()["TrainingJobSummaries"]
    assert sm.list_endpoints()["Endpoints"] == []  # the last cell cleaned up
