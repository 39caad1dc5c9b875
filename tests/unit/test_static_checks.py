"""Static checks that CI runs with the tests: ruff, bandit (exceptions justified in pyproject.toml), hadolint."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.reliability  # part of make test-reliability

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name):
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed (requirements/dev.txt)")
    return found


def test_ruff_is_clean():
    result = subprocess.run([_tool("ruff"), "check", "src", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_bandit_is_clean():
    result = subprocess.run([_tool("bandit"), "-q", "-c", "pyproject.toml", "-r", "src"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfiles_pass_hadolint():
    files = ["docker/Dockerfile.train", "docker/Dockerfile.serve", "docker/Dockerfile.serve-cpu", "docker/base/Dockerfile",
             "docker/base/Dockerfile.cpu"]
    result = subprocess.run([_tool("hadolint"), *files], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
