"""Batch Transform at size: dogs10's 600 test photos through the CPU serve image in the SageMaker SDK's local mode,
one photo an object and again as one JSON-lines file (MultiRecord); every answer checked, and the accuracy the same
as the same image's real-time endpoint gives on the same photos.

The model: tf_efficientnet_lite0 with its ImageNet weights, the head trained on dogs10 for 2 epochs (about a minute
on two cores). Both containers serve fp32 (DOGBREED_PRECISION): each start otherwise measures and may choose bf16,
and a photo near a tie could then flip between them.
"""

from __future__ import annotations

import base64
import json

import pytest
from benchmarks.transform_parts import (
    Container,
    accuracy,
    drive,
    gather_photos,
    head_only_flags,
    top1,
    train,
    transform,
    transform_json_lines,
)

from tests.conftest import DOGS10, LITE0_WEIGHTS, free_port, needs_shared
from tests.docker_support import build_cpu_image

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.shared, needs_shared(), pytest.mark.timeout(3600)]

FP32 = {"DOGBREED_PRECISION": "fp32"}


@pytest.fixture(scope="module")
def cpu_image(docker):
    return build_cpu_image()


@pytest.fixture(scope="module")
def dogs10_model(tmp_path_factory):
    return train(DOGS10, tmp_path_factory.mktemp("dogs10-model"), head_only_flags(LITE0_WEIGHTS))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dogs10-test-photos")
    return folder, gather_photos(DOGS10 / "test", folder)


@pytest.fixture(scope="module")
def real_time(cpu_image, dogs10_model, photos):
    """The same image as a real-time endpoint, the photos posted one at a time (local mode's concurrency)."""
    folder, breeds = photos
    with Container(cpu_image, dogs10_model, free_port(), FP32) as container:
        container.wait_ready()
        driven = drive(container.port, {name: folder / name for name in breeds}, concurrency=1)
    assert driven["errors"] == 0, driven
    return driven["answers"]


def _well_formed(answer: dict, classes: set[str]) -> bool:
    rows = answer["predictions"][0]
    probabilities = [row["probability"] for row in rows]
    return (len(rows) == 5 and {row["breed"] for row in rows} <= classes
            and probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6)


def test_600_photos_one_an_object_every_answer_as_the_real_time_endpoints(cpu_image, compose, dogs10_model, photos,
                                                                          real_time, tmp_path):
    folder, breeds = photos
    assert len(breeds) == 600
    batch = transform(cpu_image, dogs10_model, folder, tmp_path / "out", FP32)
    assert sorted(batch["answers"]) == sorted(breeds)  # one answer an object, named after it
    classes = set(json.loads((dogs10_model / "model.json").read_text())["class_names"])
    assert all(_well_formed(answer, classes) for answer in batch["answers"].values())
    for name in breeds:  # the same image, the same fp32 model, one photo a request: the same answer
        ours, theirs = top1(batch["answers"][name]), top1(real_time[name])
        assert ours["breed"] == theirs["breed"] and ours["probability"] == pytest.approx(theirs["probability"], abs=1e-4)
    assert accuracy(batch["answers"], breeds) == accuracy(real_time, breeds) >= 0.85


def _json_lines_answers(image, model, folder, names, tmp_path, **options) -> dict:
    """The photos as one JSON-lines file through a MultiRecord transform: each line's answer, by photo, every line
    answered in its place."""
    (tmp_path / "in").mkdir()
    lines = [json.dumps({"image": base64.b64encode((folder / name).read_bytes()).decode()}) for name in names]
    (tmp_path / "in" / "photos.jsonl").write_text("\n".join(lines) + "\n")
    answers = transform_json_lines(image, model, tmp_path / "in", tmp_path / "out", FP32, **options)
    assert len(answers) == len(names) and all("predictions" in answer for answer in answers), answers[:3]
    return dict(zip(names, answers, strict=True))


def _assert_top1_as_real_time(by_name: dict, real_time: dict) -> None:
    # many photos a request batch differently from one: the same top-1 unless the endpoint's own top two nearly tie
    for name, answer in by_name.items():
        rows = real_time[name]["predictions"][0]
        if rows[0]["probability"] - rows[1]["probability"] > 1e-3:
            assert top1(answer)["breed"] == rows[0]["breed"], name


def test_600_photos_as_json_lines_multirecord_answered_in_order(cpu_image, compose, dogs10_model, photos, real_time,
                                                               tmp_path):
    folder, breeds = photos
    # 1 MB a request: about 28 of these photos (base64) a request, so that the 600 make many requests
    by_name = _json_lines_answers(cpu_image, dogs10_model, folder, sorted(breeds), tmp_path, max_payload_mb=1)
    _assert_top1_as_real_time(by_name, real_time)
    assert accuracy(by_name, breeds) == pytest.approx(accuracy(real_time, breeds), abs=2 / len(breeds))


def test_6_mb_multirecord_batches_of_small_photos_are_answered_in_order(cpu_image, compose, dogs10_model, photos,
                                                                        real_time, tmp_path):
    """JSON lines, SplitType Line, MultiRecord at 6 MB: ~170 of these photos a request (past the 64 an endpoint
    takes), each answered in its line's place, as the real-time endpoint answers it."""
    folder, breeds = photos
    names = sorted(breeds)[:200]  # more than one 6 MB request's worth
    _assert_top1_as_real_time(_json_lines_answers(cpu_image, dogs10_model, folder, names, tmp_path), real_time)
