"""The images' dependency install resolves on a base that holds another torch than the host's, and keeps that torch.

No docker: the install step of docker/Dockerfile.train and docker/Dockerfile.serve (docker/pin_base_torch.sh, then
`pip install -c ... -r requirements/<kind>.txt`), taken from the Dockerfiles themselves, runs as `pip install --dry-run
--report` in a scratch venv that "holds" the default BASE_IMAGE's torch and torchvision (their metadata only, as pip
and importlib.metadata see an installed distribution). The resolution must succeed and install no torch. Needs PyPI
(reachable in CI); skipped elsewhere when it is not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT
from tests.docker_support import base_pins

TORCH_FAMILY = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*)$")
pins = base_pins  # docker/base/versions.env: the default BASE_IMAGE and the torch, torchvision and Python it holds


def host_pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "requirements" / "torch.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            found[name.strip()] = version.strip()
    return found


def _dockerfile_instructions(kind: str) -> list[str]:
    text = (ROOT / "docker" / f"Dockerfile.{kind}").read_text()
    text = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def install_step(kind: str) -> tuple[list[str], list[str]]:
    """The Dockerfile's own dependency install: (files COPYed for it, the shell commands of its RUN)."""
    lines = _dockerfile_instructions(kind)
    run = next(line for line in lines if line.startswith("RUN ") and "pin_base_torch.sh" in line)
    commands = [c.strip() for c in run[len("RUN "):].split("&&")]
    copies = [line.split()[1:-1] for line in lines
              if line.startswith("COPY ") and ("requirements" in line or "pin_base_torch" in line)]
    return [src for group in copies for src in group], [c for c in commands if not c.startswith("apt-get")]


def _pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=10):
            return True
    except OSError:
        return False


def _python_of_base(minor: str) -> str | None:
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == minor:
        return sys.executable
    return shutil.which(f"python{minor}")


