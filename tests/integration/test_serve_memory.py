"""The serve image under a memory limit (``docker run --memory``, what a SageMaker serverless size sets), on both
fronts: multi-model-server sizes its decoding workers from the cgroup's limit and says so in its log; each carries 30 s of load at
concurrency 8 with no OOM kill in the container's cgroup and no failed request. The model is the seed's: a
ResNet50 with a 133-breed head (what the memory depends on is its size, not its weights' values: it is
written as training writes it, without the hour of training)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.docker_support import sh
from tests.serving_helpers import Load, probe_for, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# SageMaker serverless sizes (MB): 1024, 2048, 3072, 4096, 5120, 6144. The smallest that fits the ResNet50 (its
# engine holds torch and the frozen graph) with the front and a worker is 2048: at 1024 the JVM's floor, the
# engine and one worker leave no room for a batch.
SERVERLESS_SMALLEST_FITTING_MB = 2048
PLAN_LINE = re.compile(r"(\d+) decoding worker\(s\): \d+ core\(s\) .* (\d+) MB \((/sys/fs/cgroup[^)]*)\)")


def _oom_kills(name: str) -> int:
    """OOM kills in the container's cgroup (any process in it, not only its first: a killed worker counts);
    cgroup v2's memory.events, else v1's memory.oom_control."""
    events = sh("docker", "exec", name, "sh", "-c", "cat /sys/fs/cgroup/memory.events 2>/dev/null"
                " || cat /sys/fs/cgroup/memory/memory.oom_control").stdout
    return int(re.search(r"^oom_kill (\d+)", events, re.M)[1])


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory) -> Path:
    """The seed's model as training writes it: ResNet50, 133 classes (random weights: the same bytes to hold)."""
    from benchmarks.serve_bench import make_model

    return make_model("resnet50", tmp_path_factory.mktemp("resnet50") / "model", num_classes=133)


@pytest.fixture(scope="module")
def serve_image(request) -> str:
    """The session's serve image; DOGBREED_TEST_SERVE_IMAGE names one built already (a helper's own tag)."""
    return os.environ.get("DOGBREED_TEST_SERVE_IMAGE") or request.getfixturevalue("images")["serve"]


# multi-model-server sizes its decoding workers from the limit (and logs why); the native front (the default) has no
# worker processes to size, and must fit the smallest size multi-model-server fits.
@pytest.mark.parametrize("front,memory_mb", [("mms", 3072), ("mms", SERVERLESS_SMALLEST_FITTING_MB),
                                             ("native", SERVERLESS_SMALLEST_FITTING_MB)])
def test_the_serve_container_carries_load_within_its_memory_limit(serve_image, resnet50, front, memory_mb):
    port = free_port()
    name = f"dogbreed-test-memory-{port}"
    body, index = probe_for(resnet50)
    sh("docker", "run", "-d", "--rm", "--name", name, f"--memory={memory_mb}m", f"--memory-swap={memory_mb}m",
       "-e", f"DOGBREED_SERVER={front}", "-p", f"127.0.0.1:{port}:8080", "-v", f"{resnet50}:/opt/ml/model:ro",
       serve_image, "serve")
    try:
        wait_ready(f"http://127.0.0.1:{port}", body, index, timeout=240)
        load = Load(port, body, concurrency=8)
        for thread in load.run(seconds=30, hard_limit=120):
            thread.join()
        statuses = [status for _, _, status in load.results]
        if front == "mms":
            plan = PLAN_LINE.search(sh("docker", "logs", name).stderr + sh("docker", "logs", name).stdout)
            assert plan, "the server did not log the numbers behind its worker count"
            assert int(plan[2]) == memory_mb  # it read the container's limit, not the host's memory
        assert statuses and statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}
        assert _oom_kills(name) == 0
        state = json.loads(sh("docker", "inspect", name, "--format", "{{json .State}}").stdout)
        assert state["Running"] and not state["OOMKilled"]
    finally:
        sh("docker", "stop", "-t", "30", name, check=False)
