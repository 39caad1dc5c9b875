"""The ``mms`` front end to end (the real launcher, multi-model-server, its workers and the engine on loopback):

- ``GET /execution-parameters`` never advertises more than the edge accepts (SAGEMAKER_MAX_REQUEST_SIZE=6500000 is
  6 whole MB, not 7).
"""

import json

import pytest

from dogbreed.env import DOGBREED_SERVE_ENGINE, SAGEMAKER_MAX_REQUEST_SIZE
from dogbreed.serving.settings import MIB
from tests.conftest import free_port
from tests.serving_helpers import get, local_server, post, post_oversized, probe_for

pytestmark = pytest.mark.slow

MAX_REQUEST_SIZE = 6_500_000  # 6.2 MiB: rounded up, the front would advertise 7


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """(url, launcher process, JPEG body, its top-1 index): the mms front with its engine and two workers."""
    body, index = probe_for(trained["archive"])
    log = tmp_path_factory.mktemp("mms-truth") / "server.log"
    env = {DOGBREED_SERVE_ENGINE: "on", SAGEMAKER_MAX_REQUEST_SIZE: str(MAX_REQUEST_SIZE)}
    with local_server(trained["archive"], free_port(), log, workers=2, env=env, front="mms") as (url, process):
        yield url, process, body, index


@pytest.mark.timeout(300)
def test_the_payload_advertised_is_accepted(server):
    url, _, _, _ = server
    status, raw = get(url, "/execution-parameters")
    advertised = json.loads(raw)["MaxPayloadInMB"]
    assert status == 200 and advertised == MAX_REQUEST_SIZE // MIB
    status, answer, _ = post(url, b"\xff" * (advertised * MIB))  # not a JPEG: refused, but not for its size
    assert status != 413 and status < 500, answer
    status, answer = post_oversized(url, MAX_REQUEST_SIZE + 1)  # refused by its length, before it is read
    assert status == 413, answer
