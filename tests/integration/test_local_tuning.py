"""`dogbreed tune --local` on the sample: trials of the real training entry, the SageMaker metric regexes."""

from __future__ import annotations

import json
import re

import pytest

from dogbreed import metrics
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

HP = ["--hp", "model=resnet18", "--hp", "pretrained-weights=none", "--hp", "input-size=64", "--hp", "epochs=3",
      "--hp", "data-fraction=1.0", "--hp", "num-workers=1", "--hp", "profile=false"]


def _expected(text: str, epochs: list, definition: dict) -> int:
    """Each epoch line carries every epoch metric; a finished run then prints the kept model's valid scores once more
    (``kept model: valid_loss=... valid_acc=...``), the values SageMaker's tuner and ours read last."""
    kept = "kept model: " in text and definition["Name"] in ("valid_loss", "valid_acc")
    return len(epochs) + int(kept)


def test_local_tuning_finds_a_configuration_and_its_logs_match_the_regexes(sample_dir, tmp_path):
    work = tmp_path / "tune"
    done = run_cli("tune", "--local", "--data", str(sample_dir), "--work-dir", str(work), "--max-jobs", "4",
                   "--max-parallel-jobs", "2", "--use-docker", "no", *HP, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    best = json.loads((work / "best_hyperparameters.json").read_text())
    assert set(best["hyperparameters"]) == {"lr", "batch-size"}
    assert 0.001 <= float(best["hyperparameters"]["lr"]) <= 0.1
    assert best["hyperparameters"]["batch-size"] in {"32", "64", "128", "256", "512"}
    assert len(best["trials"]) == 4 and best["value"] is not None
    assert (work / "tuning.png").read_bytes()[:4] == b"\x89PNG"
    assert "best_hyperparameters=" in done.stdout and "trial" in done.stdout
    for trial in sorted(work.glob("trial-*/trial.log")):
        text = trial.read_text()
        epochs = metrics.parse(text, "epoch")
        assert epochs, f"{trial}: no epoch lines"
        for definition in metrics.metric_definitions(metrics.EPOCH_METRICS):
            assert len(re.findall(definition["Regex"], text)) == _expected(text, epochs, definition), (trial, definition)
    completed = [t for t in best["trials"] if t["state"] == "complete"]
    assert completed and min(t["valid_loss"] for t in completed) == pytest.approx(best["value"])
    for trial in completed:  # ranked by the model it kept: the last valid_loss printed, the kept-model line
        text = (work / f"trial-{trial['trial']:03d}" / "trial.log").read_text()
        assert "kept model: " in text and trial["valid_loss"] == pytest.approx(metrics.last(text, "valid_loss"))


@pytest.mark.docker
def test_local_tuning_runs_trials_in_the_training_image(images, sample_dir, tmp_path):
    work = tmp_path / "tune"
    done = run_cli("tune", "--local", "--data", str(sample_dir), "--work-dir", str(work), "--max-jobs", "2",
                   "--max-parallel-jobs", "2", "--use-docker", "yes", "--image", images["train"], *HP, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    best = json.loads((work / "best_hyperparameters.json").read_text())
    assert best["runner"] == "docker" and best["value"] is not None


def test_cached_head_only_trials_run_in_process_and_compute_the_features_once(sample_dir, tmp_path):
    work = tmp_path / "tune"
    done = run_cli("tune", "--local", "--data", str(sample_dir), "--work-dir", str(work), "--max-jobs", "5",
                   "--max-parallel-jobs", "2", "--use-docker", "no", *HP, "--hp", "train-layers=head", "--hp", "augment=false",
                   timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    best = json.loads((work / "best_hyperparameters.json").read_text())
    assert best["runner"] == "in-process" and best["value"] is not None and len(best["trials"]) == 5
    assert len(list((work / "feature-cache").glob("features-*.pt"))) == 1
    logs = [trial.read_text() for trial in sorted(work.glob("trial-*/trial.log"))]
    assert len(logs) == 5
    assert "frozen features computed and cached" in logs[0]
    assert all("frozen features from the cache" in text for text in logs[1:])
    for text in logs:
        epochs = metrics.parse(text, "epoch")
        assert epochs, text
        for definition in metrics.metric_definitions(metrics.EPOCH_METRICS):
            assert len(re.findall(definition["Regex"], text)) == _expected(text, epochs, definition), definition["Name"]
    for trial in best["trials"]:
        text = (work / f"trial-{trial['trial']:03d}" / "trial.log").read_text()
        if trial["state"] == "complete":  # a finished trial wrote the whole model, as the subprocess entry does
            assert metrics.parse(text, "test_acc") and (work / f"trial-{trial['trial']:03d}" / "model" / "model.pth").is_file()
        else:
            assert trial["state"] == "stopped early" and not metrics.parse(text, "test_acc")  # stopped before the end
