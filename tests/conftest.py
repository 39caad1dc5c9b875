"""Shared fixtures: the synthetic sample, a model trained on it through the real train entry, ../shared."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DOGBREED_SHARED", ROOT.parent / "shared"))
DOGS10 = SHARED / "data" / "dogs10"
LITE0_WEIGHTS = SHARED / "weights" / "tf_efficientnet_lite0.in1k.pth"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# A small, quick model for the tests that only need *a* trained model.
QUICK_FLAGS = [
    "--model", "resnet18", "--pretrained-weights", "none", "--input-size", "64",
    "--epochs", "3", "--batch-size", "25", "--lr", "0.003", "--patience", "0", "--num-workers", "1",
]


def needs_shared():
    return pytest.mark.skipif(not DOGS10.is_dir() or not LITE0_WEIGHTS.is_file(),
                              reason=f"../shared (dogs10 and the tf_efficientnet_lite0 weights) not found at {SHARED}")


def free_port() -> int:
    """A free loopback port below 32768 (multi-model-server refuses higher port numbers)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    from dogbreed.sample import make_sample

    root = tmp_path_factory.mktemp("sample") / "dogImages"
    make_sample(root, classes=5, size=96, seed=0)
    return root


@pytest.fixture(scope="session")
def trained(tmp_path_factory, sample_dir):
    """A model trained on the sample by the real train entry: (work dir, model dir, archive, stdout)."""
    from dogbreed.local import local_train

    work = tmp_path_factory.mktemp("trained")
    log = work / "stdout.log"
    with open(log, "w") as handle:
        code, archive = local_train(sample_dir, work, QUICK_FLAGS, stdout=handle)
    failure = work / "opt_ml" / "output" / "failure"
    assert code == 0, failure.read_text() if failure.exists() else log.read_text()
    return {"work": work, "model_dir": work / "opt_ml" / "model", "archive": archive, "stdout": log.read_text(),
            "output": work / "opt_ml" / "output" / "data"}


def dogbreed_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "dogbreed.cli", *args]


