"""`dogbreed data prepare` end to end on a zip made from the sample: a real HTTP download (resumed after a
cut), checks, a fraction, an upload to moto's S3 (AWS is unreachable here) resumed after an interruption."""

from __future__ import annotations

import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from dogbreed.launch.config import load
from dogbreed.launch.data_prepare import PrepareError, check_zip, download, plan_upload, prepare, upload

pytestmark = pytest.mark.reliability  # part of make test-reliability

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def sample_zip(sample_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("zip") / "dogImages.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(sample_dir.rglob("*.jpg")):
            archive.write(file, f"dogImages/{file.relative_to(sample_dir)}")
    return path


class _Server:
    """Serves one file with Range support; the first GET is cut after ``cut`` bytes (a dropped connection)."""

    def __init__(self, payload: bytes, cut: int | None):
        self.payload, self.cut, self.requests = payload, cut, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.headers.get("Range"))
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                body = outer.payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut is not None:
                    body, outer.cut = body[: outer.cut], None
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dogImages.zip"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def s3():
    import os

    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    os.environ.pop("AWS_ENDPOINT_URL", None)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket="dogbreed-data", CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client


def _config(tmp_path, url):
    path = tmp_path / "dogbreed.toml"
    path.write_text(f'''region = "{REGION}"\nbucket = "dogbreed-data"\nprefix = "p"\n[data]\nurl = "{url}"
expected_classes = 5\nexpected_counts = {{ train = 200, valid = 50, test = 50 }}\n''')
    return load(str(path))


def test_a_cut_download_resumes_from_where_it_stopped(sample_zip, tmp_path, record):
    payload = sample_zip.read_bytes()
    server = _Server(payload, cut=len(payload) // 3)
    try:
        with pytest.raises(PrepareError, match="run again to resume"):
            download(server.url, tmp_path / "dogImages.zip", progress=False)
        part = tmp_path / "dogImages.zip.part"
        assert 0 < part.stat().st_size < len(payload)
        done = download(server.url, tmp_path / "dogImages.zip", progress=False)
        assert done.read_bytes() == payload
        assert server.requests == [None, f"bytes={len(payload) // 3}-"]  # the second request asked only for the rest
        record("data faults", "cut download: resumed at byte", len(payload) // 3)
    finally:
        server.close()


def test_a_corrupt_or_truncated_zip_is_detected(sample_zip, tmp_path):
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(sample_zip.read_bytes()[: sample_zip.stat().st_size // 2])
    with pytest.raises(PrepareError, match="delete it and run again"):
        check_zip(truncated)
    corrupt = tmp_path / "corrupt.zip"
    data = bytearray(sample_zip.read_bytes())
    data[2000:2100] = b"\0" * 100
    corrupt.write_bytes(bytes(data))
    with pytest.raises(PrepareError, match="corrupt|not a valid zip"):
        check_zip(corrupt)


class _ConnectionCut:
    """An S3 client whose connection drops after ``good`` uploads: every later upload_file fails, as in a run
    interrupted mid-upload. The fault comes from outside; the uploader has no test switch."""

    def __init__(self, s3, good: int):
        self.s3, self.good, self.lock = s3, good, threading.Lock()

    def __getattr__(self, name):
        return getattr(self.s3, name)

    def upload_file(self, *args, **kwargs):
        with self.lock:
            self.good -= 1
            cut = self.good < 0
        if cut:
            raise ConnectionResetError("connection reset by peer (injected)")
        return self.s3.upload_file(*args, **kwargs)


def test_prepare_checks_uploads_and_an_interrupted_upload_resumes(sample_zip, tmp_path, s3, record):
    config = _config(tmp_path, sample_zip)
    root = Path(prepare(config, tmp_path / "w", upload_to_s3=False)["root"])
    files = plan_upload(root, 0.5, 0)
    assert len(files) == 150  # a stratified half of 300
    with pytest.raises(ConnectionResetError, match="injected"):
        upload(_ConnectionCut(s3, good=40), files, "dogbreed-data", "p/data")
    assert s3.list_objects_v2(Bucket="dogbreed-data", Prefix="p/data")["KeyCount"] == 40
    result = prepare(config, tmp_path / "w", fraction=0.5, s3=s3)
    assert result["upload"] == {"uploaded": 110, "skipped": 40, "total": 150}
    assert result["channels"]["train"] == "s3://dogbreed-data/p/data/train/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="dogbreed-data", Prefix="p/data/valid/")["Contents"]]
    assert len(keys) == 25 and all(k.count("/") == 4 for k in keys)
    again = prepare(config, tmp_path / "w", fraction=0.5, s3=s3)
    assert again["upload"]["uploaded"] == 0  # nothing is sent twice
    record("data faults", "interrupted upload: re-sent after resume", 0)


def test_a_set_that_is_not_dogimages_is_refused(sample_zip, tmp_path, s3):
    config = _config(tmp_path, sample_zip)
    config.set_path("data.expected_classes", 133)
    with pytest.raises(PrepareError, match="5 classes, expected 133"):
        prepare(config, tmp_path / "w", s3=s3)
