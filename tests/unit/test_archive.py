import io
import pickle
import tarfile

import pytest
import torch

from dogbreed import models
from dogbreed.models import ModelError
from dogbreed.serving.archive import extract_model_archive

pytestmark = pytest.mark.reliability  # part of make test-reliability


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_a_good_archive_extracts(tmp_path):
    archive = _tar(tmp_path / "m.tar.gz", [_file("model.json", b"{}"), _file("model.pth", b"123")])
    out = extract_model_archive(archive, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.pth"]


@pytest.mark.parametrize("member", [
    lambda: _file("../escape.txt"),
    lambda: _file("/abs/escape.txt"),
    lambda: _file("sub/../../escape.txt"),
])
def test_path_traversal_is_refused_and_nothing_is_written(tmp_path, member):
    archive = _tar(tmp_path / "m.tar.gz", [_file("model.json", b"{}"), member()])
    with pytest.raises(ModelError, match="outside"):
        extract_model_archive(archive, tmp_path / "deep" / "out")
    assert not (tmp_path / "deep").exists() and not (tmp_path / "escape.txt").exists()


def test_symlink_out_of_the_model_directory_is_refused(tmp_path):
    link = tarfile.TarInfo("model.pth")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    archive = _tar(tmp_path / "m.tar.gz", [(link, None)])
    with pytest.raises(ModelError, match="link"):
        extract_model_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_archive_is_a_clear_error(tmp_path):
    path = tmp_path / "m.tar.gz"
    path.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ModelError, match="model archive"):
        extract_model_archive(path, tmp_path / "out")


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_payload_in_the_weights_is_refused(tmp_path):
    model = models.build("resnet18", 2)
    models.save_artifacts(tmp_path, model, "resnet18", ["a", "b"], models.default_preprocessing("resnet18", 64))
    state = torch.load(tmp_path / "model.pth", weights_only=True)
    (tmp_path / "model.pth").write_bytes(pickle.dumps({**state, "evil": Payload()}))
    with pytest.raises(ModelError, match="refusing"):
        models.load_artifacts(tmp_path)
