"""The image tag is immutable: a clean tree is tagged with its commit, and any change that goes into the image
(an edit, or a new file not yet added) gives another tag."""

import subprocess

from tests.conftest import ROOT


def _revision(repo) -> str:
    return subprocess.run(["scripts/build_images.sh", "--revision"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_new_untracked_file_changes_the_tag(tmp_path):
    repo = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    clean = _revision(repo)
    assert "dirty" not in clean and len(clean) == 7
    (repo / "src/dogbreed/new_module.py").write_text("VALUE = 1\n")
    first = _revision(repo)
    assert first.startswith(clean + "-dirty-")
    (repo / "src/dogbreed/new_module.py").write_text("VALUE = 2\n")
    assert _revision(repo) not in (clean, first)  # other content, another tag
