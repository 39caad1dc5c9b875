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


def test_many_images_reach_the_engine_a_chunk_at_a_time_by_one_deadline(model_dir, tmp_path, monkeypatch):
    """A Batch Transform body of thumbnails: the crops are made and sent CHUNK_IMAGES at a time (not 2.5 GB of
    them at once), answered in order, every chunk by the request's one deadline (not a full wait each)."""
    from PIL import Image

    from dogbreed.serving import interface
    from dogbreed.serving.engine import RemotePredictor

    monkeypatch.setattr(interface, "CHUNK_IMAGES", 4)
    asked = []

    class Recording(RemotePredictor):
        def _ask(self, pixels, k, explain, deadline):
            asked.append((len(pixels), deadline))
            return {"predictions": [[{"breed": str(int(image[0, 0, 0]))}] for image in pixels],
                    "dog": [{"is_dog": True}] * len(pixels)}

    images = [Image.new("RGB", (80, 80), (index, 0, 0)) for index in range(10)]
    answer = Recording(model_dir, str(tmp_path / "sock")).answer(images, 1)
    assert [size for size, _ in asked] == [4, 4, 2] and len({deadline for _, deadline in asked}) == 1
    assert [row[0]["breed"] for row in answer["predictions"]] == [str(index) for index in range(10)]
    assert len(answer["dog"]) == 10


def test_the_in_process_model_makes_its_tensors_a_chunk_at_a_time(model_dir, monkeypatch):
    from PIL import Image

    from dogbreed.serving import interface
    from dogbreed.serving.predictor import Predictor

    monkeypatch.setattr(interface, "CHUNK_IMAGES", 3)
    predictor = Predictor(model_dir, precision="fp32", graph="eager")
    sizes, make = [], predictor.tensor
    monkeypatch.setattr(predictor, "tensor", lambda images: sizes.append(len(images)) or make(images))
    images = [Image.new("RGB", (80, 80), (40 * index, 90, 20)) for index in range(7)]
    chunked = predictor.answer(images, 2)
    assert sizes == [3, 3, 1] and len(chunked["predictions"]) == 7 and len(chunked["dog"]) == 7
    monkeypatch.setattr(interface, "CHUNK_IMAGES", 256)
    assert [row[0]["index"] for row in predictor.answer(images, 2)["predictions"]] == \
        [row[0]["index"] for row in chunked["predictions"]]
