"""``dogbreed data prepare``: download dogImages.zip (resumable), check it, take a fraction, upload to S3.

Each step survives interruption: the download resumes from the bytes already on disk (HTTP Range),
a corrupt zip is detected before extraction, and the upload skips objects already in S3 with the
same size, so a rerun sends only what is missing.
"""

from __future__ import annotations

import logging
import shutil
import sys
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from ..data import SPLITS, list_classes, list_samples, stratified_fraction
from ..errors import DataError

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class PrepareError(DataError):
    """The download, the zip or its layout is not what `data prepare` needs; the message says what to do."""


def download(url: str, target: Path, progress: bool = True, timeout: float = 60) -> Path:
    """Download ``url`` to ``target``, resuming a partial ``target.part``; returns ``target``."""
    target = Path(target)
    if target.is_file():
        return target
    if url.startswith("file://") or Path(url).is_file():
        source = Path(url[len("file://"):] if url.startswith("file://") else url)
        shutil.copyfile(source, target)
        return target
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # nosec B310 - the configured data URL
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # already complete
            part.rename(target)
            return target
        raise PrepareError(f"download of {url} failed: HTTP {exc.code}") from exc
    except urllib.error.URLError as exc:
        raise PrepareError(f"cannot download {url}: {exc.reason}") from exc
    with response:
        resumed = have and response.status == 206
        total = response.headers.get("Content-Length")
        total = int(total) + (have if resumed else 0) if total else None
        mode = "ab" if resumed else "wb"
        done = have if resumed else 0
        bar = None
        if progress and sys.stderr.isatty():
            from tqdm import tqdm  # only for an interactive terminal

            bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=target.name)
        try:
            with open(part, mode) as handle:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    handle.write(chunk)
                    done += len(chunk)
                    if bar:
                        bar.update(len(chunk))
        finally:
            if bar:
                bar.close()
    if total is not None and done < total:
        raise PrepareError(f"download of {url} stopped at {done} of {total} bytes; run again to resume")
    part.rename(target)
    return target


def check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile as exc:
        raise PrepareError(f"{path} is not a valid zip ({exc}): delete it and run again") from exc
    except (OSError, EOFError) as exc:
        raise PrepareError(f"{path} is truncated or unreadable ({exc}): delete it and run again") from exc
    if bad:
        raise PrepareError(f"{path} is corrupt (first bad member: {bad}): delete it and run again")


def extract(path: Path, target: Path) -> Path:
    """Extract the zip safely (no member outside ``target``); returns the folder holding train/ valid/ test/."""
    target = Path(target)
    with zipfile.ZipFile(path) as archive:
        root = target.resolve()
        for member in archive.namelist():
            destination = (target / member).resolve()
            if root != destination and root not in destination.parents:
                raise PrepareError(f"{path}: member {member!r} points outside the extraction folder")
        archive.extractall(target)  # nosec B202 - every member checked above
    for candidate in [target, *sorted(p for p in target.iterdir() if p.is_dir())]:
        if (candidate / "train").is_dir():
            return candidate
    raise PrepareError(f"{path} holds no train/ folder")


def check_layout(root: Path, expected_classes: int | None = None, expected_counts: dict | None = None) -> dict:
    classes = list_classes(root / "train")
    counts = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            raise PrepareError(f"missing {split}/ in {root}")
        counts[split] = len(list_samples(root / split, classes, split))
    problems = []
    if expected_classes and len(classes) != expected_classes:
        problems.append(f"{len(classes)} classes, expected {expected_classes}")
    for split, expected in (expected_counts or {}).items():
        if counts.get(split) != int(expected):
            problems.append(f"{split}: {counts.get(split)} images, expected {expected}")
    if problems:
        raise PrepareError("the data set does not look like dogImages: " + "; ".join(problems))
    return {"classes": len(classes), **counts}


def plan_upload(root: Path, fraction: float, seed: int) -> list[tuple[Path, str]]:
    """(local file, S3 key suffix) for every image to upload, a stratified fraction of each split."""
    classes = list_classes(root / "train")
    files = []
    for split in SPLITS:
        samples = stratified_fraction(list_samples(root / split, classes, split), fraction, seed)
        files += [(path, f"{split}/{path.parent.name}/{path.name}") for path, _ in samples]
    return files


def existing_objects(s3, bucket: str, prefix: str) -> dict[str, int]:
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = item["Size"]
    return found


def upload(s3, files: list[tuple[Path, str]], bucket: str, prefix: str, workers: int = 8) -> dict:
    """Upload in parallel, skipping objects already there with the same size: a rerun after an interruption
    sends only what is missing."""
    prefix = prefix.strip("/")
    have = existing_objects(s3, bucket, prefix)
    todo = [(path, f"{prefix}/{key}") for path, key in files if have.get(f"{prefix}/{key}") != path.stat().st_size]
    skipped = len(files) - len(todo)
    uploaded = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(s3.upload_file, str(path), bucket, key) for path, key in todo]
        for future in as_completed(futures):
            future.result()
            uploaded += 1
    return {"uploaded": uploaded, "skipped": skipped, "total": len(files)}


def prepare(config, work: Path, fraction: float = 1.0, seed: int = 0, upload_to_s3: bool = True, s3=None) -> dict:
    data = config["data"]
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    archive = download(data["url"], work / "dogImages.zip")
    check_zip(archive)
    extracted = work / "extracted"
    root = extract(archive, extracted)
    summary = check_layout(root, data.get("expected_classes"), data.get("expected_counts"))
    result = {"layout": summary, "root": str(root)}
    if upload_to_s3:
        import boto3  # only for the upload: the data checks need no AWS SDK

        config.require("bucket")
        prefix = f"{(config.get('prefix') or '').strip('/')}/data".strip("/")
        s3 = s3 or boto3.client("s3", region_name=config.get("region"))
        result["upload"] = upload(s3, plan_upload(root, fraction, seed), config["bucket"], prefix)
        result["channels"] = {split: f"s3://{config['bucket']}/{prefix}/{split}/" for split in SPLITS}
    return result
