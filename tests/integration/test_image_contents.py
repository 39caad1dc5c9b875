"""The built images hold what serving and training run and no benchmark code: asked of the images themselves
(tests/unit/test_package_contents.py checks the package they install without docker)."""

from __future__ import annotations

import pytest

from tests.docker_support import sh

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Each probe prints one line: the module that must import, then every benchmark module that must not.
PROBE = """
import importlib, importlib.util, pathlib, dogbreed
importlib.import_module(MODULE)
absent = [name for name in ("dogbreed.bench", "benchmarks") if importlib.util.find_spec(name) is None]
files = [str(p) for root in (pathlib.Path(dogbreed.__file__).parent, pathlib.Path("/opt/dogbreed"))
         for p in root.rglob("*") if p.name.split(".")[0] in ("bench", "benchmarks")]
print("ok", MODULE, "absent=" + ",".join(absent), "files=" + ",".join(files))
"""


@pytest.mark.parametrize("kind, module", [("train", "dogbreed.train"), ("serve", "dogbreed.serving.server")])
def test_the_image_holds_no_benchmark_module(images, kind, module):
    result = sh("docker", "run", "--rm", "--entrypoint", "python", images[kind], "-c",
                PROBE.replace("MODULE", repr(module)), timeout=300)
    assert f"ok {module} absent=dogbreed.bench,benchmarks files=\n" in result.stdout + "\n", result.stdout
    # and the plain import the issue names fails inside the image
    failed = sh("docker", "run", "--rm", "--entrypoint", "python", images[kind], "-c", "import dogbreed.bench",
                check=False, timeout=300)
    assert failed.returncode != 0 and "No module named 'dogbreed.bench'" in failed.stderr, failed.stderr[-2000:]
