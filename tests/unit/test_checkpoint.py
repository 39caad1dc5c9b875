import torch

from dogbreed import checkpoint


def _state(epoch):
    return {"epoch": epoch, "model": {"w": torch.full((4,), float(epoch))}}


def test_newest_checkpoint_wins_and_old_ones_are_pruned(tmp_path):
    for epoch in range(1, 5):
        checkpoint.save(tmp_path, epoch, _state(epoch))
    assert [e for e, _ in checkpoint.list_checkpoints(tmp_path)] == [3, 4]
    state, path = checkpoint.load_latest(tmp_path)
    assert state["epoch"] == 4 and path.name == "checkpoint-0004.pth"


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path):
    checkpoint.save(tmp_path, 1, _state(1))
    newest = checkpoint.save(tmp_path, 2, _state(2))
    newest.write_bytes(newest.read_bytes()[:100])
    state, path = checkpoint.load_latest(tmp_path)
    assert state["epoch"] == 1


def test_no_temporary_files_are_left(tmp_path):
    checkpoint.save(tmp_path, 1, _state(1))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-0001.pth"]


def test_empty_directory_has_nothing_to_resume(tmp_path):
    assert checkpoint.load_latest(tmp_path / "none") is None


def test_a_setting_a_checkpoint_predates_matches_only_at_its_default():
    saved = {"lr": 0.001, "epochs": 2}  # written before --min-crop-scale existed
    defaults = {"min_crop_scale": 0.08}
    assert checkpoint.differences(saved, {**saved, "min_crop_scale": 0.08}, defaults) == ""
    assert checkpoint.differences(saved, {**saved, "min_crop_scale": 0.5}, defaults) == "min_crop_scale: '(unset)' -> 0.5"
    assert "min_crop_scale" in checkpoint.differences(saved, {**saved, "min_crop_scale": 0.08})  # no defaults given
    assert checkpoint.differences(saved, {**saved, "lr": 0.01}, defaults) == "lr: 0.001 -> 0.01"