def _cannot(reason: str):
    """CI must run this test: there a missing prerequisite fails it; elsewhere it skips."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def base_env(tmp_path_factory):
    """A venv of the base's Python minor whose site-packages hold the base's torch and torchvision (metadata)."""
    versions = pins()
    python = _python_of_base(versions["BASE_PYTHON_VERSION"])
    if python is None:
        _cannot(f"no python{versions['BASE_PYTHON_VERSION']} here (the base's Python) to resolve for")
    if not _pypi_reachable():
        _cannot("PyPI is not reachable: the image requirements cannot be resolved")
    venv = tmp_path_factory.mktemp("base-env") / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    site = next((venv / "lib").glob("python*/site-packages"))
    fake = {
        "torch": (versions["BASE_TORCH_VERSION"], []),
        "torchvision": (versions["BASE_TORCHVISION_VERSION"],
                        ["numpy", f"torch=={versions['BASE_TORCH_VERSION']}", "pillow!=8.3.*,>=5.3.0"]),
    }
    for name, (version, requires) in fake.items():
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        metadata += [f"Requires-Dist: {r}" for r in requires]
        (info / "METADATA").write_text("\n".join(metadata) + "\n")
        (info / "INSTALLER").write_text("pip\n")
        (info / "RECORD").write_text("")
        (site / name).mkdir()
        (site / name / "__init__.py").write_text(f"__version__ = {version!r}\n")
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(venv),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    return {"venv": venv, "env": env, "versions": versions}


def _run_install_step(kind: str, base_env: dict, tmp_path: Path, extra: str = "") -> tuple[subprocess.CompletedProcess, Path]:
    """The Dockerfile's commands, on a copy of what it COPYs, with `pip install` made a dry run that writes a report."""
    sources, commands = install_step(kind)
    image_root = tmp_path / "image"
    for source in sources:  # COPY src... /opt/dogbreed/<dir>/
        target_dir = next(line.split()[-1] for line in _dockerfile_instructions(kind)
                          if line.startswith("COPY ") and source in line.split()[1:-1])
        destination = image_root / target_dir.lstrip("/")
        destination.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / source, destination / Path(source).name)
    report = tmp_path / "report.json"
    script = []
    for command in commands:
        command = command.replace("/opt/dogbreed/", f"{image_root}/opt/dogbreed/")
        if command.startswith("pip install"):
            command = command.replace("pip install", f"python -m pip install --dry-run --quiet --report {report} {extra}", 1)
        script.append(command)
    result = subprocess.run(["sh", "-ec", " && ".join(script)], env=base_env["env"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    return result, report


def test_the_base_holds_another_torch_than_the_host(base_env):
    versions, host = base_env["versions"], host_pins()
    assert versions["BASE_TORCH_VERSION"] != host["torch"], "the test needs a base torch other than the host's"
    probe = subprocess.run(["python", "-c",
                            "import importlib.metadata as m; print(m.version('torch'), m.version('torchvision'))"],
                           env=base_env["env"], capture_output=True, text=True, check=True)
    assert probe.stdout.split() == [versions["BASE_TORCH_VERSION"], versions["BASE_TORCHVISION_VERSION"]]
    pinned = subprocess.run(["sh", str(ROOT / "docker/pin_base_torch.sh")], env=base_env["env"], capture_output=True,
                            text=True, check=True)
    assert pinned.stdout.split() == [f"torch=={versions['BASE_TORCH_VERSION']}",
                                     f"torchvision=={versions['BASE_TORCHVISION_VERSION']}"]


@pytest.mark.parametrize("kind,expected", [
    ("train", {"numpy": "2.2.6", "protobuf": "3.20.3", "smdebug": "1.0.34", "sagemaker-training": "4.9.0"}),
    ("serve", {"numpy": "2.2.6", "protobuf": "3.20.3", "sagemaker-inference": "1.10.1", "multi-model-server": "1.1.11"}),
])
def test_the_image_install_resolves_on_the_base_and_installs_no_torch(base_env, tmp_path, kind, expected):
    result, report = _run_install_step(kind, base_env, tmp_path)
    assert result.returncode == 0, f"the {kind} image's install does not resolve on a base with torch " \
        f"{base_env['versions']['BASE_TORCH_VERSION']}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    installs = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    assert installs, "the dry run resolved nothing"
    second_torch = sorted(name for name in installs if TORCH_FAMILY.match(name))
    assert not second_torch, f"the {kind} image would install {second_torch} over the base's torch"
    for name, version in expected.items():
        assert installs.get(name) == version, (name, installs.get(name))
    if "setuptools" in installs:
        assert int(installs["setuptools"].split(".")[0]) < 82


def test_the_host_torch_pins_would_break_the_image_install(base_env, tmp_path):
    """The control: the host's pins (requirements/torch.txt) beside the base's torch are what made pip give up."""
    result, _ = _run_install_step("serve", base_env, tmp_path, extra=f"-c {ROOT / 'requirements/torch.txt'}")
    assert result.returncode != 0
    assert "ResolutionImpossible" in result.stderr or "conflict" in result.stderr.lower(), result.stderr[-2000:]


def test_the_default_base_image_is_the_one_of_versions_env():
    versions = pins()
    image = versions["DEFAULT_BASE_IMAGE"]
    tag = image.rsplit(":", 1)[1]
    assert tag.startswith(versions["BASE_TORCH_VERSION"] + "-"), (image, versions["BASE_TORCH_VERSION"])
    for kind in ("train", "serve"):
        dockerfile = (ROOT / "docker" / f"Dockerfile.{kind}").read_text()
        assert f"ARG BASE_IMAGE={image}\n" in dockerfile, kind
        sources, commands = install_step(kind)
        assert f"requirements/{kind}.txt" in sources and "requirements/torch.txt" not in sources
        assert any(c.startswith("pip install -c") and f"requirements/{kind}.txt" in c for c in commands), commands
    for requirements in ("constraints.txt", "train.txt", "serve.txt"):  # no host torch pin reaches the images
        text = (ROOT / "requirements" / requirements).read_text()
        assert not re.search(r"^(torch|torchvision)\s*[=<>~!]", text, re.M), requirements
        assert not re.search(r"^\s*-[rc]\s*\S*torch\.txt", text, re.M), requirements
