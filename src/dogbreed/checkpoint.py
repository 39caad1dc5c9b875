"""Checkpoints: atomic writes, resume from the newest one that loads, SIGTERM handling."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

import torch

from .errors import DogbreedError

log = logging.getLogger(__name__)

PATTERN = re.compile(r"^checkpoint-(\d{4,})\.pth$")
KEEP = 2


class CheckpointError(DogbreedError):
    """A checkpoint that cannot be written or resumed from."""


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or a full disk leaves either the old file or the new one, never a torn one; the
    temporary file is removed on failure and the error says which file could not be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        why = _why(exc, path.parent) if isinstance(exc, (OSError, RuntimeError)) else None  # before the space is freed
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if why:  # torch's zip writer reports a full disk as a RuntimeError
            raise CheckpointError(f"could not write {path}: {why}") from exc
        raise


def _why(exc: BaseException, directory: Path) -> str:
    free = shutil.disk_usage(directory).free
    if getattr(exc, "errno", None) == errno.ENOSPC or free < 4 * 1024 * 1024:
        return f"No space left on device ({free / 2**20:.1f} MB free in {directory})"
    return getattr(exc, "strerror", None) or str(exc)


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return Path(directory) / f"checkpoint-{epoch:04d}.pth"


def list_checkpoints(directory: Path, recursive: bool = False) -> list[tuple[int, Path]]:
    """(epoch, path) of the checkpoints in ``directory`` (and its subfolders: ``recursive``), oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for child in directory.rglob("checkpoint-*.pth") if recursive else directory.iterdir():
        match = PATTERN.match(child.name)
        if match and child.is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def save(directory: Path, epoch: int, state: dict, keep: int = KEEP) -> Path:
    path = checkpoint_path(directory, epoch)
    atomic_save(state, path)
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest(directory: Path, recursive: bool = False) -> tuple[dict, Path] | None:
    """The newest checkpoint that loads; a truncated or corrupt one is reported and skipped. ``recursive``:
    also in subfolders (another job's checkpoint prefix holds them under that job's name)."""
    for _, path in reversed(list_checkpoints(directory, recursive)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: fall back to the previous one
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", path.name, exc)
            continue
        if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
            log.warning("checkpoint %s is not a dogbreed checkpoint; trying the previous one", path.name)
            continue
        return state, path
    return None


def differences(saved: dict, current: dict, defaults: dict | None = None) -> str:
    """What differs between a checkpoint's fingerprint and this run's, as ``name: saved -> now`` (empty: none).
    ``defaults``: a setting the checkpoint predates (absent from its fingerprint) matches where this run leaves it at
    its default, which is what the older program did."""
    defaults = defaults or {}
    keys = sorted(set(saved) | set(current))
    changed = [f"{k}: {saved.get(k, '(unset)')!r} -> {current.get(k, '(unset)')!r}"
               for k in keys if saved.get(k) != current.get(k)
               and not (k not in saved and k in defaults and current.get(k) == defaults[k])]
    return "; ".join(changed)


class TerminationFlag:
    """Set on SIGTERM (SageMaker's stop / spot interruption); the loop saves and exits at a step boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        self.requested = True
        log.warning("SIGTERM received: finishing the current step, saving a checkpoint, exiting")

    def install(self) -> TerminationFlag:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. under a test runner thread)
            self._previous = None
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
