"""The shipped package holds what serving and training run, and no benchmark code (that lives in benchmarks/).

The images install the package from what their Dockerfiles COPY into /opt/dogbreed (``pip install /opt/dogbreed``);
this test copies the same sources into a scratch folder, builds the wheel pip would build, and lists it.
The docker twin (tests/integration/test_image_contents.py) asks the built images themselves.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "src" / "dogbreed"
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))
INSTALL_ROOT = "/opt/dogbreed"  # the folder the Dockerfiles' `pip install --no-deps /opt/dogbreed` installs


def is_benchmark(relative: str) -> bool:
    """A path whose folder or module is a benchmark (``dogbreed/bench/...``, ``benchmarks/...``, ``bench.py``)."""
    return any(part.split(".")[0] in ("bench", "benchmarks") for part in Path(relative).parts)


def package_copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of each ``COPY`` from the build context into the installed package's folder."""
    copies, lines = [], dockerfile.read_text().replace("\\\n", " ").splitlines()
    for line in lines:
        if not line.lstrip().upper().startswith("COPY "):
            continue
        words = shlex.split(line)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words[1:] if not w.startswith("--")]
        sources, destination = words[:-1], words[-1]
        if destination.rstrip("/").startswith(INSTALL_ROOT):
            copies.append((sources, destination))
    return copies


def mirror(dockerfile: Path, target: Path) -> Path:
    """What the Dockerfile puts in /opt/dogbreed, under ``target`` (a COPY of a folder copies its contents)."""
    for sources, destination in package_copies(dockerfile):
        place = target / Path(destination).relative_to(INSTALL_ROOT)
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, place, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
            else:
                place.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, place / path.name)
    return target


def test_the_source_package_holds_no_benchmark_module():
    found = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*") if is_benchmark(str(p.relative_to(PACKAGE)))]
    assert not found, f"benchmark code inside src/dogbreed (it belongs in benchmarks/): {found}"
    assert (ROOT / "benchmarks" / "serve_bench.py").is_file(), "the benchmarks moved, but not to benchmarks/"


def test_the_path_check_sees_a_benchmark():
    """The check above and below could fail: it recognises each way a benchmark can be named."""
    assert all(map(is_benchmark, ["dogbreed/bench/serve_bench.py", "benchmarks/report.py", "dogbreed/bench.py"]))
    assert not any(map(is_benchmark, ["dogbreed/serving/batcher.py", "dogbreed/benchmarking_notes.txt"]))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_the_package_each_image_installs_holds_no_benchmark(dockerfile, tmp_path):
    copied = mirror(dockerfile, tmp_path / "opt_dogbreed")
    shipped = [str(p.relative_to(copied)) for p in copied.rglob("*")]
    assert "src/dogbreed/serving/engine.py" in shipped, f"{dockerfile.name} no longer copies the package as expected"
    assert not [p for p in shipped if is_benchmark(p)], f"{dockerfile.name} copies benchmark code into {INSTALL_ROOT}"
    # the wheel `pip install /opt/dogbreed` builds from those files (offline: the venv's setuptools)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), str(copied)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("dogbreed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dogbreed/serving/engine.py" in names and "dogbreed/cli.py" in names
    assert "dogbreed/serving/page/index.html" in names, "the page GET / answers is not package data"
    assert not [n for n in names if is_benchmark(n)], f"the installed package holds benchmark code: {names}"
