#!/usr/bin/env python3
"""Put dogbreed's ModelResponseDecoder (docker/mms/) into multi-model-server's frontend jar.

multi-model-server 1.1.11 drops a worker when a response frame reaches the frontend in two socket reads
and the cut falls in the frame's header map: the request in flight gets "500 Worker died." (the source
file says why). Run it with the Python whose multi-model-server should be patched:

    python scripts/patch_mms_frontend.py             compile (javac) and install; a patched jar is left as is
    python scripts/patch_mms_frontend.py compile DIR compile only (the image's builder stage has the JDK)
    python scripts/patch_mms_frontend.py install DIR install classes compiled before (no JDK needed)
    python scripts/patch_mms_frontend.py check       exit 0 where the installed jar holds the patch
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "docker" / "mms" / "ModelResponseDecoder.java"
PACKAGE = "com/amazonaws/ml/mms/util/codec/"
MARKER = b"dogbreed: partial frames wait for the rest"


def frontend_jar() -> Path:
    import mms

    return Path(mms.__file__).parent / "frontend" / "model-server.jar"


def is_patched(jar: Path) -> bool:
    with zipfile.ZipFile(jar) as archive:
        return MARKER in archive.read(PACKAGE + "ModelResponseDecoder.class")


def compile_classes(out: Path) -> None:
    javac = shutil.which("javac")
    if not javac:
        sys.exit("patch_mms_frontend: javac not found (install a JDK, e.g. default-jdk-headless)")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([javac, "-nowarn", "--release", "11", "-cp", str(frontend_jar()), "-d", str(out), str(SOURCE)],
                   check=True)


def install_classes(classes: Path) -> None:
    """Rewrite the jar with our decoder's classes in place of the original's (a zip cannot replace in place)."""
    jar = frontend_jar()
    ours = {PACKAGE + path.name: path.read_bytes() for path in (classes / PACKAGE).glob("ModelResponseDecoder*.class")}
    if PACKAGE + "ModelResponseDecoder.class" not in ours:
        sys.exit(f"patch_mms_frontend: no compiled ModelResponseDecoder under {classes}")
    staged = jar.with_suffix(".jar.new")
    with zipfile.ZipFile(jar) as old, zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as new, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fat jar holds duplicate META-INF names already: kept as they are
        for item in old.infolist():
            if item.filename not in ours and not item.filename.startswith(PACKAGE + "ModelResponseDecoder$"):
                new.writestr(item, old.read(item))
        for name, data in ours.items():
            new.writestr(name, data)
    staged.replace(jar)
    if not is_patched(jar):
        sys.exit(f"patch_mms_frontend: {jar} does not hold the patched decoder after install")
    print(f"patched {jar}")


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "patch"
    if command == "check":
        return 0 if is_patched(frontend_jar()) else 1
    if command == "compile":
        compile_classes(Path(argv[1]))
    elif command == "install":
        install_classes(Path(argv[1]))
    elif command == "patch":
        if is_patched(frontend_jar()):
            return 0
        with tempfile.TemporaryDirectory() as scratch:
            compile_classes(Path(scratch))
            install_classes(Path(scratch))
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