def run_cli(*args, timeout=600, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(dogbreed_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="session")
def docker():
    """Docker tests skip where no daemon answers, except in CI, where a missing docker is a failure."""
    if not docker_available():
        if IN_CI:
            pytest.fail("docker is required in CI (.ci/run installs and starts it) but no daemon answers")
        pytest.skip("no docker daemon answers here (CI makes this a failure)")
    return "docker"


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """moto's server on loopback (AWS is unreachable here): for code that runs in another process."""
    import time
    import urllib.request

    port = free_port()
    moto = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    process = subprocess.Popen([moto, "-p", str(port), "-H", "127.0.0.1"], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=20)


def moto_env(url: str, region: str = "eu-west-1") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": region, "AWS_REGION": region})
    return env


class SlowJobs:
    """An HTTP proxy on 127.0.0.1 in front of moto's server, where jobs take time as on AWS.

    moto finishes every job at once. Here a training job, a tuning job and an endpoint move one step per
    describe call: the first ``steps`` DescribeTrainingJob / DescribeHyperParameterTuningJob / DescribeEndpoint
    answers for a name say InProgress (Creating), without ModelArtifacts, BestTrainingJob or end times; later
    answers are moto's own (Completed, InService). InvokeEndpoint fails as AWS does until the endpoint has been
    seen InService. So a caller that does not wait (describe until done) reads an unfinished job and fails.
    Nothing in src/ knows about it: the code under test only sees AWS_ENDPOINT_URL.
    """

    SAGEMAKER = {  # X-Amz-Target -> (kind, name parameter)
        "SageMaker.DescribeTrainingJob": ("training", "TrainingJobName"),
        "SageMaker.DescribeHyperParameterTuningJob": ("tuning", "HyperParameterTuningJobName"),
        "SageMaker.DescribeEndpoint": ("endpoint", "EndpointName"),
    }
    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "expect", "proxy-connection"}

    def __init__(self, upstream: str, steps: int = 3):
        import collections
        import threading
        from http.server import ThreadingHTTPServer
        from urllib.parse import urlparse

        self.upstream = urlparse(upstream)
        self.steps = steps
        self.describes: collections.Counter = collections.Counter()  # (kind, name) -> describe calls
        self.refused_invocations: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def in_service(self, endpoint: str) -> bool:
        return self.describes[("endpoint", endpoint)] > self.steps

    def _step(self, kind: str, name: str) -> int:
        with self._lock:
            self.describes[(kind, name)] += 1
            return self.describes[(kind, name)]

    def _rewrite(self, target: str, request_body: bytes, status: int, body: bytes) -> bytes:
        kind, key = self.SAGEMAKER[target]
        name = json.loads(request_body or b"{}").get(key, "")
        call = self._step(kind, name)
        if status != 200 or call > self.steps:
            return body
        described = json.loads(body)
        if kind == "training":
            described["TrainingJobStatus"] = "InProgress"
            described["SecondaryStatus"] = "Starting" if call == 1 else "Training"
            for gone in ("ModelArtifacts", "TrainingEndTime", "FinalMetricDataList", "BillableTimeInSeconds"):
                described.pop(gone, None)
        elif kind == "tuning":
            described["HyperParameterTuningJobStatus"] = "InProgress"
            described["TrainingJobStatusCounters"] = {"Completed": 0, "InProgress": 1, "RetryableError": 0,
                                                      "NonRetryableError": 0, "Stopped": 0}
            for gone in ("BestTrainingJob", "OverallBestTrainingJob", "HyperParameterTuningEndTime"):
                described.pop(gone, None)
        else:
            described["EndpointStatus"] = "Creating"
        return json.dumps(described).encode()

    def _trials(self, request_body: bytes) -> bytes:
        """Two trials of the tuning job (moto has no ListTrainingJobsForHyperParameterTuningJob): unfinished,
        without objective values, until the tuning job has been seen finished."""
        request = json.loads(request_body or b"{}")
        tuning = request.get("HyperParameterTuningJobName", "")
        finished = self.describes[("tuning", tuning)] > self.steps
        trials = []
        for number, (lr, loss) in enumerate([("0.01", 0.42), ("0.003", 0.37)], start=1):
            trial = {"TrainingJobName": f"{tuning}-{number:03d}-0000000{number}", "TrainingJobArn": "arn:fake",
                     "CreationTime": 1700000000, "TrainingJobStatus": "Completed" if finished else "InProgress",
                     "TunedHyperParameters": {"lr": f'"{lr}"'}}
            if finished:
                trial["FinalHyperParameterTuningJobObjectiveMetric"] = {"MetricName": "valid_loss", "Value": loss}
            trials.append(trial)
        # As AWS does: the order the request asks for (SortBy FinalObjectiveMetricValue, SortOrder; default Descending).
        trials.sort(key=lambda t: t.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value", 0),
                    reverse=request.get("SortOrder", "Descending") == "Descending")
        return json.dumps({"TrainingJobSummaries": trials}).encode()

    def _handler(self):
        import http.client
        import re
        from http.server import BaseHTTPRequestHandler

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in proxy.HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self) -> None:
                body = self._body()
                invocation = re.fullmatch(r"/endpoints/([^/]+)/invocations", self.path.split("?")[0])
                if self.command == "POST" and invocation and not proxy.in_service(invocation.group(1)):
                    proxy.refused_invocations.append(invocation.group(1))
                    message = json.dumps({"message": f"Endpoint {invocation.group(1)} is not in service yet (Creating)."})
                    self._reply(400, [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ValidationError")],
                                message.encode())
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.HOP_BY_HOP}
                connection = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                try:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    answer = connection.getresponse()
                    answer_body = answer.read()
                    answer_headers = answer.getheaders()
                    status = answer.status
                finally:
                    connection.close()
                target = self.headers.get("X-Amz-Target", "")
                if target == "SageMaker.ListTrainingJobsForHyperParameterTuningJob":  # moto lacks it
                    self._reply(200, [("Content-Type", "application/x-amz-json-1.1")], proxy._trials(body))
                    return
                if target in proxy.SAGEMAKER:
                    answer_body = proxy._rewrite(target, body, status, answer_body)
                self._reply(status, answer_headers, answer_body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _forward

        return Handler


@pytest.fixture
def slow_moto(moto_endpoint):
    """SlowJobs in front of the moto server: jobs take 3 describes to finish (see SlowJobs)."""
    proxy = SlowJobs(moto_endpoint, steps=3)
    yield proxy
    proxy.close()


# --- the reliability table (tests/reliability record rows; printed at the end of make test / test-reliability)
RELIABILITY_RESULTS = Path(os.environ.get("DOGBREED_RELIABILITY_RESULTS", ".work/reliability/results.jsonl"))


def pytest_sessionstart(session):
    if RELIABILITY_RESULTS.exists():
        RELIABILITY_RESULTS.unlink()


def pytest_terminal_summary(terminalreporter):
    if not RELIABILITY_RESULTS.exists():
        return
    rows = [json.loads(line) for line in RELIABILITY_RESULTS.read_text().splitlines() if line.strip()]
    if not rows:
        return
    terminalreporter.section("reliability")
    width = max(len(r["what"]) for r in rows)
    terminalreporter.write_line(f"{'category':<16} {'what':<{width}}  {'value':>14}  verdict")
    for r in rows:
        verdict = "ok" if r["ok"] else "FAILED"
        terminalreporter.write_line(f"{r['category']:<16} {r['what']:<{width}}  {str(r['value']):>14}  {verdict}")


@pytest.fixture
def record(request):
    """record(category, what, value, ok): one row of the reliability table."""

    def write(category: str, what: str, value, ok: bool = True):
        RELIABILITY_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with open(RELIABILITY_RESULTS, "a") as handle:
            handle.write(json.dumps({"test": request.node.name, "category": category, "what": what, "value": value,
                                     "ok": ok}) + "\n")

    return write


