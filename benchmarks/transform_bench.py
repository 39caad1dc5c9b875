"""``make bench-transform``: Batch Transform beside the real-time endpoint, and the two serve images.

- A model trained on dogs10 by a quick CPU recipe (tf_efficientnet_lite0's ImageNet weights, head only).
- Batch Transform over dogs10's 600 test photos, one an object, in the SageMaker SDK's local mode with the CPU serve
  image: images/s from the first answer written to the last (and the job's wall time, container start and stop
  included), the accuracy.
- The same image as a real-time endpoint (``docker run IMAGE serve``) sent the same photos over loopback HTTP at
  local mode's concurrency (1: the SDK sends one request at a time) and at the MaxConcurrentTransforms the container
  answers on ``GET /execution-parameters`` (what SageMaker's own Batch Transform would use): images/s, accuracy,
  and the top-1 answers it shares with the transform.
- Both serve images' sizes (``docker image inspect``) and each one's container cold start: ``docker run`` to the first
  correct answer.

``--quick`` (what tests/integration/test_benches.py runs): the synthetic sample, a ResNet18 trained for an epoch, a
few photos, the report in a temporary file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dogbreed.serving.client import wait_until_correct

from . import report
from .transform_parts import Container, accuracy, drive, gather_photos, head_only_flags, image_size, top1, train, transform

SHARED = Path(os.environ.get("DOGBREED_SHARED", "../shared"))
QUICK_FLAGS = ["--model", "resnet18", "--pretrained-weights", "none", "--input-size", "64", "--epochs", "1",
               "--batch-size", "25", "--lr", "0.003", "--patience", "0", "--num-workers", "1"]


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Batch Transform beside the real-time endpoint; the serve images")
    parser.add_argument("--image", default="dogbreed-serve-cpu:latest",
                        help="the serve image that transforms and serves (default: the CPU one)")
    parser.add_argument("--cuda-image", default="dogbreed-serve:latest",
                        help="the CUDA serve image: its size and cold start (skipped where it is not here)")
    parser.add_argument("--port", type=int, default=28580)
    parser.add_argument("--model", type=Path, default=None,
                        help="a model folder (model.pth, model.json) trained on dogs10 (default: train one, head only)")
    parser.add_argument("--per-breed", type=int, default=None, help="test photos per breed (default: all 60)")
    report.add_arguments(parser, "the synthetic sample (10 photos), ResNet18 trained for an epoch, no CUDA image")
    return parser.parse_args(argv)


def model_and_photos(args, work: Path) -> tuple[Path, Path, dict[str, str], str]:
    """(model folder, folder of photos, each photo's breed, what they are)."""
    weights = SHARED / "weights" / "tf_efficientnet_lite0.in1k.pth"
    dogs10 = SHARED / "data" / "dogs10"
    if args.quick or not (dogs10.is_dir() and weights.is_file()):
        if not args.quick:
            raise SystemExit(f"bench-transform needs {dogs10} and {weights} (--quick runs without them)")
        from dogbreed.sample import make_sample

        sample = work / "sample"
        make_sample(sample, classes=5, size=96, per_split={"train": 10, "valid": 2, "test": 2})
        model = train(sample, work / "train", QUICK_FLAGS)
        return model, work / "photos", gather_photos(sample / "test", work / "photos"), "the synthetic sample's test split"
    model = args.model or train(dogs10, work / "train", head_only_flags(weights))
    breeds = gather_photos(dogs10 / "test", work / "photos", args.per_breed)
    return model, work / "photos", breeds, "dogs10's test split (real photos)" + (
        f", the first {args.per_breed} of each breed" if args.per_breed else "")


def real_time(image: str, model: Path, photos: dict[str, Path], port: int, batch: dict) -> tuple[list[dict], int]:
    """The same image serving over HTTP, driven at 1 and at the container's MaxConcurrentTransforms."""
    with Container(image, model, port) as container:
        container.wait_ready()
        concurrent = json.loads(container.get("/execution-parameters")[1])["MaxConcurrentTransforms"]
        drive(port, dict(list(photos.items())[:4]), 1)  # warm-up
        runs = []
        for concurrency in sorted({1, concurrent}):
            run = drive(port, photos, concurrency)
            same = sum(answer is not None and top1(answer)["breed"] == top1(batch["answers"][name])["breed"]
                       for name, answer in run["answers"].items())
            runs.append({**run, "concurrency": concurrency, "same_top1": same})
    return runs, concurrent


def cold_start(image: str, model: Path, body: bytes, expected: int, port: int) -> float | None:
    """``docker run`` to the first correct answer for ``body``; None where the image is not here."""
    if image_size(image) is None:
        return None
    start = time.perf_counter()
    with Container(image, model, port):
        wait_until_correct("127.0.0.1", port, body, expected)
        return time.perf_counter() - start


def images_table(args, model: Path, body: bytes, expected: int) -> tuple[str, dict]:
    rows, results = [], {}
    images = [("CPU", args.image)] + ([] if args.quick else [("CUDA", args.cuda_image)])
    for index, (kind, image) in enumerate(images):
        size = image_size(image)
        cold = cold_start(image, model, body, expected, args.port + 10 + index)
        results[image] = {"bytes": size, "cold_start_s": cold}
        rows.append([f"`{image}` ({kind})", f"{size / 1e9:.2f}" if size else "not here",
                     f"{cold:.1f}" if cold is not None else "—"])
    return report.table(["serve image", "size GB (uncompressed)", "cold start s: `docker run` to the first correct answer"],
                        rows), results


def rows_of(batch: dict, runs: list[dict], breeds: dict[str, str]) -> list[list]:
    rows = [["Batch Transform, SDK local mode, one photo an object", 1, f"{batch['images_per_s']:.1f}",
             f"{accuracy(batch['answers'], breeds):.3f}", "—", 0]]
    for run in runs:
        answered = {name: answer for name, answer in run["answers"].items() if answer is not None}
        rows.append(["real-time endpoint, the same image, loopback HTTP", run["concurrency"],
                     f"{run['images_per_s']:.1f}", f"{accuracy(answered, breeds):.3f}" if not run["errors"] else "—",
                     f"{run['same_top1']}/{len(breeds)}", run["errors"]])
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    where = report.destination(args)
    work = Path(tempfile.mkdtemp(prefix="bench-transform-"))
    try:
        model, folder, breeds, what = model_and_photos(args, work)
        photos = {name: folder / name for name in breeds}
        batch = transform(args.image, model, folder, work / "out")
        print(f"transform: {len(breeds)} photos, {batch['images_per_s']:.1f} images/s, job {batch['wall_s']:.1f} s",
              flush=True)
        runs, concurrent = real_time(args.image, model, photos, args.port, batch)
        first = next(iter(breeds))
        table, images = images_table(args, model, photos[first].read_bytes(), top1(batch["answers"][first])["index"])
        load = os.getloadavg()[0]
        trained = "given by --model" if args.model else "trained here: ImageNet weights, the head only, 2 epochs"
        arch = json.loads((model / "model.json").read_text()).get("arch", "?")
        notes = [f"Model: {arch}, {trained}. Photos: {len(breeds)}, {what}; image `{args.image}`. "
                 "The transform's images/s run from its first "
                 f"answer written to its last; the whole job took {batch['wall_s']:.0f} s (container start and stop "
                 "included). Local mode sends one request at a time (MaxConcurrentTransforms 1); the container answers "
                 f"MaxConcurrentTransforms {concurrent} on /execution-parameters, what SageMaker's Batch Transform would "
                 "send at once: the real-time rows at that concurrency show what it would reach here.",
                 f"The machine is shared with other jobs (load average {load:.1f} when this was written): the figures "
                 "are lower bounds.", table]
        report.save("transform", {"title": "Batch Transform beside the real-time endpoint; the serve images' size and "
                                           "cold start",
                                  "headers": ["path", "concurrency", "images/s", "accuracy", "top-1 as the transform's",
                                              "errors"],
                                  "rows": rows_of(batch, runs, breeds), "notes": notes,
                                  "results": {"transform_images_per_s": batch["images_per_s"],
                                              "transform_wall_s": batch["wall_s"], "max_concurrent": concurrent,
                                              "real_time": [{k: v for k, v in run.items() if k != "answers"}
                                                            for run in runs], "images": images}}, where)
        print(f"wrote {where.report}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
