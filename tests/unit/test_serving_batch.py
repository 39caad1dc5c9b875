"""Batch Transform and async on the serving side, below HTTP: the settings snapshot, ``/execution-parameters`` and
the body limit on the shared edge (driven as ASGI), JSON lines through the handler, and each front's timeouts."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json

import pytest
from PIL import Image

from dogbreed import env as envnames
from dogbreed.serving import content_types as ct
from dogbreed.serving import decoders, handler, native, server
from dogbreed.serving.edge import Edge, EdgeLimits
from dogbreed.serving.errors import BadRequest, NotAcceptable, PayloadTooLarge
from dogbreed.serving.native_app import Model, invoke
from dogbreed.serving.settings import MIB, ServingSettings
from tests.hostile import Headers

TWENTY = {envnames.SAGEMAKER_MAX_PAYLOAD_IN_MB: "20"}


def _settings(environ: dict, cores: int = 4, gpus: int = 0, pending: int = 32) -> ServingSettings:
    return ServingSettings.from_environ({envnames.DOGBREED_NATIVE_PENDING: str(pending), **environ}, cores=cores,
                                        gpus=gpus)


# --- the settings ---------------------------------------------------------------------------------------------------


def test_the_defaults_are_a_real_time_endpoints():
    settings = _settings({})
    assert settings.max_body_bytes == 6 * MIB and settings.payload_mb == 6 and settings.scale == 1.0
    assert settings.response_timeout_s == 60 and settings.engine_wait_s == 30 and not settings.batch


def test_the_payload_in_mb_wins_over_the_request_size_up_and_down():
    assert _settings({**TWENTY, envnames.SAGEMAKER_MAX_REQUEST_SIZE: "1000"}).max_body_bytes == 20 * MIB
    assert _settings({envnames.SAGEMAKER_MAX_PAYLOAD_IN_MB: "4"}).max_body_bytes == 4 * MIB  # serverless
    assert _settings({envnames.SAGEMAKER_MAX_REQUEST_SIZE: "1000"}).max_body_bytes == 1000
    assert _settings(TWENTY).scale == pytest.approx(20 / 6)
    assert _settings({envnames.SAGEMAKER_MAX_PAYLOAD_IN_MB: "4"}).scale == 1.0  # budgets never shrink
    assert _settings({envnames.SAGEMAKER_MAX_PAYLOAD_IN_MB: "0"}).payload_mb == 100  # a job's chunked, unbounded bodies


@pytest.mark.parametrize("raw", ["101", "twenty", "-3"])
def test_a_payload_out_of_range_is_refused_by_name(raw):
    with pytest.raises(ValueError, match=envnames.SAGEMAKER_MAX_PAYLOAD_IN_MB):
        _settings({envnames.SAGEMAKER_MAX_PAYLOAD_IN_MB: raw})


def test_the_response_timeout_is_the_setting_else_longer_in_a_batch_job():
    assert _settings({envnames.SAGEMAKER_BATCH: "true"}).response_timeout_s == 600
    asynchronous = _settings({envnames.SAGEMAKER_MODEL_SERVER_TIMEOUT: "3600"})
    assert asynchronous.response_timeout_s == 3600 and asynchronous.engine_wait_s == 1800
    explicit = _settings({envnames.SAGEMAKER_MODEL_SERVER_TIMEOUT: "3600", envnames.SAGEMAKER_BATCH: "true"})
    assert explicit.response_timeout_s == 3600 and explicit.batch
    assert _settings({"DOGBREED_ENGINE_WAIT_S": "12"}).engine_wait_s == 12


def test_max_concurrent_transforms_is_the_cores_at_least_two_a_gpu_within_the_admission_bound():
    assert _settings({}, cores=8).concurrent_transforms == 8
    assert _settings({}, cores=4, gpus=4).concurrent_transforms == 8
    assert _settings({}, cores=96, pending=32).concurrent_transforms == 32
    assert _settings({}, cores=1).concurrent_transforms == 1


# --- the edge, as ASGI ----------------------------------------------------------------------------------------------


class _Echo(Edge):
    """A front that answers every admitted body with its length."""

    def ping(self):
        return None

    async def answer(self, body, headers):
        return 200, str(len(body)).encode(), {"content-type": "text/plain"}


def _call(app: Edge, method: str, path: str, body: bytes = b"", headers: tuple = ()) -> tuple[int, dict, bytes]:
    sent, chunks = [], [body[i : i + MIB] for i in range(0, len(body), MIB)] or [b""]

    async def receive():
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "method": method,
             "headers": [(name.encode(), value.encode()) for name, value in headers]}
    asyncio.run(app(scope, receive, send))
    head = {name.decode(): value.decode() for name, value in sent[0]["headers"]}
    return sent[0]["status"], head, sent[1]["body"]


def _edge(environ: dict, cores: int = 4) -> _Echo:
    settings = _settings(environ, cores=cores)
    return _Echo(EdgeLimits(max_body_bytes=settings.max_body_bytes), settings)


def test_execution_parameters_answer_the_settings():
    status, head, body = _call(_edge(TWENTY, cores=3), "GET", "/execution-parameters")
    assert status == 200 and head["content-type"] == ct.JSON
    assert json.loads(body) == {"MaxConcurrentTransforms": 3, "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 20}
    assert json.loads(_call(_edge({}), "GET", "/execution-parameters")[2])["MaxPayloadInMB"] == 6


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_other_methods_on_execution_parameters_are_405(method):
    status, head, body = _call(_edge({}), method, "/execution-parameters")
    assert status == 405 and head["allow"] == "GET" and json.loads(body)["status"] == 405


@pytest.mark.parametrize("declared", [True, False])  # by its Content-Length, and chunked with none
def test_a_20_mb_body_is_admitted_under_a_20_mb_payload_and_413_without(declared):
    body = b"x" * (20 * 1000 * 1000)
    headers = (("content-length", str(len(body))),) if declared else ()
    status, _, answer = _call(_edge(TWENTY), "POST", "/invocations", body, headers)
    assert status == 200 and int(answer) == len(body)
    status, _, answer = _call(_edge({}), "POST", "/invocations", body, headers)
    assert status == 413 and json.loads(answer)["status"] == 413


# --- JSON lines through the handler ---------------------------------------------------------------------------------


class _Model:
    """k rows an image, each naming the image's colour (its red value) so that the answers can be told apart."""

    meta = {"arch": "fake"}
    draft_size = None
    wait_s = 30.0

    def __init__(self):
        self.calls = []

    def describe(self) -> str:
        return "a fake model"

    def top_k(self, images, k):
        self.calls.append((len(images), k))
        return [[{"breed": f"red {image.getpixel((0, 0))[0]}", "probability": 1.0 / (rank + 1)} for rank in range(k)]
                for image in images]

    def answer(self, images, k, explain=False):
        return {"predictions": self.top_k(images, k), "dog": [{"is_dog": True, "score": 1.0, "threshold": 0.0}
                                                               for _ in images]}


