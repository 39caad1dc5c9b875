"""``dogbreed invoke --endpoint``: each request's size checked against what the endpoint's mode takes, before it is
sent; ``--async``: the photos go to S3, InvokeEndpointAsync is called for each, and the answers are read back from
the output objects AWS writes.

AWS's limits: 6 MB a real-time request, 4 MB a serverless one, 1 GB an async one (and a Batch Transform record
its job's MaxPayloadInMB: ``transform.py``). The endpoint's mode comes from DescribeEndpoint; a caller without
that permission is held to the real-time 6 MB.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

from ..errors import InvokeError
from ..serving import content_types as ct
from ..serving.client import content_type_of, format_answer
from . import apimodel
from .config import Config

MB = 1024 * 1024
LIMIT_MB = {"real-time": 6, "serverless": 4, "async": 1024}


def endpoint_mode(sagemaker, endpoint: str) -> str:
    """``real-time``, ``serverless`` or ``async``, from the endpoint's description (real-time if it cannot be read)."""
    from botocore.exceptions import ClientError

    try:
        described = sagemaker.describe_endpoint(EndpointName=endpoint)
    except ClientError:  # no DescribeEndpoint permission, or no such endpoint: InvokeEndpoint will say which
        return "real-time"
    if described.get("AsyncInferenceConfig"):
        return "async"
    variants = described.get("ProductionVariants") or []
    return "serverless" if any(v.get("CurrentServerlessConfig") for v in variants) else "real-time"


def check_sizes(paths: list[Path], mode: str) -> None:
    """Refuse, before any call, a photo larger than the mode takes (or one that is missing)."""
    limit = LIMIT_MB[mode]
    for path in paths:
        if not path.is_file():
            raise InvokeError(f"{path}: no such file")
        size = path.stat().st_size
        if size > limit * MB:
            article = "an" if mode == "async" else "a"
            raise InvokeError(f"{path} is {size / MB:.1f} MB; {article} {mode} endpoint takes at most {limit} MB a request"
                              + ("" if mode == "async" else ": deploy with --async for larger photos"))


def upload(s3, config: Config, endpoint: str, path: Path) -> str:
    """The photo under ``<s3 root>/async-input/<endpoint>/``, named uniquely; returns its S3 URI."""
    root = config.s3_root.removeprefix("s3://")
    bucket, _, prefix = root.partition("/")
    key = "/".join(p for p in (prefix, "async-input", endpoint, f"{uuid.uuid4().hex[:12]}-{path.name}") if p)
    s3.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def _read(s3, uri: str | None) -> bytes | None:
    """The object's bytes, or None while it does not exist."""
    from botocore.exceptions import ClientError

    if not uri:
        return None
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def invoke_async(boto, config: Config, endpoint: str, paths: list[Path], top_k: int = 5, poll_s: float = 5.0,
                 timeout_s: float = 3600.0, as_json: bool = False, out=None) -> int:
    """Send every photo, then wait for every answer; print each as it comes. Returns 1 where one failed."""
    out = out or (lambda line: print(line, file=sys.stdout, flush=True))
    check_sizes(paths, "async")
    s3, runtime = boto.client("s3"), boto.client("sagemaker-runtime")
    pending = {}
    for path in paths:
        request = {"EndpointName": endpoint, "InputLocation": upload(s3, config, endpoint, path),
                   "ContentType": content_type_of(path), "Accept": ct.JSON, "CustomAttributes": f"top_k={top_k}"}
        found = apimodel.problems("InvokeEndpointAsync", request, service="sagemaker-runtime")
        if found:
            raise InvokeError("; ".join(found))
        answer = runtime.invoke_endpoint_async(**request)
        pending[str(path)] = (answer.get("OutputLocation"), answer.get("FailureLocation"))
        out(f"{path}: queued ({answer.get('InferenceId')}), answer to {answer.get('OutputLocation')}")
    return _collect(s3, pending, poll_s, timeout_s, as_json, out)


def _collect(s3, pending: dict, poll_s: float, timeout_s: float, as_json: bool, out) -> int:
    failures, started = 0, time.monotonic()
    while pending:
        for name, (output, failure) in list(pending.items()):
            body, failed = _read(s3, output), _read(s3, failure)
            if body is not None:
                answer = json.loads(body)
                out(json.dumps(answer) if as_json else format_answer(name, answer))
            elif failed is not None:
                out(f"{name}: error: {failed.decode('utf-8', 'replace').strip()[:300]}")
                failures += 1
            else:
                continue
            del pending[name]
        if pending and time.monotonic() - started > timeout_s:
            raise InvokeError(f"no answer after {timeout_s:.0f} s for {', '.join(pending)} (the requests go on: "
                              f"the answers will be at {', '.join(o for o, _ in pending.values())})")
        if pending:
            time.sleep(poll_s)
    return 1 if failures else 0
