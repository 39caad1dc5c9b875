"""The engine's precision, measured once per CPU model, torch, model and thread count, then reused.

``accel.pick("auto")`` times fp32 and bf16 on the model at every start. An engine restarted in the same
container (or a container that mounts ``DOGBREED_PRECISION_CACHE`` from a volume) reads the result of the
same measurement instead: a file of ``{key: precision}``, the key naming everything the timing depends on.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

log = logging.getLogger("dogbreed.engine")

DOGBREED_PRECISION_CACHE = "DOGBREED_PRECISION_CACHE"  # where the measured precision is kept (default: the server's state dir)
PRECISIONS = ("fp32", "bf16")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key(torch_version: str, arch: str, input_size: int, threads: int) -> str:
    return f"{cpu_model()} | torch {torch_version} | {arch} {input_size}px | {threads} threads"


def cached_precision(path: Path | None, key: str) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        found = json.loads(Path(path).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return found if found in PRECISIONS else None


def remember_precision(path: Path | None, key: str, precision: str) -> None:
    if path is None or precision not in PRECISIONS:
        return
    path = Path(path)
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        known = {}
    known[key] = precision
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch.write_text(json.dumps(known, indent=1))
        scratch.replace(path)
    except OSError as exc:  # a read-only place: measure again next time
        log.warning("cannot keep the measured precision in %s: %s", path, exc)