def _record(red: int, **options) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (red, 0, 0)).save(buffer, "PNG")
    return json.dumps({"image": base64.b64encode(buffer.getvalue()).decode(), **options}).encode()


def _answer(body: bytes, accept: str | None = None) -> tuple[list[dict], str]:
    model = _Model()
    data = handler.input_fn(body, ct.JSONLINES)
    text, kind = handler.output_fn(handler.predict_fn(data, model), accept)
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()], kind


@pytest.fixture(autouse=True)
def _real_time_budgets():
    handler.configure(ServingSettings())
    yield
    handler.configure(ServingSettings())


def test_json_lines_answer_one_line_a_record_in_order_a_bad_record_in_its_place():
    body = b"\n".join([_record(10), b'{"image": "not base64!"}', _record(30, top_k=2), b"{not json", _record(50),
                       _record(60, top_k="many")]) + b"\n"
    lines, kind = _answer(body)
    assert kind == ct.JSONLINES and len(lines) == 6
    assert [line["predictions"][0][0]["breed"] for line in (lines[0], lines[2], lines[4])] == ["red 10", "red 30", "red 50"]
    assert len(lines[0]["predictions"][0]) == 5 and len(lines[2]["predictions"][0]) == 2  # each record's own k
    for index in (1, 3, 5):
        assert set(lines[index]) == {"error", "status"} and lines[index]["status"] == 400
        assert lines[index]["error"].startswith(f"record {index + 1}:")


