"""``make bench-train``: images/s of our training step beside the seed's plain fp32 loop, same data, same run.

Ours: our loader (Pillow draft-mode decode), bf16 autocast + channels_last where the CPU has bf16,
AdamW. The seed's way: torchvision ImageFolder, standard transforms, fp32 eager, no autocast.
Both train every layer at 224 px with the same batch size and data-loader workers; the whole step
is timed, data loading included. The machine's limit: the model's training FLOPs per image against
the matrix-multiply peak measured in the same run.

``--quick`` (what CI runs): ResNet18 at 64 px on a tiny synthetic sample, 2 timed steps, a short matmul peak,
the report in a temporary file; it checks that the bench runs, its numbers are not figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from dogbreed import accel, checkpoint, data, gpu_decode, models
from dogbreed.presets import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from dogbreed.sample import make_sample
from dogbreed.training.config import LoopSettings
from dogbreed.training.loop import Trainer, train_one_epoch

from . import report

SHARED_DATA = Path("../shared/data/dogs10")


@dataclass(frozen=True)
class Sizes:
    """How big one run is: the full bench's defaults, or --quick's try-out."""

    models: str = "resnet50,tf_efficientnet_lite0"
    batch_size: int = 32
    steps: int = int(os.environ.get("BENCH_STEPS", 6))
    warmup: int = 2
    workers: int = 1
    input_size: int = 224
    matmul_n: int = 2048
    matmul_seconds: float = 3.0
    loader_workers: int = 4  # an ml.g4dn.xlarge's vCPUs
    loader_batches: int = 40


QUICK = Sizes(models="resnet18", batch_size=4, steps=2, warmup=1, workers=1, input_size=64, matmul_n=256,
              matmul_seconds=0.2, loader_workers=1, loader_batches=3)


def dataset_root(quick: bool) -> tuple[Path, str]:
    if (SHARED_DATA / "train").is_dir() and not quick:
        return SHARED_DATA, "real JPEGs, ../shared/data/dogs10 (320 px shorter side)"
    root = Path(tempfile.mkdtemp(prefix="bench-sample-"))
    if quick:
        make_sample(root, classes=2, size=80, per_split={"train": 8, "valid": 1, "test": 1})
        return root, "the synthetic sample at 80 px, 16 train images (--quick)"
    make_sample(root, classes=10, size=320, per_split={"train": 40, "valid": 2, "test": 2})
    return root, "the synthetic sample at 320 px (../shared absent)"


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Dense matrix-multiply throughput in GFLOP/s for one dtype, all cores."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def training_flops_per_image(arch: str, num_classes: int, size: int = 224) -> float:
    """3x the forward FLOPs (backward = gradients of inputs + of weights, each the forward's cost).
    The forward is counted by torch's FlopCounterMode; its count of ``convolution_backward`` ignores
    groups, which over-counts depthwise convolutions (EfficientNet) by an order of magnitude."""
    from torch.utils.flop_counter import FlopCounterMode  # only for this count

    model = models.build(arch, num_classes).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(2, 3, size, size))
    return 3 * counter.get_total_flops() / 2


def time_steps(model, loader, step_fn, warmup: int, steps: int) -> float:
    """Images per second over ``steps`` steps after ``warmup`` ones, data loading included."""
    iterator = iter(loader)
    seen = 0
    for index in range(warmup + steps):
        if index == warmup:
            seen, start = 0, time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        images, labels = batch[0], batch[1]
        step_fn(images, labels)
        seen += labels.size(0)
    return seen / (time.perf_counter() - start)


def ours(arch, root, sizes: Sizes, num_classes):
    """The training program's own ``train_one_epoch`` (per-step checks, scheduler, scaler, device-side
    normalization), on its own loader; a warm-up epoch of ``warmup`` steps, then a timed one of ``steps``."""
    batch, workers = sizes.batch_size, sizes.workers
    prep = models.default_preprocessing(arch, sizes.input_size)
    model = models.build(arch, num_classes)
    acc = accel.pick("auto", use_cuda=False, training=True, model=model, input_size=prep.input_size)
    splits = data.load_splits({"train": root})
    dataset = data.ImageSamples(splits.samples["train"], prep.train_transform(True, normalize=False), prep.resize)
    loader = data.make_loader(dataset, batch, data.ShardSampler(len(dataset), shuffle=True), workers, drop_last=True)
    model = acc.prepare_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    criterion, stop = nn.CrossEntropyLoss(label_smoothing=0.1), checkpoint.TerminationFlag()
    rate = 0.0
    trainer = Trainer(model, criterion, optimizer, scheduler, acc.grad_scaler(), acc, prep.normalize_batch, prep.input_size)
    for epoch, cap in enumerate((sizes.warmup, sizes.steps), start=1):
        _, seen, _, seconds = train_one_epoch(trainer, loader, epoch, LoopSettings(max_steps_per_epoch=cap), stop)
        rate = seen / seconds
    return rate, acc.describe()


def _timed_rate(loader, sampler, batches: int, device: torch.device | None = None) -> float:
    """A short first epoch starts the (persistent) workers; the second epoch is timed from its start, so nothing
    prefetched before the clock started is counted. On a GPU the clock stops once the device has finished."""
    for index, _ in enumerate(loader):
        if index >= 2:
            break
    sampler.set_epoch(1)
    seen, start = 0, time.perf_counter()
    for index, (images, _labels, _lost) in enumerate(loader):
        seen += images.size(0)
        if index + 1 >= batches:
            break
    if device is not None:
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def loader_rate(root, batch: int, workers: int, batches: int = 40, input_size: int = 224, resize: int = 256) -> float:
    """Images/s that the training loader alone delivers (decode at draft scale, augment, uint8), no model:
    what the CPUs can feed a GPU."""
    prep = Preprocessing(input_size, resize)
    splits = data.load_splits({"train": root})
    dataset = data.ImageSamples(splits.samples["train"], prep.train_transform(True, normalize=False), prep.resize)
    sampler = data.ShardSampler(len(dataset), shuffle=True)
    return _timed_rate(data.make_loader(dataset, batch, sampler, workers, drop_last=True), sampler, batches)


def gpu_loader_rate(root, batch: int, workers: int, batches: int = 40, input_size: int = 224,
                    resize: int = 256) -> float | None:
    """The same on training's GPU path (:mod:`dogbreed.gpu_decode`): the workers read bytes, nvJPEG decodes and the
    crops run on the device. None where there is no GPU."""
    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda", 0)
    prep = Preprocessing(input_size, resize)
    samples = data.load_splits({"train": root}).samples["train"]
    sampler = data.ShardSampler(len(samples), shuffle=True)
    loader = gpu_decode.gpu_loader(samples, prep, device, True, 0.08, batch, sampler, workers)
    return _timed_rate(loader, sampler, batches, device)


def seed_way(arch, root, sizes: Sizes, num_classes):
    from torchvision import datasets  # the seed's way only
    from torchvision import transforms as T

    transform = T.Compose([T.RandomResizedCrop(sizes.input_size), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = DataLoader(dataset, batch_size=sizes.batch_size, shuffle=True, num_workers=sizes.workers, drop_last=True)
    model = models.build(arch, num_classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    criterion = nn.CrossEntropyLoss()

    def step(images, labels):
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return time_steps(model, loader, step, sizes.warmup, sizes.steps)


def parse_args(argv) -> tuple[argparse.Namespace, Sizes]:
    parser = argparse.ArgumentParser(
        description="Images/s of our training step beside the seed's plain fp32 loop, on the same data in the same run")
    base = Sizes()
    parser.add_argument("--models", default=None, help=f"comma-separated (default: {base.models})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default: {base.batch_size}")
    parser.add_argument("--steps", type=int, default=None, help=f"timed steps (default: $BENCH_STEPS or {base.steps})")
    parser.add_argument("--warmup", type=int, default=None, help=f"default: {base.warmup}")
    parser.add_argument("--workers", type=int, default=None, help=f"default: {base.workers}")
    report.add_arguments(parser, "ResNet18 at 64 px on 16 synthetic images, 2 timed steps, a short matmul peak")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else base
    given = {name: getattr(args, name) for name in ("models", "batch_size", "steps", "warmup", "workers")}
    return args, dataclasses.replace(sizes, **{k: v for k, v in given.items() if v is not None})


def measure(arch: str, root: Path, sizes: Sizes, num_classes: int, peaks: tuple[float, float | None]) -> tuple[list, dict]:
    """One model: ours beside the seed's way; (the table's row, the JSON record)."""
    peak_fp32, peak_bf16 = peaks
    flops = training_flops_per_image(arch, num_classes, sizes.input_size)
    ours_ips, how = ours(arch, root, sizes, num_classes)
    seed_ips = seed_way(arch, root, sizes, num_classes)
    ratio = ours_ips / seed_ips
    achieved = ours_ips * flops / 1e9
    share_fp32 = achieved / peak_fp32
    share_bf16 = achieved / peak_bf16 if peak_bf16 else None
    record = {"ours": ours_ips, "seed": seed_ips, "ratio": ratio, "gflop_per_image": flops / 1e9,
              "share_of_fp32_peak": share_fp32, "share_of_bf16_peak": share_bf16, "setup": how}
    row = [arch, f"{seed_ips:.1f}", f"{ours_ips:.1f}", f"**{ratio:.2f}x**", f"{flops / 1e9:.1f}",
           f"{achieved:.0f}", f"{100 * share_fp32:.0f}%", f"{100 * share_bf16:.0f}%" if share_bf16 else "no bf16"]
    print(f"{arch}: seed {seed_ips:.1f} img/s, ours {ours_ips:.1f} img/s ({how}), ratio {ratio:.2f}x, "
          f"{achieved:.0f} GFLOP/s = {100 * share_fp32:.0f}% of the fp32 matmul peak"
          + (f", {100 * share_bf16:.0f}% of the bf16 one" if share_bf16 else ""), flush=True)
    return row, record


def main(argv=None) -> int:
    args, sizes = parse_args(argv)
    where = report.destination(args)
    torch.manual_seed(0)
    root, source = dataset_root(args.quick)
    num_classes = len(data.list_classes(root / "train"))
    threads = accel.set_threads(os.cpu_count())
    peak_fp32 = matmul_peak(torch.float32, sizes.matmul_n, sizes.matmul_seconds)
    peak_bf16 = matmul_peak(torch.bfloat16, sizes.matmul_n, sizes.matmul_seconds) if accel.cpu_supports_bf16() else None
    rows, results = [], {}
    for arch in sizes.models.split(","):
        row, results[arch] = measure(arch, root, sizes, num_classes, (peak_fp32, peak_bf16))
        rows.append(row)
    report.save("train", {
        "title": "Training throughput (whole step, data loading included)",
        "headers": ["model", "seed's way img/s (ImageFolder, fp32 eager)", "ours img/s", "ratio",
                    "train GFLOP/img", "ours GFLOP/s", "share of the fp32 matmul peak", "share of the bf16 matmul peak"],
        "rows": rows,
        "results": results,
        "notes": [
            f"Data: {source}; batch {sizes.batch_size}, {sizes.workers} loader worker(s), {threads} compute threads, "
            f"{sizes.steps} timed steps after {sizes.warmup} warm-up steps, every layer trained, {sizes.input_size} px.",
            "Our set-up, as --precision auto chose it in this run: "
            + "; ".join(f"{a}: {r['setup']}" for a, r in results.items()) + ".",
            f"Matrix-multiply peak measured in this run ({sizes.matmul_n}x{sizes.matmul_n}, all cores): "
            f"fp32 {peak_fp32:.0f} GFLOP/s" + (f", bf16 {peak_bf16:.0f} GFLOP/s" if peak_bf16 else "")
            + ". Train FLOPs: 3x the forward FLOPs counted by torch's FlopCounterMode (its backward count ignores groups).",
        ],
    }, where)
    print(f"wrote {loader_section(root, source, sizes, where)}")
    return 0


# A T4 (ml.g4dn) training ResNet50 with fp16 AMP. NVIDIA publishes T4 mixed-precision *inference* for its
# PyTorch ResNet50 v1.5 (1,190 img/s at batch 128, DeepLearningExamples, PyTorch/Classification/ConvNets/
# resnet50v1.5/README.md, "Inference performance: NVIDIA T4"); a training step costs 3 forwards, so the
# card trains at most about a third of that. No first-party T4 training figure was found.
T4_FP16_INFERENCE = 1190.0
T4_FP16_TRAIN = T4_FP16_INFERENCE / 3
T4_SOURCE = ("NVIDIA DeepLearningExamples, PyTorch ResNet50 v1.5 README, T4 mixed-precision inference 1,190 img/s "
             "at batch 128; training = 3 forwards")


def loader_section(root, source: str, sizes: Sizes, where: report.Destination) -> Path:
    """The loader alone, with the 4 workers of an ml.g4dn.xlarge, on both decode paths, beside what a T4 consumes;
    returns the report."""
    batch, workers = sizes.batch_size, sizes.loader_workers
    resize = models.default_preprocessing("resnet50", sizes.input_size).resize
    rates = {"CPU: Pillow in the workers": loader_rate(root, batch, workers, sizes.loader_batches, sizes.input_size,
                                                       resize),
             "GPU: nvJPEG + crops on the device": gpu_loader_rate(root, batch, workers, sizes.loader_batches,
                                                                  sizes.input_size, resize)}
    rows, results = [], {"workers": workers, "t4_fp16_train": T4_FP16_TRAIN}
    for path, rate in rates.items():
        if rate is None:
            rows.append([path, workers, "no GPU here", f"~{T4_FP16_TRAIN:.0f}", "-"])
            continue
        verdict = "loader-bound" if rate < T4_FP16_TRAIN else "not loader-bound"
        print(f"loader ({path}): {rate:.0f} img/s with {workers} workers vs T4 fp16 training ~{T4_FP16_TRAIN:.0f} "
              f"img/s: {verdict}", flush=True)
        rows.append([path, workers, f"{rate:.0f}", f"~{T4_FP16_TRAIN:.0f}", f"**{verdict}**"])
        results["gpu_decode_images_per_sec" if path.startswith("GPU") else "loader_images_per_sec"] = rate
    return report.save("loader", {
        "title": "Input pipeline alone: can these CPUs keep a T4 fed?",
        "headers": ["decode path", "loader workers", "loader img/s (this machine)", "T4 ResNet50 fp16 training img/s",
                    "verdict"],
        "rows": rows,
        "results": results,
        "notes": [
            f"Data: {source}; batch {batch}; random resized crop + flip, uint8 batches (normalized on the device); no "
            "model runs. CPU path: draft-scale JPEG decode with Pillow in the workers. GPU path: the workers read "
            "the files, `torchvision.io.decode_jpeg(device='cuda')` decodes the batch (`--gpu-decode auto`, the "
            "default on a CUDA device). Workers share this machine's cores.",
            f"T4 rate: {T4_SOURCE}.",
        ],
    }, where)


if __name__ == "__main__":
    sys.exit(main())
