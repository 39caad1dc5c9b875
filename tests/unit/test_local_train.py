"""A local run's /opt/ml tree starts as SageMaker's does: nothing of an earlier run's model or outputs is left to
pass for this run's; its checkpoints stay only where this run resumes from them."""

from __future__ import annotations

import pytest

from dogbreed.local import layout


def _earlier_run(work):
    for name in ("model.tar.gz", "opt_ml/model/model.pth", "opt_ml/model/model.json", "opt_ml/output/data/metrics.json",
                 "opt_ml/checkpoints/checkpoint-0003.pth"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(b"earlier run")


@pytest.mark.parametrize("hyperparameters,checkpoints_kept", [
    ({}, True), ({"resume": "true"}, True), ({"resume": "false"}, False), ({"resume": "0"}, False),
    ({"resume": "maybe"}, True),  # the program refuses the value: nothing is removed on a guess
])
def test_a_new_run_starts_without_the_earlier_runs_model(tmp_path, hyperparameters, checkpoints_kept):
    work = tmp_path / "work"
    _earlier_run(work)
    base = layout(work, {}, hyperparameters)
    assert not (work / "model.tar.gz").exists()
    assert (base / "model").is_dir() and not any((base / "model").iterdir())
    assert (base / "output/data").is_dir() and not any((base / "output/data").iterdir())
    assert (base / "checkpoints/checkpoint-0003.pth").exists() == checkpoints_kept


def test_a_first_run_lays_out_the_tree(tmp_path):
    base = layout(tmp_path / "fresh", {}, {"resume": "false"})
    assert all((base / folder).is_dir() for folder in ("model", "output/data", "checkpoints", "input/config"))
