"""What an answer holds beyond the breeds, over real HTTP on loopback, on both fronts: the ``dog`` verdicts,
``explain`` (heatmaps) and ``reject_non_dogs``, asked in a JSON body or the custom attributes; JSON lines too.

The model is the quick trained one with an ImageNet head beside it and a threshold placed between two test photos'
dog scores, so that one is a dog and the other is not: every branch of the answer is then reachable."""

import base64
import io
import json
import shutil

import pytest
import torch
from PIL import Image

from dogbreed import dogness, models
from dogbreed.serving.predictor import Predictor
from tests.conftest import free_port
from tests.serving_helpers import FRONTS, local_server, post

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # the trained model is built in the fixture
ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


@pytest.fixture(scope="module")
def photos(sample_dir):
    return [sorted(folder.iterdir())[0] for folder in sorted((sample_dir / "test").iterdir())]


@pytest.fixture(scope="module")
def model(trained, tmp_path_factory, photos):
    """(model dir, a dog photo, a non-dog photo): the threshold between the two photos' scores furthest apart."""
    root = tmp_path_factory.mktemp("answer") / "model"
    shutil.copytree(trained["model_dir"], root)
    torch.manual_seed(0)
    features = models.load_artifacts(root)[0].fc.in_features
    torch.save({"weight": torch.randn(1000, features) * 0.1, "bias": torch.zeros(1000)}, root / dogness.HEAD_FILE)
    meta = json.loads((root / "model.json").read_text())
    meta["dog"] = {"method": dogness.IMAGENET_METHOD, "threshold": 0.0}
    (root / "model.json").write_text(json.dumps(meta))
    scores = Predictor(root, precision="fp32", graph="eager", threads=1).answer([Image.open(p) for p in photos], 1)["dog"]
    order = sorted(range(len(photos)), key=lambda i: scores[i]["score"])
    low, high = scores[order[0]]["score"], scores[order[-1]]["score"]
    assert high - low > 0.01, scores  # the stand-in head must separate some photos
    meta["dog"]["threshold"] = (low + high) / 2
    (root / "model.json").write_text(json.dumps(meta))
    return root, photos[order[-1]], photos[order[0]]


@pytest.fixture(scope="module", params=FRONTS)
def server(model, tmp_path_factory, request):
    log = tmp_path_factory.mktemp("serve-answer") / "server.log"
    with local_server(model[0], free_port(), log, front=request.param) as (url, _):
        yield url


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_every_answer_says_whether_each_photo_is_a_dog_and_probabilities_are_unchanged(server, model):
    model_dir, dog, not_dog = model
    status, answer, _ = post(server, json.dumps({"instances": [_b64(dog), _b64(not_dog)]}).encode(), "application/json")
    assert status == 200, answer
    assert [d["is_dog"] for d in answer["dog"]] == [True, False]
    assert set(answer["dog"][0]) == {"is_dog", "score", "threshold"} and "explanations" not in answer
    # the breeds as the model without the dog head gives them: the extra column changes no probability
    plain, meta, prep = models.load_artifacts(model_dir)
    with torch.no_grad():
        logits = plain(torch.stack([prep.eval_transform()(Image.open(p).convert("RGB")) for p in (dog, not_dog)]))
    expected = torch.softmax(logits / float(meta.get("temperature") or 1.0), 1)
    for rows, probs in zip(answer["predictions"], expected, strict=True):
        assert [r["probability"] for r in rows] == pytest.approx(sorted(probs.tolist(), reverse=True), abs=2e-3)


@pytest.mark.parametrize("how", ["body", "attribute"])
def test_explain_answers_a_heatmap_png_of_the_top_breed(server, model, how):
    _, dog, _ = model
    body, headers = {"image": _b64(dog)}, {}
    if how == "body":
        body["explain"] = True
    else:
        headers[ATTRIBUTES] = "top_k=2,explain=true"
    status, answer, _ = post(server, json.dumps(body).encode(), "application/json", headers)
    assert status == 200, answer
    (explanation,) = answer["explanations"]
    assert (explanation["breed"], explanation["index"]) == (answer["predictions"][0][0]["breed"],
                                                            answer["predictions"][0][0]["index"])
    image = Image.open(io.BytesIO(base64.b64decode(explanation["heatmap_png"])))
    assert image.format == "PNG" and image.width > 32


@pytest.mark.parametrize("how", ["body", "attribute"])
def test_reject_non_dogs_refuses_a_request_of_non_dogs_and_empties_them_in_a_mixed_one(server, model, how):
    _, dog, not_dog = model

    def ask(paths):
        body, headers = {"instances": [_b64(p) for p in paths]}, {}
        if how == "body":
            body["reject_non_dogs"] = True
        else:
            headers[ATTRIBUTES] = "reject_non_dogs=true"
        return post(server, json.dumps(body).encode(), "application/json", headers)

    status, answer, _ = ask([not_dog])
    assert status == 422 and answer["status"] == 422 and answer["error"].startswith("not a dog"), answer
    status, answer, _ = ask([dog, not_dog])
    assert status == 200, answer
    assert answer["predictions"][1] == [] and len(answer["predictions"][0]) == 5
    assert [d["is_dog"] for d in answer["dog"]] == [True, False]
    # and the server goes on serving
    assert post(server, dog.read_bytes(), "image/jpeg")[0] == 200


def test_json_lines_carry_the_same_fields_per_record(server, model):
    _, dog, not_dog = model
    lines = [{"image": _b64(dog), "explain": True}, {"image": _b64(not_dog), "reject_non_dogs": True},
             {"image": _b64(not_dog)}]
    body = "\n".join(json.dumps(line) for line in lines).encode() + b"\n"
    status, text, _ = post(server, body, "application/jsonlines", {"Accept": "application/jsonlines"})
    assert status == 200, text
    answers = [json.loads(line) for line in text.strip().split("\n")]
    assert answers[0]["dog"][0]["is_dog"] and len(answers[0]["explanations"]) == 1
    assert answers[1]["status"] == 422 and answers[1]["error"].startswith("record 2: not a dog")
    assert answers[2]["dog"][0]["is_dog"] is False and answers[2]["predictions"][0] and "explanations" not in answers[2]
