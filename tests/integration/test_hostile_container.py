"""Issue 19 §4 against the serve container: a representative part of the hostile corpus (:mod:`tests.hostile`:
every third case, so each kind of body is there) sent to ``dogbreed-serve-cpu`` as SageMaker runs it. Each
answer is the documented 4xx JSON or a correct 200, and the container still answers a photo correctly after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dogbreed.serving import content_types as ct
from tests import hostile
from tests.conftest import free_port
from tests.docker_support import serving_container, sh
from tests.integration.test_cpu_image import _known_photo, cpu_image  # noqa: F401 - the fixture
from tests.integration.test_hostile_bodies import expected_answer
from tests.serving_helpers import get, send

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SUBSET = hostile.cases()[::3]


@pytest.fixture(scope="module")
def container(cpu_image, trained):  # noqa: F811 - the fixture imported above
    folder = sorted((Path(trained["work"]) / "opt_ml/input/data/test").iterdir())[0]
    body, index = _known_photo(trained["model_dir"], folder)
    port = free_port()
    name = f"dogbreed-test-hostile-{port}"
    with serving_container(cpu_image, trained["model_dir"], name, port, body, index, "--memory", "3g"):
        yield name, port, body, index


@pytest.fixture(scope="module")
def predictor(trained):
    from dogbreed.serving.predictor import Predictor

    return Predictor(trained["model_dir"])


@pytest.mark.timeout(1800)
def test_the_serve_container_answers_hostile_bodies_with_4xx_json_or_a_correct_200(container, predictor):
    name, port, probe, index = container
    wrong = []
    for case in SUBSET:
        status, answer = send(port, case.body, case.content_type, case.headers)
        if status not in case.statuses:
            wrong.append((case.name, status, answer if isinstance(answer, dict) else answer[:200]))
        elif status == 200:  # the top breed the in-process model gives (the image's torch may round otherwise)
            served = [rows[0]["breed"] for rows in answer["predictions"]]
            if served != [rows[0]["breed"] for rows in expected_answer(predictor, case)]:
                wrong.append((case.name, "answer", served))
        elif not (isinstance(answer, dict) and answer.get("status") == status and answer.get("error")):
            wrong.append((case.name, status, "not the error JSON", answer))
    assert not wrong, json.dumps(wrong, default=str, indent=1)[:4000]
    status, answer = send(port, probe, ct.JPEG)  # still serving, correctly, and never restarted
    assert status == 200 and answer["predictions"][0][0]["index"] == index, (status, answer)
    assert get(f"http://127.0.0.1:{port}", "/ping")[0] == 200
    state = json.loads(sh("docker", "inspect", name, "--format", "{{json .State}}").stdout)
    assert state["Running"] and not state["OOMKilled"], state  # the same container, never killed for memory
