"""The training program on data that would make a broken model (issue 21 section 10): refused, or warned about."""

import json
import subprocess

import pytest
from PIL import Image

from dogbreed.local import failure_reason, local_train
from tests.conftest import QUICK_FLAGS

pytestmark = pytest.mark.slow

CLASSES = ("001.Affenpinscher", "002.Beagle")


def _data(root, per_split=(("train", 6), ("valid", 2), ("test", 2))):
    for split, count in per_split:
        for index, folder in enumerate(CLASSES):
            (root / split / folder).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (48, 40), (200 * index, 40 * i, 90)).save(root / split / folder / f"{i}.jpg")
    return root


def _train(data, work, epochs="1"):
    flags = list(QUICK_FLAGS)
    flags[flags.index("--epochs") + 1] = epochs
    code, archive = local_train(data, work, flags + ["--profile", "false"], stdout=subprocess.DEVNULL)
    return code, archive, failure_reason(work) or ""


def _warnings(data, work) -> list[str]:
    """A run that succeeds (a model.tar.gz) despite the data: metrics.json's warnings."""
    code, archive, reason = _train(data, work)
    assert code == 0 and archive.exists(), reason
    return json.loads((work / "opt_ml/output/data/metrics.json").read_text())["data_warnings"]


def test_a_class_whose_every_training_image_is_unreadable_fails_naming_it(tmp_path):
    data = _data(tmp_path / "data")
    for image in (data / "train" / "002.Beagle").iterdir():
        image.write_bytes(b"GIF89a truncated")
    code, archive, reason = _train(data, tmp_path / "work")
    assert code != 0 and not archive.exists()
    assert "no readable training image in class '002.Beagle'" in reason


def test_a_symbolic_link_out_of_a_channel_is_refused(tmp_path):
    data = _data(tmp_path / "data")
    stray = tmp_path / "private.jpg"
    Image.new("RGB", (48, 40), "red").save(stray)
    link = data / "train" / "001.Affenpinscher" / "stray.jpg"
    link.symlink_to(stray)
    code, archive, reason = _train(data, tmp_path / "work")
    assert code != 0 and not archive.exists()
    assert "stray.jpg is a symbolic link to" in reason and "outside the channel" in reason


def test_a_class_missing_from_test_is_a_warning_in_metrics_json(tmp_path):
    data = _data(tmp_path / "data")
    for image in (data / "test" / "002.Beagle").iterdir():
        image.unlink()
    assert _warnings(data, tmp_path / "work") == ["the 'test' split has no image of 1 class(es): Beagle"]


def test_a_valid_split_of_unreadable_files_fails_instead_of_scoring_a_perfect_loss(tmp_path):
    data = _data(tmp_path / "data")
    for image in (data / "valid").rglob("*.jpg"):
        image.write_bytes(b"")
    code, archive, reason = _train(data, tmp_path / "work")
    assert code != 0 and not archive.exists()
    assert "the 'valid' split holds no readable image: every one of its 4 file(s) failed to decode" in reason


def test_a_valid_class_of_unreadable_files_is_a_warning_in_metrics_json(tmp_path):
    data = _data(tmp_path / "data")
    for image in (data / "valid" / "002.Beagle").iterdir():
        image.write_bytes(b"")
    assert _warnings(data, tmp_path / "work") == ["the 'valid' split has no readable image of 1 class(es): Beagle "
                                                  "(every file failed to decode)"]
