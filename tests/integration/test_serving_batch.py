"""Batch Transform's side of the serving contract over real HTTP, on each front: ``GET /execution-parameters``,
``SAGEMAKER_MAX_PAYLOAD_IN_MB`` (a 20 MB JSON-lines body of photos answered line by line) and ``application/jsonlines``."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from dogbreed import env as envnames
from dogbreed.serving import content_types as ct
from dogbreed.serving.predictor import Predictor
from tests.conftest import free_port
from tests.serving_helpers import FRONTS, get, local_server, post, post_oversized

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MIB = 1024 * 1024
BATCH_ENV = {envnames.SAGEMAKER_MAX_PAYLOAD_IN_MB: "20", envnames.SAGEMAKER_BATCH: "true"}


@pytest.fixture(scope="module", params=FRONTS)
def server(trained, tmp_path_factory, request):
    """A server as a Batch Transform job starts it: a 20 MB payload, batch mode. (url, front)"""
    log = tmp_path_factory.mktemp("serve-batch") / "server.log"
    with local_server(trained["archive"], free_port(), log, env=BATCH_ENV, front=request.param) as (url, _):
        yield url, request.param


def _photos(sample_dir, per_breed: int = 1) -> list:
    return [path for folder in sorted((sample_dir / "test").iterdir()) for path in sorted(folder.iterdir())[:per_breed]]


def _record(data: bytes, **options) -> bytes:
    return json.dumps({"image": base64.b64encode(data).decode(), **options}).encode()


def _big_photo(seed: int) -> bytes:
    """A 1024x768 JPEG of noise, ~0.7 MB: it stays big on disk, and decodes at the model's small draft scale."""
    pixels = np.random.default_rng(seed).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _lines(answer) -> list[dict]:
    """post() parses a one-line answer as JSON; several lines stay text."""
    if isinstance(answer, dict):
        return [answer]
    return [json.loads(line) for line in answer.splitlines() if line.strip()]


def _agrees(predictor, path, answer: list[dict]) -> bool:
    """The in-process model's top 1, unless its own top two are a near tie (the engine may run in bf16)."""
    expected = predictor.top_k([Image.open(path)], 2)[0]
    return expected[0]["probability"] - expected[1]["probability"] < 0.05 or answer[0]["breed"] == expected[0]["breed"]


def test_execution_parameters_say_the_payload_and_the_strategy(server):
    url, _ = server
    status, body = get(url, "/execution-parameters")
    assert status == 200
    parameters = json.loads(body)
    assert parameters["MaxPayloadInMB"] == 20 and parameters["BatchStrategy"] == "MultiRecord"
    assert isinstance(parameters["MaxConcurrentTransforms"], int) and parameters["MaxConcurrentTransforms"] >= 1
    request = urllib.request.Request(url + "/execution-parameters", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    status, refused = refused.value.code, json.loads(refused.value.read())
    assert status == 405 and refused["status"] == 405


def test_a_20_mb_json_lines_body_is_answered_one_line_a_record(server, trained, sample_dir):
    url, _ = server
    photos = _photos(sample_dir)
    records = [_record(path.read_bytes()) for path in photos]
    bad = 2
    records.insert(bad, b'{"image": "not base64 at all!"}')
    seed = 0
    while sum(len(record) + 1 for record in records) < 20_000_000:  # then photos of ~1 MB as base64
        records.append(_record(_big_photo(seed), top_k=1))
        seed += 1
    body = b"\n".join(records) + b"\n"
    assert 20_000_000 <= len(body) <= 20 * MIB and len(body) > 6 * MIB
    status, answer, headers = post(url, body, ct.JSONLINES, {"Accept": ct.JSONLINES}, timeout=300)
    assert status == 200, str(answer)[:300]
    assert headers["content-type"] == ct.JSONLINES
    lines = _lines(answer)
    assert len(lines) == len(records)
    assert set(lines[bad]) == {"error", "status"} and lines[bad]["status"] == 400
    predictor = Predictor(trained["model_dir"], precision="fp32", graph="eager")
    answers = lines[:bad] + lines[bad + 1 : len(photos) + 1]
    for path, line in zip(photos, answers, strict=True):
        assert len(line["predictions"][0]) == 5
        assert _agrees(predictor, path, line["predictions"][0]), (path, line)
    assert all(len(line["predictions"][0]) == 1 for line in lines[len(photos) + 1 :])  # each record's own top_k


def test_over_the_payload_is_413(server):
    url, _ = server
    status, message = post_oversized(url, 21 * MIB)
    assert status == 413 and "Too Large" in message


def test_json_lines_are_answered_as_json_lines_whatever_the_accept(server, sample_dir):
    url, _ = server
    path = _photos(sample_dir)[0]
    body = _record(path.read_bytes(), top_k=2) + b"\n" + b"{broken\n" + _record(path.read_bytes()) + b"\n"
    for accept in (None, "*/*", ct.JSON, "application/jsonl"):
        status, answer, headers = post(url, body, ct.JSONLINES, {"Accept": accept} if accept else {})
        assert status == 200 and headers["content-type"] == ct.JSONLINES, (accept, answer)
        lines = _lines(answer)
        assert [len(line.get("predictions", [[]])[0]) for line in lines] == [2, 0, 5] and lines[1]["status"] == 400
    status, answer, _ = post(url, body, ct.JSONLINES, {"Accept": "text/csv"})
    assert status == 406 and answer["status"] == 406


def test_without_the_payload_setting_a_20_mb_body_is_413(trained, tmp_path):
    """The same edge answers both fronts: the native one stands for both (test_serving_http: 7 MB on each)."""
    with local_server(trained["archive"], free_port(), tmp_path / "server.log", front="native") as (url, _):
        status, message = post_oversized(url, 20_000_000)
        assert status == 413 and "Too Large" in message
        assert json.loads(get(url, "/execution-parameters")[1])["MaxPayloadInMB"] == 6
