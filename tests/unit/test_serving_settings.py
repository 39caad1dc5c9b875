"""The one serving settings snapshot: every serving variable is read there (and documented), and each value out of
its range is refused by name at start, rather than served with (a bound of 0 refuses every request)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dogbreed import env as envnames
from dogbreed.serving.edge import EdgeLimits
from dogbreed.serving.settings import GRAPH_MODES, MIB, ServingSettings

SETTINGS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
# Serving names set by the server for its own workers (never by a user): in the snapshot, not in the settings page
SET_BY_THE_SERVER = {envnames.DOGBREED_ENGINE_SOCKET}


class _Recording(dict):
    def __init__(self, values=None):
        super().__init__(values or {})
        self.asked: set[str] = set()

    def get(self, name, default=None):
        self.asked.add(name)
        return super().get(name, default)


def _serving_names() -> set[str]:
    names = {value for name, value in vars(envnames).items() if name.isupper() and isinstance(value, str)}
    serving = {n for n in names if n.startswith(("SAGEMAKER_MODEL_SERVER", "SAGEMAKER_MAX_", "DOGBREED_SERVE",
                                                 "DOGBREED_MAX_", "DOGBREED_NATIVE", "DOGBREED_ENGINE",
                                                 "DOGBREED_KEEP", "DOGBREED_READ", "DOGBREED_MMS", "DOGBREED_PRECISION_C"))}
    return serving | {envnames.SAGEMAKER_BIND_TO_PORT, envnames.SAGEMAKER_BATCH, envnames.DOGBREED_SERVER,
                      envnames.SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT}


def test_every_serving_variable_is_read_by_the_snapshot_and_documented():
    environ = _Recording()
    ServingSettings.from_environ(environ, cores=2, gpus=0)
    assert _serving_names() <= environ.asked, _serving_names() - environ.asked
    page = SETTINGS_PAGE.read_text()
    documented = environ.asked - SET_BY_THE_SERVER
    assert all(f"`{name}`" in page for name in documented), [n for n in documented if f"`{n}`" not in page]


def test_the_edge_takes_its_bounds_from_the_snapshot():
    settings = ServingSettings.from_environ({envnames.DOGBREED_MAX_HEAD_BYTES: "4096", envnames.DOGBREED_MAX_HEADERS: "20",
                                             envnames.DOGBREED_READ_TIMEOUT_S: "2.5", envnames.DOGBREED_NATIVE_PENDING: "4",
                                             envnames.DOGBREED_MAX_CONNECTIONS: "9", envnames.DOGBREED_KEEP_ALIVE_S: "3"},
                                            cores=2, gpus=0)
    assert EdgeLimits.from_settings(settings) == EdgeLimits(max_body_bytes=6 << 20, max_head_bytes=4096, max_headers=20,
                                                            read_timeout_s=2.5, pending=4, max_connections=9,
                                                            keep_alive_s=3.0)


@pytest.mark.parametrize("name, raw", [
    (envnames.DOGBREED_MAX_HEAD_BYTES, "0"), (envnames.DOGBREED_MAX_HEAD_BYTES, "16k"),
    (envnames.DOGBREED_MAX_HEADERS, "-1"), (envnames.DOGBREED_READ_TIMEOUT_S, "0"),
    (envnames.DOGBREED_READ_TIMEOUT_S, "nan"), (envnames.DOGBREED_NATIVE_PENDING, "0"),
    (envnames.DOGBREED_MAX_CONNECTIONS, "8"),  # fewer than the 32 admitted requests
    (envnames.DOGBREED_KEEP_ALIVE_S, "inf"), (envnames.DOGBREED_ENGINE_WAIT_S, "soon"),
    (envnames.DOGBREED_SERVE_BATCH, "0"), (envnames.DOGBREED_SERVE_THREADS, "2.5"),
    (envnames.DOGBREED_SERVER, "netty"), (envnames.DOGBREED_SERVE_ENGINE, "yes"), (envnames.DOGBREED_SERVE_GRAPH, "jit"),
    (envnames.SAGEMAKER_BIND_TO_PORT, "70000"), (envnames.SAGEMAKER_MODEL_SERVER_WORKERS, "0"),
    (envnames.SAGEMAKER_MAX_REQUEST_SIZE, str(101 << 20)),  # past the 100 MB that SageMaker's payloads reach
    (envnames.DOGBREED_ENGINE_WAIT_S, "60"),  # not under the 60 s response timeout: the front would answer first
    (envnames.DOGBREED_SERVE_CPU_FALLBACK, "treu"), (envnames.SAGEMAKER_BATCH, "maybe"),  # not read as "no"
    (envnames.SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT, "text/csv"),  # an answer type the server cannot give
])
def test_a_value_out_of_range_is_refused_by_name(name, raw):
    with pytest.raises(ValueError, match=name):
        ServingSettings.from_environ({name: raw}, cores=2, gpus=0)


def test_the_choices_are_the_model_processes_own():
    from dogbreed.serving import graph

    assert GRAPH_MODES == graph.MODES


def test_the_start_choices_are_read_with_the_rest():
    settings = ServingSettings.from_environ({envnames.DOGBREED_SERVER: " MMS ", envnames.DOGBREED_SERVE_ENGINE: "off",
                                             envnames.SAGEMAKER_BIND_TO_PORT: "8081",
                                             envnames.SAGEMAKER_MODEL_SERVER_WORKERS: "3",
                                             envnames.DOGBREED_PRECISION_CACHE: "/cache/p.json"}, cores=2, gpus=0)
    assert (settings.front, settings.engine_mode, settings.port, settings.workers, settings.precision_cache) == \
        ("mms", "off", 8081, 3, "/cache/p.json")
    assert ServingSettings.from_environ({}, cores=2, gpus=0).front == "native"


def test_more_admitted_requests_than_the_default_connections_raise_the_connections():
    assert ServingSettings.from_environ({envnames.DOGBREED_NATIVE_PENDING: "500"}, cores=2, gpus=0).max_connections == 500
    assert ServingSettings.from_environ({}, cores=2, gpus=0).max_connections == ServingSettings.max_connections


@pytest.mark.parametrize("batch", [False, True])
def test_the_mms_response_limit_holds_a_json_lines_answer_of_every_record(batch):
    """multi-model-server refuses an answer past max_response_size (and drops its worker): a JSON-lines answer grows
    with the records (up to 1,024 in a Batch Transform container), each line up to every breed, not with the body."""
    import json

    from dogbreed.serving import decoders, server

    line = json.dumps({"predictions": [[{"breed": "Nova Scotia duck tolling retriever", "index": i,
                                         "probability": 0.123456} for i in range(133)]],
                       "model": "tf_efficientnet_lite0", "dog": [{"is_dog": True, "score": -12.3456, "threshold": 0.5}]})
    settings = ServingSettings(batch=batch)
    config = server.mms_config(settings, 9000, 2, 9001)
    limit = int(next(row for row in config.splitlines() if row.startswith("max_response_size=")).split("=")[1])
    assert limit >= decoders.json_lines_records(settings.scale, batch) * (len(line) + 1)


def test_the_default_answer_type_is_json_and_takes_the_toolkits_variable():
    assert ServingSettings.from_environ({}, cores=2, gpus=0).default_accept == "application/json"
    settings = ServingSettings.from_environ({envnames.SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT: "application/jsonlines"},
                                            cores=2, gpus=0)
    assert settings.default_accept == "application/jsonlines"


@pytest.mark.parametrize("environ, advertised", [
    ({envnames.SAGEMAKER_MAX_REQUEST_SIZE: "6500000"}, 6),  # 6.2 MiB: 7 would invite bodies of 6.2 to 7 MB, each a 413
    ({envnames.SAGEMAKER_MAX_REQUEST_SIZE: str(6 * MIB - 1)}, 5),
    ({envnames.SAGEMAKER_MAX_REQUEST_SIZE: str(6 * MIB)}, 6),
    ({envnames.SAGEMAKER_MAX_REQUEST_SIZE: str(100 * MIB)}, 100),
    ({envnames.SAGEMAKER_MAX_PAYLOAD_IN_MB: "20"}, 20),
    ({envnames.SAGEMAKER_MAX_REQUEST_SIZE: "1000"}, 1),  # no whole MB is true under 1; 0 would say "no bound"
])
def test_the_payload_advertised_is_whole_mb_the_edge_accepts(environ, advertised):
    settings = ServingSettings.from_environ(environ, cores=2, gpus=0)
    assert settings.execution_parameters()["MaxPayloadInMB"] == settings.payload_mb == advertised
    assert advertised * MIB <= settings.max_body_bytes or advertised == 1
