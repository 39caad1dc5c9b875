"""Batch Transform through the SageMaker SDK's own local mode, with the serve image: the twin of a transform job
over a bucket of photos (one photo an object) and over a JSON-lines file (SplitType Line, MultiRecord)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from PIL import Image

from dogbreed.launch.local_transform import LocalTransform, run_local_transform
from tests.docker_support import sh

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]


def _breed(folder: Path) -> str:
    return folder.name.split(".", 1)[1].replace("_", " ")


def _photos(sample_dir: Path, per_breed: int) -> list[tuple[Path, str]]:
    return [(path, _breed(folder)) for folder in sorted((sample_dir / "test").iterdir())
            for path in sorted(folder.iterdir())[:per_breed]]


def _in_process(trained, paths):
    from dogbreed.serving.predictor import Predictor

    predictor = Predictor(trained["model_dir"], precision="fp32", graph="eager")
    return [predictor.top_k([Image.open(path)], 2)[0] for path in paths]


def _agrees(answer: list[dict], expected: list[dict]) -> bool:
    """Same top-1, unless the in-process model's own top two are a near tie (the engine may run in bf16)."""
    near_tie = expected[0]["probability"] - expected[1]["probability"] < 0.05
    return near_tie or answer[0]["breed"] == expected[0]["breed"]


def _job_containers() -> set[str]:
    """Containers (running or stopped) that a local transform job's compose made."""
    listed = sh("docker", "ps", "-a", "--format", '{{.ID}} {{.Label "com.docker.compose.project.working_dir"}}').stdout
    return {line.split(" ", 1)[0] for line in listed.splitlines() if "/dogbreed-transform-" in line}


def test_a_folder_of_photos_one_answer_an_object(images, compose, trained, sample_dir, tmp_path):
    photos = _photos(sample_dir, per_breed=4)
    source = tmp_path / "photos"
    source.mkdir()
    for path, _ in photos:  # one folder: the SDK's local mode reads the files of the folder itself, not below
        (source / path.name).write_bytes(path.read_bytes())
    job = LocalTransform(image=images["serve"], model=trained["archive"], input_dir=source, output_dir=tmp_path / "out")
    before = _job_containers()
    outputs = run_local_transform(job)
    assert len(outputs) == len(photos)
    assert _job_containers() <= before  # the job's container is gone, not left stopped
    expected = _in_process(trained, [path for path, _ in photos])
    for (path, _), wanted in zip(photos, expected, strict=True):
        out = tmp_path / "out" / f"{path.name}.out"
        answer = json.loads(out.read_text())["predictions"][0]
        assert _agrees(answer, wanted), (path, answer, wanted)


def test_json_lines_multirecord_one_answer_line_per_record_in_order(images, compose, trained, sample_dir, tmp_path):
    photos = _photos(sample_dir, per_breed=2)
    records = [json.dumps({"image": base64.b64encode(path.read_bytes()).decode()}) for path, _ in photos]
    bad = 3
    records.insert(bad, json.dumps({"image": "not base64 at all!"}))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "photos.jsonl").write_text("\n".join(records) + "\n")
    job = LocalTransform(image=images["serve"], model=trained["archive"], input_dir=tmp_path / "in",
                         output_dir=tmp_path / "out", content_type="application/jsonlines", split_type="Line",
                         batch_strategy="MultiRecord", accept="application/jsonlines")
    outputs = run_local_transform(job)
    assert [path.name for path in outputs] == ["photos.jsonl.out"]
    lines = [json.loads(line) for line in outputs[0].read_text().splitlines() if line.strip()]
    assert len(lines) == len(records)
    assert "error" in lines[bad] and lines[bad]["status"] == 400, lines[bad]
    answers = lines[:bad] + lines[bad + 1:]
    expected = _in_process(trained, [path for path, _ in photos])
    for (path, _), answer, wanted in zip(photos, answers, expected, strict=True):
        assert _agrees(answer["predictions"][0], wanted), (path, answer, wanted)
