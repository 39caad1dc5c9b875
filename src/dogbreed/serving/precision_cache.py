"""The engine's set-up (precision and memory layout), measured once per device, CPU model, torch, model and thread
count, then reused.

``accel.pick("auto")`` times fp32, fp32 + channels_last and bf16 + channels_last on the model at every start. An
engine restarted in the same container (or a container that mounts ``DOGBREED_PRECISION_CACHE`` from a volume)
reads the result of the same measurement instead: a file of ``{key: {"precision": ..., "channels_last": ...}}``,
the key naming everything the timing depends on. The layout is kept with the precision: fp32 was measured both
ways, and a cache that kept only "fp32" would serve the layout the probe rejected.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

from ..env import DOGBREED_PRECISION_CACHE  # noqa: F401 - where the measured set-up is kept (default: the state dir)

log = logging.getLogger("dogbreed.engine")

PRECISIONS = ("fp32", "bf16")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key(torch_version: str, arch: str, input_size: int, threads: int, device: str = "cpu") -> str:
    return f"{device}: {cpu_model()} | torch {torch_version} | {arch} {input_size}px | {threads} threads"


def _read(path: Path) -> dict:
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def cached_setup(path: Path | None, key: str) -> tuple[str, bool] | None:
    """(precision, channels_last) measured before under ``key``; None where there is none (or an older file's
    precision-only entry, which does not say the layout: measure again)."""
    if path is None:
        return None
    found = _read(Path(path)).get(key)
    if not isinstance(found, dict) or found.get("precision") not in PRECISIONS:
        return None
    if not isinstance(found.get("channels_last"), bool):
        return None
    return found["precision"], found["channels_last"]


def remember_setup(path: Path | None, key: str, precision: str, channels_last: bool) -> None:
    if path is None or precision not in PRECISIONS:
        return
    path = Path(path)
    known = _read(path)
    known[key] = {"precision": precision, "channels_last": bool(channels_last)}
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch.write_text(json.dumps(known, indent=1))
        scratch.replace(path)
    except OSError as exc:  # a read-only place: measure again next time
        log.warning("cannot keep the measured set-up in %s: %s", path, exc)