@pytest.mark.parametrize("accept", [None, ct.ANY, ct.JSONLINES, "application/jsonl", ct.JSON])
def test_json_lines_are_answered_in_json_lines_for_what_a_front_may_pass(accept):
    assert _answer(_record(1) + b"\n", accept)[1] == ct.JSONLINES


def test_json_lines_refuse_an_accept_they_cannot_answer():
    with pytest.raises(NotAcceptable):
        _answer(_record(1), "text/csv")


def test_json_lines_of_only_bad_records_run_nothing_and_answer_every_error():
    model = _Model()
    data = handler.input_fn(b"[]\n{}\n", "application/jsonlines")
    text, _ = handler.output_fn(handler.predict_fn(data, model), None)
    assert model.calls == [] and [json.loads(line)["status"] for line in text.splitlines()] == [400, 400]


def test_a_6_mb_json_lines_request_holds_more_records_than_a_batch_and_scales_with_the_payload():
    """Batch Transform packs as many lines as fit in MaxPayloadInMB: 6 MB of small photos is ~170 records, far past
    MAX_BATCH; each is answered, in order. Past the records bound, the request is refused whole (no silent holes).
    An endpoint (no SAGEMAKER_BATCH) keeps MAX_BATCH: each record costs a crop, however small its photo."""
    body = b"\n".join([_record(index % 250) for index in range(200)])
    with pytest.raises(PayloadTooLarge, match=f"200 records in one request; at most {decoders.MAX_BATCH}"):
        _answer(body)
    handler.configure(ServingSettings(batch=True))
    lines, _ = _answer(body)
    assert not any("error" in line for line in lines) and len(lines) == 200
    many = b"\n".join([_record(index % 250) for index in range(decoders.MAX_RECORDS + 1)])
    with pytest.raises(PayloadTooLarge, match=f"{decoders.MAX_RECORDS + 1} records in one request; at most"):
        _answer(many)
    handler.configure(dataclasses.replace(_settings(TWENTY), batch=True))  # 20 MB: 3.3 times as many
    lines, _ = _answer(many)
    assert not any("error" in line for line in lines) and len(lines) == decoders.MAX_RECORDS + 1


def test_a_record_that_fails_after_a_big_image_has_spent_its_pixels():
    """One budget for the whole body, charged before each decode: records that decode a big image and then fail
    (a bad second instance) may not decode the budget many times over (64 such records once took 58 times it)."""
    buffer = io.BytesIO()
    Image.new("L", (5000, 4000), 128).save(buffer, "PNG")  # 20 MP: the 50 MP budget holds two
    big = base64.b64encode(buffer.getvalue()).decode()
    body = b"\n".join(json.dumps({"instances": [big, "not base64!"]}).encode() for _ in range(4))
    records = handler.input_fn(body, ct.JSONLINES)["records"]
    assert [record["status"] for record in records] == [400, 400, 413, 413], records
    assert "pixel budget" in records[2]["error"] and "base64" in records[1]["error"]


def test_a_single_request_may_ask_for_json_lines():
    prediction = handler.predict_fn(handler.input_fn(_record(7), ct.JSON), _Model())
    text, kind = handler.output_fn(prediction, ct.JSONLINES)
    assert kind == ct.JSONLINES and text.endswith("\n") and json.loads(text)["predictions"][0][0]["breed"] == "red 7"


@pytest.mark.parametrize("content_type", [ct.JSON, ct.JSONLINES])
def test_an_accept_nobody_can_answer_is_a_406_before_the_model_runs(content_type):
    model = _Model()
    status, body, _ = invoke(model, _record(5) + b"\n", {"content-type": content_type, "accept": "text/csv"}, ct.JSON)
    assert status == 406 and "text/csv" in json.loads(body)["error"] and model.calls == []
    status, _, headers = invoke(model, _record(5), {"content-type": content_type, "accept": "*/*"}, ct.JSON)
    assert status == 200 and model.calls  # any: the default answer type


def test_the_native_front_answers_json_lines_with_their_type():
    status, body, headers = invoke(_Model(), _record(5) + b"\n" + b"oops\n", {"content-type": ct.JSONLINES}, ct.JSON)
    assert status == 200 and headers["content-type"] == ct.JSONLINES
    assert [("error" in json.loads(line)) for line in body.decode().splitlines()] == [False, True]


