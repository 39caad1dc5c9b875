"""Safe extraction of ``model.tar.gz``: regular files and folders only, every one inside the target."""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from ..errors import ModelError

MAX_MEMBERS = 1000
MAX_TOTAL_BYTES = 4 * 1024**3


def check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or ".." in path.parts or "\\" in name:
        raise ModelError(f"model archive refused: member {name!r} points outside the model directory")
    if member.issym() or member.islnk():
        raise ModelError(f"model archive refused: member {name!r} is a link ({member.linkname!r}); only plain files are allowed")
    if not (member.isfile() or member.isdir()):
        raise ModelError(f"model archive refused: member {name!r} is not a regular file or folder")


def extract_model_archive(archive: Path, target: Path) -> Path:
    """Check every member first, then extract; nothing is written unless the whole archive is safe."""
    archive, target = Path(archive), Path(target)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            if len(members) > MAX_MEMBERS:
                raise ModelError(f"model archive refused: {len(members)} members (at most {MAX_MEMBERS})")
            total = 0
            for member in members:
                check_member(member)
                total += member.size
            if total > MAX_TOTAL_BYTES:
                raise ModelError("model archive refused: it unpacks to more than 4 GiB")
            target.mkdir(parents=True, exist_ok=True)
            tar.extractall(target, members=members, filter="data")
    except tarfile.TarError as exc:
        raise ModelError(f"model archive {archive} is not a readable tar.gz: {exc}") from exc
    except (EOFError, OSError) as exc:
        raise ModelError(f"model archive {archive} is truncated or unreadable: {exc}") from exc
    return target


def model_dir_from(path: Path, scratch: Path) -> Path:
    """A model directory from a folder (used as is, or its model.tar.gz extracted) or an archive."""
    path = Path(path)
    if path.is_dir():
        if (path / "model.json").is_file():
            return path
        inner = path / "model.tar.gz"
        if inner.is_file():
            return extract_model_archive(inner, Path(scratch) / "model")
        raise ModelError(f"{path} holds neither model.json nor model.tar.gz")
    if path.is_file():
        return extract_model_archive(path, Path(scratch) / "model")
    raise ModelError(f"no model at {path}")
