"""``dogbreed invoke``: send images to a local server (``--url``) or a SageMaker endpoint (``--endpoint``)."""

from __future__ import annotations

import http.client
import json
import mimetypes
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import InvokeError
from . import content_types as ct

DEFAULT_URL = "http://127.0.0.1:8080"


def content_type_of(path: Path) -> str:
    kind, _ = mimetypes.guess_type(str(path))
    if kind in ct.IMAGE_TYPES:
        return kind
    if path.suffix.lower() == ".npy":
        return ct.NPY
    return ct.X_IMAGE


def invoke_url(url: str, body: bytes, content_type: str, top_k: int = 5, timeout: float = 60) -> dict:
    request = urllib.request.Request(
        url.rstrip("/") + "/invocations",
        data=body,
        method="POST",
        headers={
            "Content-Type": content_type,
            "Accept": ct.JSON,
            "X-Amzn-SageMaker-Custom-Attributes": f"top_k={top_k}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # nosec B310 - the user's own server URL
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except (json.JSONDecodeError, AttributeError):
            pass
        raise InvokeError(f"{exc.code} {detail.strip()[:300]}") from exc
    except urllib.error.URLError as exc:
        raise InvokeError(f"cannot reach {url}: {exc.reason}") from exc


def invoke_endpoint(name: str, body: bytes, content_type: str, top_k: int = 5, region: str | None = None, client=None) -> dict:
    import boto3  # only for --endpoint: a local server needs no AWS SDK

    client = client or boto3.client("sagemaker-runtime", region_name=region)
    response = client.invoke_endpoint(
        EndpointName=name, ContentType=content_type, Accept=ct.JSON, Body=body, CustomAttributes=f"top_k={top_k}"
    )
    return json.loads(response["Body"].read())


def wait_until_correct(host: str, port: int, body: bytes, expected: int, process=None, timeout: float = 300) -> float:
    """Cold start: seconds from now until the server's first correct answer for ``body``, i.e. a 200 from
    /invocations whose top-1 class index is ``expected`` (what the in-process model answers for ``body``);
    a 200 with another answer, or none, does not count. ``process``: the server's Popen, so that a server
    that died is reported at once."""
    start, last = time.perf_counter(), "no answer"
    headers = {"Content-Type": ct.JPEG, "Accept": ct.JSON, "X-Amzn-SageMaker-Custom-Attributes": "top_k=1"}
    while time.perf_counter() - start < timeout:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} during start-up")
        try:
            connection = http.client.HTTPConnection(host, port, timeout=60)
            try:
                connection.request("POST", "/invocations", body=body, headers=headers)
                response = connection.getresponse()
                status, raw = response.status, response.read()
            finally:
                connection.close()
        except (OSError, http.client.HTTPException) as exc:
            last = f"{exc.__class__.__name__}: {exc}"
        else:
            if status == 200 and _top1_index(raw) == expected:
                return time.perf_counter() - start
            last = f"{status} {raw[:200].decode('utf-8', 'replace')}"
        time.sleep(0.1)
    raise TimeoutError(f"{host}:{port} gave no correct answer (class {expected}) within {timeout:.0f} s; the last: {last}")


def _top1_index(raw: bytes) -> int | None:
    try:
        return int(json.loads(raw)["predictions"][0][0]["index"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def format_answer(path: str, answer: dict) -> str:
    rows = answer.get("predictions", [[]])[0]
    shown = ", ".join(f"{row['breed']} {row['probability'] * 100:.1f}%" for row in rows)
    return f"{path}: {shown}"


def invoke_and_print(args) -> int:
    """Classify every image of ``args.images``; one image's failure raises InvokeError, several are printed.
    Returns the exit code: 1 where an image of several failed."""
    failures = 0
    for name in args.images:
        path = Path(name)
        if not path.is_file():
            raise InvokeError(f"{name}: no such file")
        body = path.read_bytes()
        kind = content_type_of(path)
        try:
            if args.endpoint:
                answer = invoke_endpoint(args.endpoint, body, kind, args.top_k, args.region)
            else:
                answer = invoke_url(args.url or DEFAULT_URL, body, kind, args.top_k)
        except InvokeError as exc:
            if len(args.images) == 1:
                raise InvokeError(f"{name}: {exc}") from exc
            print(f"{name}: error: {exc}")
            failures += 1
            continue
        print(json.dumps(answer) if args.json else format_answer(name, answer), flush=True)
    return 1 if failures else 0