# --- each front's timeouts ------------------------------------------------------------------------------------------


def _config(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_the_mms_front_takes_the_timeout_and_the_payload():
    pytest.importorskip("sagemaker_inference")
    settings = _settings({**TWENTY, envnames.SAGEMAKER_MODEL_SERVER_TIMEOUT: "3600"})
    config = _config(server.mms_config(settings, 29001, 2, 29002))
    assert config["default_response_timeout"] == "3600"
    assert config["max_request_size"] == str(20 * MIB) and int(config["max_response_size"]) >= 20 * MIB
    assert server.forward_timeout(settings) > 3600  # the edge outwaits multi-model-server's own timeout
    default = _config(server.mms_config(_settings({}), 29001, 2, 29002))
    assert default["default_response_timeout"] == "60" and default["max_request_size"] == str(6 * MIB)


def test_the_native_front_waits_for_the_engine_within_the_timeout(monkeypatch, tmp_path):
    model, fake = Model(), _Model()
    def start_engine(model_dir, state_dir, settings):
        fake.wait_s = settings.engine_wait_s
        return fake

    monkeypatch.setattr(native, "start_engine", start_engine)
    native.load(model, tmp_path, tmp_path, _settings({envnames.SAGEMAKER_MODEL_SERVER_TIMEOUT: "3600", **TWENTY}))
    assert model.reason is None and model.predictor is fake and fake.wait_s == 1800
    assert fake.calls == [(1, 5)]  # the warm-up request went through
    assert handler.input_fn(b"\n".join([_record(1)] * 100), ct.JSONLINES)["images"].__len__() == 100  # 20 MB budget


def test_a_body_of_blank_records_is_refused_before_any_is_decoded():
    decoded = []

    def decode_record(line):
        decoded.append(line)
        return [], {}

    from dogbreed.serving.jsonlines import decode_records

    with pytest.raises(PayloadTooLarge):  # 6 MB of "{}" lines once cost 1.6 GB of answer lines
        decode_records(b"{}\n" * 2_000_000, decode_record, 5, 64)
    assert decoded == []


def test_explain_is_bounded_in_images_a_request_json_and_json_lines():
    """Each explained photo is an eager pass with gradients: one body may not ask for hundreds of them."""
    many = [json.loads(_record(index))["image"] for index in range(handler.MAX_EXPLAINED + 1)]
    with pytest.raises(PayloadTooLarge, match=f"at most {handler.MAX_EXPLAINED} images"):
        handler.input_fn(json.dumps({"instances": many, "explain": True}).encode(), ct.JSON)
    data = handler.input_fn(json.dumps({"instances": many[:-1], "explain": True}).encode(), ct.JSON)
    assert data["explain"] and len(data["images"]) == handler.MAX_EXPLAINED
    assert not handler.input_fn(json.dumps({"instances": many}).encode(), ct.JSON)["explain"]  # no explain: no bound
    lines = [_record(index) for index in range(handler.MAX_EXPLAINED)] + [_record(99, explain=True)]
    with pytest.raises(PayloadTooLarge, match="explain=true takes at most"):  # one record asks: the body is explained
        handler.input_fn(b"\n".join(lines), ct.JSONLINES)


@pytest.mark.parametrize("word, on", [("true", True), ("ON", True), ("yes", True), (True, True),
                                      ("off", False), ("0", False), (False, False)])
def test_a_request_flag_takes_the_settings_words(word, on):
    body = json.dumps({"instances": [json.loads(_record(0))["image"]], "reject_non_dogs": word}).encode()
    assert handler.input_fn(body, ct.JSON)["reject_non_dogs"] is on
    png = base64.b64decode(json.loads(_record(0))["image"])
    attributes = Headers({handler.CUSTOM_ATTRIBUTES: f"explain={str(word).lower()}"})
    assert handler.input_fn(png, ct.PNG, attributes)["explain"] is on


@pytest.mark.parametrize("word", ["maybe", 2, "treu"])
def test_a_request_flag_that_is_neither_is_a_400(word):
    body = json.dumps({"instances": [json.loads(_record(0))["image"]], "explain": word}).encode()
    with pytest.raises(BadRequest, match="explain must be true or false"):
        handler.input_fn(body, ct.JSON)
