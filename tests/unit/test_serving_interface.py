"""One serving core, thin fronts (issue 19 §5): the three predictors answer to one interface, and the native front
reaches the handler without the toolkit's transformer (no imitation contexts), transitively."""

from __future__ import annotations

import pytest

from dogbreed.serving.interface import ServingPredictor
from tests.edge_server import tiny_model
from tests.unit.test_architecture import imported_modules, modules


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model"))


def test_every_predictor_is_a_serving_predictor(model_dir, tmp_path):
    from dogbreed.serving.engine import RemotePredictor
    from dogbreed.serving.native_engine import InProcessPredictor
    from dogbreed.serving.predictor import Predictor

    kinds = [Predictor(model_dir, precision="fp32", graph="eager"), RemotePredictor(model_dir, str(tmp_path / "sock")),
             InProcessPredictor([], model_dir)]
    assert all(isinstance(kind, ServingPredictor) for kind in kinds)
    assert len({kind.draft_size for kind in kinds}) == 1  # one JPEG draft scale, whatever holds the model


def _reached(start: str) -> set[str]:
    known = modules()
    names = set(known)
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = known[name]
        todo.extend(imported_modules(name, path.read_text(), path.name == "__init__.py", names))
    return seen


def test_the_native_front_does_not_import_the_toolkits_transformer():
    reached = _reached("dogbreed.serving.native")
    assert "dogbreed.serving.transformer" not in reached and "dogbreed.serving.handler_service" not in reached
    assert "dogbreed.serving.errors" in reached  # the one error mapping, shared with the mms front's transformer
