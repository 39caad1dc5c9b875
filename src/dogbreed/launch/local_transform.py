"""``dogbreed transform --local``: a Batch Transform job run by the SageMaker SDK's own local mode.

The SDK's ``LocalSession`` is the twin of CreateTransformJob: it starts the serve image with docker compose as
SageMaker starts it (``serve``, the model in ``/opt/ml/model``, ``SAGEMAKER_BATCH`` and
``SAGEMAKER_MAX_PAYLOAD_IN_MB`` set), asks ``GET /execution-parameters``, then sends each object (or each batch of
JSON lines) to ``/invocations`` and writes ``<object>.out`` files under the output folder. No AWS call is made: the
input, the output and the model are local folders (``file://``). Unlike an S3 prefix, local mode reads only the
files directly in the input folder, not those in folders below it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LOCAL_INSTANCE = "local"
SPLIT_TYPES = ("None", "Line")
BATCH_STRATEGIES = ("SingleRecord", "MultiRecord")


@dataclass(frozen=True)
class LocalTransform:
    """What one local transform job runs: the serve image, the model, the photos and where the answers go."""

    image: str
    model: Path  # a model.tar.gz, or a folder holding model.pth and model.json
    input_dir: Path
    output_dir: Path
    content_type: str = "image/jpeg"
    split_type: str = "None"
    batch_strategy: str = "SingleRecord"
    max_payload_mb: int = 6
    accept: str = "application/json"
    environment: tuple[tuple[str, str], ...] = ()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _model_folder(model: Path, scratch: Path) -> Path:
    """A folder holding only the model's archive: the SDK extracts an archive beside itself, and mounts that folder
    as /opt/ml/model."""
    folder = scratch / "model"
    folder.mkdir()
    if model.is_dir():  # every artifact the folder holds: model.pth, model.json and the dog check's head among them
        for path in model.iterdir():
            if path.is_file():
                shutil.copy2(path, folder / path.name)
    else:
        shutil.copy2(model, folder / "model.tar.gz")
    return folder


def _stop_containers(root: Path) -> None:
    """The SDK stops its container when a job ends, not when the container never became healthy (a model it
    refuses: /ping 503 until the SDK gives up), and removes neither: ``down`` every compose project it wrote under
    ``root``, then remove every container compose made there (the SDK deletes a finished job's compose file, so
    its stopped container would stay, one more each run)."""
    compose = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
    for path in root.rglob("docker-compose.yaml"):
        subprocess.run([*compose, "-f", str(path), "down", "--timeout", "5"], capture_output=True, timeout=120,
                       check=False)
    if not shutil.which("docker"):
        return
    listed = subprocess.run(["docker", "ps", "-a", "--format", '{{.ID}} {{.Label "com.docker.compose.project.working_dir"}}'],
                            capture_output=True, text=True, timeout=60, check=False).stdout
    ours = [line.split(" ", 1)[0] for line in listed.splitlines()
            if " " in line and Path(line.split(" ", 1)[1]).is_relative_to(root)]
    if ours:
        subprocess.run(["docker", "rm", "-f", *ours], capture_output=True, timeout=120, check=False)


def _session(port: int, root: Path):
    """The SDK's local session, serving on a free loopback port of its own (not 8080, which may be taken) with
    its scratch folders under ``root``."""
    import boto3
    from sagemaker.core.local.local_session import LocalSession

    # local mode needs a region to build its session; nothing here calls AWS (file:// data, a local image)
    boto = boto3.Session(region_name="us-east-1", aws_access_key_id="local",
                         aws_secret_access_key="local")  # nosec B106 - placeholders: local mode calls no AWS
    session = LocalSession(boto_session=boto)
    session.config = {"local": {"local_code": True, "serving_port": port, "container_root": str(root)}}
    return session


def _requests(job: LocalTransform, name: str) -> tuple[dict, dict]:
    model = {"ModelName": name, "PrimaryContainer": {
        "Image": job.image, "ModelDataUrl": "", "Environment": dict(job.environment)}}
    transform = {
        "TransformJobName": name, "ModelName": name,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                           "S3Uri": f"file://{job.input_dir.resolve()}"}},
                           "ContentType": job.content_type, "SplitType": job.split_type},
        "TransformOutput": {"S3OutputPath": f"file://{job.output_dir.resolve()}", "Accept": job.accept,
                            **({"AssembleWith": "Line"} if job.split_type == "Line" else {})},
        "TransformResources": {"InstanceType": LOCAL_INSTANCE, "InstanceCount": 1},
        "BatchStrategy": job.batch_strategy, "MaxPayloadInMB": job.max_payload_mb,
    }
    return model, transform


def run_local_transform(job: LocalTransform, name: str | None = None) -> list[Path]:
    """Run the job to its end; returns the ``.out`` files written under ``job.output_dir``."""
    if job.split_type not in SPLIT_TYPES or job.batch_strategy not in BATCH_STRATEGIES:
        raise ValueError(f"split type {job.split_type!r} / batch strategy {job.batch_strategy!r}: "
                         f"choose {' or '.join(SPLIT_TYPES)} / {' or '.join(BATCH_STRATEGIES)}")
    name = name or f"dogbreed-local-transform-{int(time.time() * 1000)}"
    job.output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dogbreed-transform-") as scratch:
        scratch = Path(scratch)
        model, transform = _requests(job, name)
        model["PrimaryContainer"]["ModelDataUrl"] = f"file://{_model_folder(Path(job.model), scratch)}"
        root = scratch / "containers"
        root.mkdir()
        client = _session(_free_port(), root).sagemaker_client
        client.create_model(**model)
        try:
            client.create_transform_job(**transform)  # runs the whole job, then stops the container
            status = client.describe_transform_job(TransformJobName=name)["TransformJobStatus"]
        finally:
            _stop_containers(root)
    if status != "Completed":
        raise RuntimeError(f"local transform {name} ended {status}")
    # this job's answers only (an earlier run's may share the folder): one per file directly in the input folder
    outputs = [job.output_dir / f"{path.name}.out" for path in sorted(job.input_dir.iterdir()) if path.is_file()]
    missing = [path.name for path in outputs if not path.is_file()]
    if missing:
        raise RuntimeError(f"local transform {name} left no answer for {len(missing)} input(s): {', '.join(missing[:3])}")
    return outputs
