"""The training program: one program for tuning and for final training.

Follows torchvision's reference trainer: ``get_args_parser()``, ``main(args)``, ``train_one_epoch``,
``evaluate``. Hyperparameters are CLI flags (also the SageMaker hyperparameter names); paths default
from ``SM_*`` variables; metrics are printed as ``name=value`` lines (see :mod:`dogbreed.metrics`).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import accel, checkpoint, data, distributed, errors, features, metrics, models, probe, wise
from . import env as envnames
from .common import configure_logging, steps_per_epoch, str2bool
from .env import SageMakerEnv
from .errors import DogbreedError
from .insight.hooks import hooks_from_environment

log = logging.getLogger("dogbreed.train")


class TrainingError(DogbreedError):
    """A reason to stop that the user can act on; its message goes to the failure file."""


class Interrupted(TrainingError):
    """Stopped by SIGTERM (spot interruption, StopTrainingJob): exit code 143, the last checkpoint kept."""


def _positive(kind):
    def parse(value):
        number = kind(value)
        if not number > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
        return number

    return parse


def _non_negative(kind):
    def parse(value):
        number = kind(value)
        if number < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
        return number

    return parse


def _fraction(value):
    number = float(value)
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return number


def _smoothing(value):
    number = float(value)
    if not 0 <= number < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return number


# Default epochs: from scratch or one learning rate; and LP-FT's fine-tuning, which starts from a fitted head and only
# adjusts the features: two epochs (a warm-up, a decay) of gentle steps; each epoch costs about 90 s on dogs10 on 2 cores.
EPOCHS, LP_FT_EPOCHS = 10, 2
LABEL_SMOOTHING = 0.1
# Below this many images per batch and process, batch statistics are too noisy to replace the pretrained ones.
BN_BATCH = 64


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so a bad hyperparameter reaches the failure file."""

    def error(self, message):
        raise TrainingError(f"bad hyperparameter: {message}")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = _Parser(description="Train a dog breed classifier (SageMaker training program)", add_help=add_help)
    a = parser.add_argument
    a("--model", default="resnet50", help="torchvision ResNet or timm model name (default: resnet50)")
    a("--pretrained-weights", default="imagenet",
      help="'imagenet' (download; or the file in a 'pretrained' channel), 'none', or a state_dict file (default: imagenet)")
    a("--train-layers", default="auto", choices=("auto", *models.TRAIN_LAYERS),
      help="what trains: auto (with pretrained weights: the head fitted on frozen features, then all layers fine-tuned "
           "gently, kept only where the valid split says it is better; without: all layers), or the head only, the "
           "last stage + head, all layers, each at one learning rate (default: auto)")
    a("--epochs", type=_positive(int), default=None,
      help=f"number of epochs (default: {LP_FT_EPOCHS} of fine-tuning after the probe under --train-layers auto with "
           f"pretrained weights, else {EPOCHS})")
    a("--batch-size", type=_positive(int), default=32, help="images per batch and process (default: 32)")
    a("--lr", type=_positive(float), default=1e-3,
      help="peak learning rate; the head's under --train-layers auto, the backbone's is lr x --backbone-lr-ratio "
           "(default: 0.001)")
    a("--backbone-lr-ratio", type=_positive(float), default=0.1,
      help="--train-layers auto: the backbone's learning rate as a fraction of the head's (default: 0.1)")
    a("--freeze-bn", default="auto", choices=("auto", "true", "false"),
      help="keep batch-norm statistics as pretrained while training; auto: under --train-layers auto with fewer "
           f"than {BN_BATCH} images per batch and process (default: auto)")
    a("--weight-decay", type=_non_negative(float), default=1e-4, help="weight decay, not on biases and norms (default: 0.0001)")
    a("--optimizer", default="adamw", choices=("adamw", "sgd"), help="optimizer (default: adamw)")
    a("--momentum", type=_non_negative(float), default=0.9, help="SGD momentum, Nesterov where > 0 (default: 0.9)")
    a("--label-smoothing", type=_smoothing, default=None,
      help=f"label smoothing (default: {LABEL_SMOOTHING}; 0 under LP-FT, whose head was fitted to the plain loss)")
    a("--warmup-epochs", type=_non_negative(float), default=1.0,
      help="epochs of linear warm-up before the cosine decay (default: 1.0)")
    a("--data-fraction", type=_fraction, default=1.0, help="stratified, seeded subset of every split (default: 1.0)")
    a("--seed", type=int, default=42, help="seed of the subset, the shuffles and the weights (default: 42)")
    a("--patience", type=_non_negative(int), default=3, help="early stopping on valid_loss; 0 disables (default: 3)")
    a("--num-workers", type=_non_negative(int), default=None,
      help="data-loader workers per process (default: one per spare core, from SM_NUM_CPUS, at most 8)")
    a("--precision", default=os.environ.get(envnames.DOGBREED_PRECISION, "auto"), choices=accel.PRECISIONS,
      help=f"compute precision; auto measures what the hardware runs fastest (default: ${envnames.DOGBREED_PRECISION} or auto)")
    a("--input-size", type=_positive(int), default=None, help="crop size in pixels (default: the model's)")
    a("--augment", type=str2bool, default=True, help="random resized crop + flip for training (default: true)")
    a("--min-crop-scale", type=_fraction, default=0.08,
      help="the smallest share of an image's area a random crop may cover (default: 0.08, torchvision's)")
    a("--max-steps-per-epoch", type=_non_negative(int), default=0, help="cap the steps of an epoch; 0: all (default: 0)")
    a("--data-dir", default=None, help="a folder holding train/ valid/ test/ (default: the SageMaker channels)")
    a("--model-dir", default=None, help="where model.pth and model.json go (default: SM_MODEL_DIR)")
    a("--output-data-dir", default=None, help="where metrics.json and the reports go (default: SM_OUTPUT_DATA_DIR)")
    a("--checkpoint-dir", default=None, help="where checkpoints go (default: /opt/ml/checkpoints/<job name>)")
    a("--resume", type=str2bool, default=True, help="resume from this job's newest checkpoint (default: true)")
    a("--resume-from", default=None,
      help="a folder of another run's checkpoints to start from, refused if its settings differ (default: the 'resume' channel)")
    a("--progress", default="auto", choices=("auto", "bar", "lines", "none"),
      help="progress display on stderr; auto: a bar in a terminal, else lines (default: auto)")
    a("--profile", type=str2bool, default=True,
      help="system use, step split and a torch.profiler trace in SM_OUTPUT_DATA_DIR/profile (default: true)")
    a("--debug-out", default=None,
      help="local runs: write an smdebug trial here (default: none; SageMaker: debughookconfig.json)")
    a("--debug-interval", type=_positive(int), default=10, help="smdebug save interval in steps (default: 10)")
    a("--debug-collections", default="losses,weights,gradients,biases",
      help="smdebug collections to save, comma-separated (default: losses,weights,gradients,biases)")
    a("--feature-cache", default=None,
      help="head-only training without augmentation: cache the frozen features in this folder (default: none)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = get_args_parser().parse_args(argv)
    validate(args)
    return args


def validate(args: argparse.Namespace) -> None:
    """Checks that need no data: they fail at once, before anything is read."""
    try:
        models.check_arch(args.model)
    except DogbreedError as exc:
        raise TrainingError(str(exc)) from exc
    weights = str(args.pretrained_weights)
    if weights.lower() not in ("imagenet", "none", "") and not Path(weights).is_file():
        raise TrainingError(f"--pretrained-weights {weights}: no such file")
    if args.precision == "fp16" and not torch.cuda.is_available():
        raise TrainingError("--precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
    if args.epochs is None:
        args.epochs = LP_FT_EPOCHS if is_lp_ft(args) else EPOCHS
    if args.label_smoothing is None:
        # LP-FT: smoothed targets would first pull the fitted head's logits in, and make the fine-tuned model's valid
        # loss (plain cross-entropy) an unfair comparison with the probe's.
        args.label_smoothing = 0.0 if is_lp_ft(args) else LABEL_SMOOTHING


def is_lp_ft(args) -> bool:
    """The default recipe (LP-FT) runs where there are pretrained features to probe: linear probe, then fine-tuning."""
    return args.train_layers == "auto" and str(args.pretrained_weights).lower() not in ("none", "")


def layers_of(args) -> str:
    """What trains by gradient: ``auto`` fine-tunes all layers (after the probe where there are weights)."""
    return "all" if args.train_layers == "auto" else args.train_layers


def bn_frozen(args) -> bool:
    if args.freeze_bn == "auto":
        return is_lp_ft(args) and args.batch_size < BN_BATCH
    return args.freeze_bn == "true"


# --------------------------------------------------------------------------------------------------
# progress


class Progress:
    """A tqdm bar in an interactive terminal, a few plain lines otherwise; updated once per logging interval."""

    def __init__(self, mode: str, total: int, epoch: int, enabled: bool):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode if enabled else "none"
        self.total, self.epoch, self.bar, self.shown = total, epoch, None, 0
        if self.mode == "bar":
            from tqdm import tqdm  # only for an interactive terminal

            self.bar = tqdm(total=total, desc=f"epoch {epoch}", leave=False, file=sys.stderr)

    def update(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.shown)
            self.bar.set_postfix(loss=f"{loss:.4f}")
        elif self.mode == "lines":
            print(f"[progress] e{self.epoch} {step}/{self.total} loss {loss:.4f}", file=sys.stderr, flush=True)
        self.shown = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def log_interval(steps: int) -> int:
    """Steps between the host's looks at the device (loss check, progress, the SIGTERM vote): about 5 an epoch."""
    return max(1, min(50, steps // 5))


# --------------------------------------------------------------------------------------------------
# one epoch


def _placeholder_batch(input_size: int):
    """What a DDP rank whose batch lost every image trains on: one black image whose loss counts zero.
    Every rank must take the same steps, or the gradient all-reduce waits forever."""
    return torch.zeros(1, 3, input_size, input_size, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), 0.0


def _look(loss_sum: torch.Tensor, seen: int, epoch: int, step: int) -> float:
    """The one host sync of a logging interval: the mean loss so far, which must be finite."""
    mean = loss_sum.item() / max(1, seen)
    if not math.isfinite(mean):
        raise TrainingError(f"the loss became {mean} by epoch {epoch} step {step}: lower --lr")
    return mean


def train_one_epoch(model, criterion, optimizer, scheduler, scaler, loader, acc, epoch, args, stop, hooks=(),
                    normalize=None, input_size: int = 224):
    """One pass over ``loader``. Returns (mean loss over all ranks, images seen, unreadable indices, seconds).

    The host waits for the device once per logging interval, never per step, so a GPU's queue stays full."""
    model.train()
    models.frozen_modules_eval(models.unwrap(model))
    if bn_frozen(args):  # small batches: the pretrained statistics are better estimates than each batch's
        models.batchnorm_eval(models.unwrap(model))
    steps = steps_per_epoch(len(loader), args.max_steps_per_epoch)
    every = log_interval(steps)
    progress = Progress(args.progress, steps, epoch, enabled=args.is_main)
    loss_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
    seen, step, unreadable, weight = 0, 0, [], 1.0
    start = time.perf_counter()
    for images, labels, lost in loader:
        unreadable.extend(lost)
        if labels.numel() == 0:
            if not distributed.is_enabled():
                continue
            images, labels, weight = _placeholder_batch(input_size)
        for hook in hooks:
            hook.begin_step()
        images = acc.prepare_batch(images)
        images = normalize(images) if normalize else images
        labels = labels.to(acc.device, non_blocking=True)
        with acc.autocast():
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss * weight).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        counted = int(labels.size(0) * weight)
        loss_sum += loss.detach().double() * counted
        seen, step, weight = seen + counted, step + 1, 1.0
        for hook in hooks:
            hook.end_step(loss.detach())
        if step % every == 0 or step >= steps:
            progress.update(step, _look(loss_sum, seen, epoch, step))
            if distributed.broadcast_flag(stop.requested, acc.device):
                stop.requested = True
                break
        if step >= steps:
            break
    progress.close()
    _look(loss_sum, seen, epoch, step)
    elapsed = time.perf_counter() - start
    sums = distributed.all_reduce_sum([loss_sum.item(), seen], acc.device)
    return sums[0] / max(1, sums[1]), int(sums[1]), unreadable, elapsed


@torch.inference_mode()
def evaluate(model, criterion, loader, acc, num_classes: int, with_confusion: bool = False, normalize=None):
    """Returns (loss, accuracy, unreadable indices, confusion matrix or None) over the whole split (all ranks).
    Sums stay on the device until the end: one host sync per evaluation."""
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=acc.device)
    correct = torch.zeros((), dtype=torch.int64, device=acc.device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=acc.device)
    seen, unreadable = 0, []
    for images, labels, lost in loader:
        unreadable.extend(lost)
        if labels.numel() == 0:
            continue
        images = acc.prepare_batch(images)
        images = normalize(images) if normalize else images
        labels = labels.to(acc.device, non_blocking=True)
        with acc.autocast():
            output = model(images)
        output = output.float()
        total_loss += criterion(output, labels).double() * labels.size(0)
        predicted = output.argmax(dim=1)
        correct += (predicted == labels).sum()
        seen += labels.size(0)
        if with_confusion:
            confusion += torch.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    sums = distributed.all_reduce_sum([total_loss.item(), correct.item(), seen], acc.device)
    matrix = None
    if with_confusion:
        matrix = distributed.all_reduce_tensor(confusion).cpu().view(num_classes, num_classes)
    seen = max(1, sums[2])
    return sums[0] / seen, sums[1] / seen, unreadable, matrix


# --------------------------------------------------------------------------------------------------
# setup helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def warmup_cosine(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return 0.1 + 0.9 * step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def resolve_paths(args, smenv: SageMakerEnv) -> None:
    """Paths from the flags, else from SageMaker's environment. Checkpoints go under the job's own name:
    SageMaker restores a spot-interrupted job under that name, and a new job starts clean."""
    args.model_dir = Path(args.model_dir or smenv.model_dir)
    args.output_data_dir = Path(args.output_data_dir or smenv.output_data_dir)
    if args.checkpoint_dir:
        args.checkpoint_dir = Path(args.checkpoint_dir)
    else:
        args.checkpoint_dir = smenv.checkpoint_dir / smenv.job_name if smenv.job_name else smenv.checkpoint_dir
    channels = dict(smenv.channels)
    if not args.resume_from and "resume" in channels:
        args.resume_from = str(channels["resume"])
    channels.pop("resume", None)
    if args.data_dir:
        channels = {"train": Path(args.data_dir)}
    args.channels = channels
    if str(args.pretrained_weights).lower() == "imagenet" and "pretrained" in channels:
        files = sorted(p for p in Path(channels["pretrained"]).rglob("*") if p.is_file() and p.suffix in (".pth", ".pt", ".bin"))
        if not files:
            raise TrainingError(f"the 'pretrained' channel {channels['pretrained']} holds no .pth/.pt file")
        args.pretrained_weights = str(files[0])


def default_workers(smenv: SageMakerEnv, procs_per_host: int) -> int:
    """One worker per spare core (decoding runs beside the compute), at least one, at most 8."""
    per_process = max(1, smenv.num_cpus // max(1, procs_per_host))
    return max(1, min(8, per_process - 1)) if per_process > 1 else 1


def build_model(args, num_classes: int) -> nn.Module:
    weights = str(args.pretrained_weights)
    model = models.build(args.model, num_classes, download_imagenet=weights.lower() == "imagenet")
    if weights.lower() not in ("imagenet", "none", ""):
        left_out = models.load_backbone_weights(model, Path(weights))
        log.info("loaded %s (left out %d head tensors)", weights, len(left_out))
    elif weights.lower() == "none":
        log.info("training %s from random initialisation", args.model)
    trainable, total = models.set_trainable(model, layers_of(args))
    log.info("training %s of %s parameters (--train-layers %s)", f"{trainable:,}", f"{total:,}", args.train_layers)
    return model


def make_optimizer(args, model, backbone_ratio: float = 1.0):
    """Weight decay on weights only; the backbone at ``backbone_ratio`` x the head's lr. The head's groups come first:
    the ``lr=`` metric is the head's."""
    head = models.head_name(models.unwrap(model)) + "."
    found = {}
    for name, param in models.unwrap(model).named_parameters():
        if param.requires_grad:
            key = (not name.startswith(head), param.ndim <= 1 or name.endswith(".bias"))
            found.setdefault(key, []).append(param)
    groups = [{"params": found[key], "weight_decay": 0.0 if key[1] else args.weight_decay,
               "lr": args.lr * (backbone_ratio if key[0] else 1.0)} for key in sorted(found)]
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=args.momentum > 0)
    return torch.optim.AdamW(groups, lr=args.lr)


def write_reports(output_dir: Path, class_names, confusion, summary: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    if confusion is None:
        return
    with open(output_dir / "per_class.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "support", "correct", "accuracy"])
        for index, name in enumerate(class_names):
            support = int(confusion[index].sum())
            correct = int(confusion[index, index])
            writer.writerow([name, support, correct, f"{correct / support:.4f}" if support else ""])
    with open(output_dir / "confusion.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *class_names])
        for index, name in enumerate(class_names):
            writer.writerow([name, *[int(x) for x in confusion[index]]])


# --------------------------------------------------------------------------------------------------
# the run: named steps over one shared object


@dataclass
class Run:
    """What the steps of one training run share."""

    args: argparse.Namespace
    smenv: SageMakerEnv
    dist: distributed.DistInfo
    use_cuda: bool
    workers: int = 0
    splits: data.Splits | None = None
    prep: object = None
    datasets: dict = field(default_factory=dict)
    loaders: dict = field(default_factory=dict)
    train_sampler: data.ShardSampler | None = None
    full_model: nn.Module | None = None  # what ships
    model: nn.Module | None = None  # what trains: the whole model, or its head on cached features; DDP-wrapped
    acc: accel.Accelerator | None = None
    use_cache: bool = False
    optimizer: torch.optim.Optimizer | None = None
    scheduler: object = None
    scaler: object = None
    criterion: nn.Module | None = None
    eval_criterion: nn.Module | None = None
    hooks: list = field(default_factory=list)
    unreadable: dict = field(default_factory=dict)  # split -> indices found unreadable (each counted once)
    lp_ft: bool = False  # the default recipe: linear probe, then gentle fine-tuning kept only where validation prefers it
    probe: dict | None = None  # the probe's record (L2, valid/test scores, seconds)
    started: float = field(default_factory=time.perf_counter)

    @property
    def num_classes(self) -> int:
        return len(self.splits.class_names)


def load_data(run: Run) -> None:
    """Splits, preprocessing and datasets. The datasets yield uint8: batches are normalized on the device."""
    args = run.args
    run.splits = data.load_splits(args.channels, args.data_fraction, args.seed)
    run.prep = models.default_preprocessing(args.model, args.input_size)
    draft = run.prep.resize  # JPEGs decode at the smallest scale that still covers the resize
    augment = run.prep.train_transform(args.augment, False, args.min_crop_scale)
    run.datasets = {"train": data.ImageSamples(run.splits.samples["train"], augment, draft)}
    for split in ("valid", "test"):
        if split in run.splits.samples:
            run.datasets[split] = data.ImageSamples(run.splits.samples[split], run.prep.eval_transform(False), draft)
    run.unreadable = {split: set() for split in run.datasets}
    log.info("data: %d classes; %s", run.num_classes, ", ".join(f"{k}={len(v)}" for k, v in run.datasets.items()))


def choose_model_and_precision(run: Run) -> None:
    """The model, and the device/precision it trains at (measured on CPUs: the work that will run)."""
    args = run.args
    run.full_model = run.model = build_model(args, run.num_classes)
    run.lp_ft = is_lp_ft(args) and isinstance(features.head_of(run.model), nn.Linear)
    if is_lp_ft(args) and not run.lp_ft:  # a convolutional or two-part classifier: no linear probe to fit
        log.warning("%s's classifier is not one Linear layer: no linear probe, every layer fine-tunes", args.model)
    run.use_cache = bool(args.feature_cache) and args.train_layers == "head" and not args.augment and not run.dist.enabled
    if args.feature_cache and not run.use_cache and not run.lp_ft:  # LP-FT caches its probe's features there
        log.warning("--feature-cache needs --train-layers head, --augment false and one process: ignored")
    warm_cache = run.use_cache and features.is_cached(Path(args.feature_cache), _cache_key(run))
    if warm_cache and not run.use_cuda and args.precision == "auto":  # only a Linear head runs: nothing to measure
        run.acc = replace(accel.pick("fp32", use_cuda=False), reason="cached features: only the head trains")
    else:  # the probe times the work that runs: the frozen feature pass where the head trains on cached features
        run.acc = accel.pick(args.precision, run.dist.local_rank, use_cuda=run.use_cuda, training=not run.use_cache,
                             model=run.model, input_size=run.prep.input_size)
    run.acc = distributed.same_choice_everywhere(run.acc)
    log.info("%s rank=%d/%d workers=%d (%s)", run.acc.describe(), run.dist.rank, run.dist.world_size, run.workers,
             run.acc.reason)


def _cache_key(run: Run) -> str:
    return features.cache_key(run.args.model, str(run.args.pretrained_weights), run.prep,
                              {k: d.samples for k, d in run.datasets.items()})


def make_loaders(run: Run) -> None:
    """Image loaders (training shards padded so that every rank steps together), or cached-feature loaders."""
    args, dist_info = run.args, run.dist
    if run.use_cache:
        return _feature_loaders(run)
    run.train_sampler = data.ShardSampler(len(run.datasets["train"]), dist_info.rank, dist_info.world_size, shuffle=True,
                                          seed=args.seed, pad=True)
    run.loaders = {"train": data.make_loader(run.datasets["train"], args.batch_size, run.train_sampler, run.workers,
                                             run.use_cuda)}
    for split in ("valid", "test"):
        if split in run.datasets:
            sampler = data.ShardSampler(len(run.datasets[split]), dist_info.rank, dist_info.world_size)
            run.loaders[split] = data.make_loader(run.datasets[split], args.batch_size, sampler, run.workers, run.use_cuda)


def _feature_loaders(run: Run) -> None:
    """Head-only training without augmentation: the frozen backbone runs once (cached); the head trains on its output."""
    args = run.args
    computed = features.cached_features(Path(args.feature_cache), _cache_key(run), run.model, run.datasets, run.acc,
                                        args.batch_size, run.workers, run.prep.normalize_batch)
    run.model = features.head_of(run.model)
    # The choice above was measured on the feature pass; the head alone trains in fp32 wherever the features came from.
    run.acc = replace(run.acc, precision="fp32", channels_last=False,
                      reason=f"cached features: only the head trains (features: {run.acc.precision})")
    for split, (feats, labels, skipped_images) in computed.items():
        if skipped_images:
            log.warning("%s: %d unreadable images left out of the cached features", split, skipped_images)
        sampler = data.ShardSampler(len(labels), shuffle=split == "train", seed=args.seed)
        if split == "train":
            run.train_sampler = sampler
        run.loaders[split] = features.feature_loader(feats, labels, args.batch_size, sampler)
    log.info("training the head on cached features (%s)", ", ".join(f"{k}={len(v[1])}" for k, v in computed.items()))


def _probe_features(run: Run) -> dict:
    """{split: (features, labels, skipped)} of the frozen backbone on the eval crop of every split (cached on disk
    where --feature-cache names a folder: tuning trials on the same data then share them)."""
    args, model = run.args, models.unwrap(run.model)
    datasets = {split: data.ImageSamples(run.splits.samples[split], run.prep.eval_transform(False), run.prep.resize)
                for split in run.datasets}
    if args.feature_cache:
        return features.cached_features(Path(args.feature_cache), _cache_key(run), model, datasets, run.acc,
                                        args.batch_size, run.workers, run.prep.normalize_batch)
    extractor = features.FeatureExtractor(model)
    return {split: features.compute(extractor, dataset, run.acc, args.batch_size, run.workers, run.prep.normalize_batch)
            for split, dataset in datasets.items()}


def fit_probe(run: Run) -> None:
    """LP-FT's first stage: the head fitted on frozen features (L-BFGS logistic regression, L2 chosen on the valid
    split), so that fine-tuning starts from a fitted head and does not distort the features chasing a random one.
    Every rank fits the same probe on the same features (deterministic): no broadcast needed."""
    if not run.lp_ft:
        return
    start = time.perf_counter()
    computed = _probe_features(run)
    extracted = time.perf_counter() - start
    # Scored in the precision the model's head runs in: the probe's valid numbers are compared with fine-tuned epochs'.
    dtype = run.acc.autocast_dtype
    fitted = probe.fit(computed["train"][:2], computed["valid"][:2], run.num_classes, dtype=dtype)
    head = features.head_of(models.unwrap(run.model))
    with torch.no_grad():
        head.weight.copy_(fitted.weight)
        head.bias.copy_(fitted.bias)
    images = sum(len(labels) for _, labels, _ in computed.values())
    run.probe = {**fitted.as_dict(), "features_seconds": round(extracted, 2),
                 "seconds": round(time.perf_counter() - start, 2)}
    if "test" in computed:  # reported beside the final model's test score, never used for a choice
        run.probe["test_loss"], run.probe["test_acc"] = probe.score(fitted.weight, fitted.bias, *computed["test"][:2],
                                                                    dtype)
    if run.args.is_main:
        print(metrics.format_line(epoch=0, train_loss=fitted.train_loss, valid_loss=fitted.valid_loss,
                                  valid_acc=fitted.valid_acc, lr=0.0, images_per_sec=images / max(extracted, 1e-9)),
              flush=True)
    log.info("linear probe (L-BFGS logistic regression, l2=%g) in %.1f s: valid_acc %.4f, valid_loss %.4f; next: "
             "fine-tuning all layers, head lr %g, backbone lr %g, batch-norm statistics %s", fitted.l2,
             run.probe["seconds"], fitted.valid_acc, fitted.valid_loss, run.args.lr,
             run.args.lr * run.args.backbone_lr_ratio, "frozen" if bn_frozen(run.args) else "updated")


def make_training_parts(run: Run, hooks_factory) -> None:
    """Device placement, the DDP wrapper, losses, optimizer, warm-up + cosine schedule, grad scaler, hooks."""
    args = run.args
    run.model = run.acc.prepare_model(run.model)
    if run.dist.enabled:
        run.model = nn.parallel.DistributedDataParallel(run.model, device_ids=[run.acc.device.index] if run.use_cuda else None)
    run.criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    run.eval_criterion = nn.CrossEntropyLoss()
    run.optimizer = make_optimizer(args, run.model, args.backbone_lr_ratio if run.lp_ft else 1.0)
    steps = steps_per_epoch(len(run.loaders["train"]), args.max_steps_per_epoch)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        run.optimizer, warmup_cosine(args.epochs * steps, int(args.warmup_epochs * steps)))
    run.scaler = run.acc.grad_scaler()
    unwrapped = models.unwrap(run.model)
    run.hooks = hooks_factory(unwrapped, [run.criterion, run.eval_criterion], args) if hooks_factory else []


# --------------------------------------------------------------------------------------------------
# checkpoints and resume

# Flags that change where things go or how they are shown, not what is trained: a resume may differ in these.
NOT_TRAINING = frozenset({"num_workers", "progress", "profile", "debug_out", "debug_interval", "debug_collections",
                          "data_dir", "model_dir", "output_data_dir", "checkpoint_dir", "resume", "resume_from",
                          "feature_cache", "is_main", "channels"})


def fingerprint(run: Run) -> dict:
    """Everything that changes what training computes: the hyperparameters, the classes, the images."""
    hps = {k: v for k, v in sorted(vars(run.args).items())
           if k not in NOT_TRAINING and (v is None or isinstance(v, (int, float, str, bool)))}
    weights = Path(str(run.args.pretrained_weights))
    if weights.is_file():  # the same weights file through another channel path is the same weights
        hps["pretrained_weights"] = f"{weights.name}:{weights.stat().st_size}"
    hps["classes"] = list(run.splits.class_names)
    hps["images"] = {k: len(v) for k, v in run.datasets.items()}
    hps["cached_features"] = run.use_cache
    return hps


def _state_of(run: Run, state: dict, epoch_done: int) -> dict:
    return {**state, "epoch": epoch_done, "fingerprint": fingerprint(run), "model": models.unwrap(run.model).state_dict(),
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict()}


def save_checkpoint(run: Run, state: dict, epoch_done: int) -> None:
    """After a complete epoch only: a checkpoint never holds a half-trained epoch."""
    if distributed.writes_artifacts(run.dist):  # global rank 0: every host syncs to the one S3 prefix
        checkpoint.save(run.args.checkpoint_dir, epoch_done, _state_of(run, state, epoch_done))


def find_resume_point(run: Run):
    """This job's newest checkpoint (a spot restart), else the one ``--resume-from`` names, else None."""
    found = checkpoint.load_latest(run.args.checkpoint_dir)
    if found or not run.args.resume_from:
        return found
    found = checkpoint.load_latest(Path(run.args.resume_from), recursive=True)
    if not found:
        raise TrainingError(f"--resume-from {run.args.resume_from}: no readable checkpoint there")
    return found


def resume(run: Run, state: dict) -> None:
    found = find_resume_point(run) if run.args.resume else None
    if not found:
        return
    saved, path = found
    defaults = vars(get_args_parser().parse_args([]))
    differences = checkpoint.differences(saved.get("fingerprint") or {}, fingerprint(run), defaults)
    if differences:
        raise TrainingError(f"refusing to resume from {path}: it was trained with other settings ({differences}); "
                            "rerun with the same ones, or start afresh (--resume false or an empty --checkpoint-dir)")
    models.unwrap(run.model).load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.scaler.load_state_dict(saved["scaler"])
    for key in ("epoch", "best_valid_loss", "best_epoch", "bad_epochs", "history", "best_model"):
        state[key] = saved[key]
    state["best_valid_acc"] = saved.get("best_valid_acc", 0.0)
    state["probe_model"] = saved.get("probe_model", state.get("probe_model"))  # older checkpoints: the probe just fitted
    log.info("resumed from %s (epoch %d done)", path, state["epoch"])
    print(f"resumed_from_epoch={state['epoch']}", flush=True)


# --------------------------------------------------------------------------------------------------
# the epoch loop


def note_unreadable(run: Run, split: str, indices) -> int:
    """Record unreadable images of a split (from every rank); returns how many are new, and names them once."""
    found = distributed.gather_union(indices)
    new = sorted(found - run.unreadable[split])
    run.unreadable[split].update(new)
    if new and run.args.is_main:
        names = ", ".join(str(run.datasets[split].samples[i][0].name) for i in new[:5])
        log.warning("%s: %d unreadable image(s) skipped: %s%s", split, len(new), names, " ..." if len(new) > 5 else "")
    return len(new)


def run_epoch(run: Run, state: dict, epoch: int, stop) -> bool:
    """Train and validate one epoch, keep the best weights, checkpoint. Returns True to stop early."""
    args = run.args
    torch.manual_seed(args.seed + epoch)  # per-epoch seeds: a resumed run repeats the epoch it lost exactly
    run.train_sampler.set_epoch(epoch)
    for hook in run.hooks:
        hook.set_mode("train")
    train_loss, seen, lost, seconds = train_one_epoch(
        run.model, run.criterion, run.optimizer, run.scheduler, run.scaler, run.loaders["train"], run.acc, epoch, args,
        stop, run.hooks, run.prep.normalize_batch, run.prep.input_size)
    if stop.requested:
        raise Interrupted(_interrupted_reason(run, epoch))
    new_unreadable = note_unreadable(run, "train", lost) if "train" in run.unreadable else 0
    for hook in run.hooks:
        hook.set_mode("eval")
    # The module itself, not its DDP wrapper: evaluation shards may be uneven, and the wrapper's buffer sync is a collective.
    # So the buffers are made equal here, once, by every rank together.
    distributed.broadcast_buffers(models.unwrap(run.model))
    valid_loss, valid_acc, lost, _ = evaluate(models.unwrap(run.model), run.eval_criterion, run.loaders["valid"], run.acc,
                                              run.num_classes, normalize=run.prep.normalize_batch)
    new_unreadable += note_unreadable(run, "valid", lost) if "valid" in run.unreadable else 0
    for hook in run.hooks:
        hook.record_eval(valid_loss)
    lr = run.optimizer.param_groups[0]["lr"]
    rate = seen / max(seconds, 1e-9)
    if args.is_main:
        print(metrics.format_line(epoch=epoch, train_loss=train_loss, valid_loss=valid_loss, valid_acc=valid_acc, lr=lr,
                                  images_per_sec=rate), flush=True)
    state["history"].append({"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, "valid_acc": valid_acc,
                             "lr": lr, "images_per_sec": rate, "new_unreadable": new_unreadable})
    if improved(run, state, valid_loss, valid_acc):
        state.update(best_valid_loss=valid_loss, best_valid_acc=valid_acc, best_epoch=epoch, bad_epochs=0)
        state["best_model"] = weights_of(models.unwrap(run.model))
    else:
        state["bad_epochs"] += 1
    save_checkpoint(run, state, epoch)
    if stop.requested:  # SIGTERM during validation: the epoch is saved, stop now
        raise Interrupted(_interrupted_reason(run, epoch + 1))
    if args.patience and state["bad_epochs"] >= args.patience:
        log.info("early stopping: valid_loss has not improved for %d epochs (best at epoch %d)", args.patience,
                 state["best_epoch"])
        return True
    return False


def weights_of(model: nn.Module) -> dict:
    """A copy of the model's weights on the CPU: the best so far, the probe's, a mix kept."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def improved(run: Run, state: dict, valid_loss: float, valid_acc: float) -> bool:
    """A lower valid loss; under LP-FT also an accuracy at least as high: both must prefer the fine-tuned weights over
    the best so far (the probe at first). Two measures agreeing keep a small valid split's noise from trading a sound
    probe for a worse fine-tuned model."""
    if valid_loss >= state["best_valid_loss"]:
        return False
    return not run.lp_ft or valid_acc >= state["best_valid_acc"]


def initial_state(run: Run) -> dict:
    """Where fitting starts: under LP-FT the probe is epoch 0, the model to beat."""
    state = {"epoch": 0, "best_valid_loss": math.inf, "best_valid_acc": 0.0, "best_epoch": 0, "bad_epochs": 0,
             "history": [], "best_model": None, "probe_model": None, "mixes": [], "best_alpha": None}
    if run.probe:
        # each rank fitted its own probe (GPU reductions may round differently): rank 0's scores, like its weights,
        # are the ones every rank compares fine-tuned epochs with
        loss, acc = distributed.from_rank_zero([run.probe["valid_loss"], run.probe["valid_acc"]], run.acc.device)
        state.update(best_valid_loss=loss, best_valid_acc=acc)
        state["best_model"] = weights_of(models.unwrap(run.model))
        state["probe_model"] = state["best_model"]  # one end of the weight-space ensembles (wise.py)
    return state


def ensemble_weights(run: Run, state: dict, stop) -> None:
    """LP-FT's last step: weights between the probe and the last fine-tuned epoch (WiSE-FT, :mod:`wise`), each
    kept under the rule epochs are kept by (:func:`improved`). Deterministic from the checkpointed state: a run
    restarted after its last epoch repeats it exactly. Every rank mixes the same weights (DDP broadcast rank 0's
    probe before fine-tuning) and scores them together."""
    if not run.lp_ft or state.get("probe_model") is None or not state["history"]:
        return
    model = models.unwrap(run.model)
    tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["mixes"] = []
    for alpha in wise.ALPHAS:
        if distributed.broadcast_flag(stop.requested, run.acc.device):
            last = state["history"][-1]["epoch"]
            raise Interrupted(f"stopped by SIGTERM after the last epoch, while mixing the probe's and the fine-tuned "
                              f"weights; epoch {last} is the last checkpoint: a restart of this job redoes the mixes")
        model.load_state_dict(wise.mix(state["probe_model"], tuned, alpha))
        valid_loss, valid_acc, _, _ = evaluate(model, run.eval_criterion, run.loaders["valid"], run.acc, run.num_classes,
                                               normalize=run.prep.normalize_batch)
        state["mixes"].append({"alpha": alpha, "valid_loss": valid_loss, "valid_acc": valid_acc})
        if improved(run, state, valid_loss, valid_acc):
            state.update(best_valid_loss=valid_loss, best_valid_acc=valid_acc, best_alpha=alpha, best_epoch=None)
            state["best_model"] = weights_of(model)
    model.load_state_dict(tuned)
    if run.args.is_main:
        log.info("probe/fine-tuned weight mixes on the valid split: %s", ", ".join(
            f"alpha {m['alpha']:g} {m['valid_acc']:.4f}/{m['valid_loss']:.4f}" for m in state["mixes"]))


def _interrupted_reason(run: Run, epoch: int) -> str:
    kept = f"epoch {epoch - 1} is the last checkpoint in {run.args.checkpoint_dir}" if epoch > 1 else "no epoch had finished"
    return f"stopped by SIGTERM during epoch {epoch}; {kept}: a restart of this job redoes epoch {epoch}"


def fit(run: Run, state: dict, stop) -> None:
    try:
        for epoch in range(state["epoch"] + 1, run.args.epochs + 1):
            if run_epoch(run, state, epoch, stop):
                break
    finally:
        for hook in run.hooks:
            hook.close()


# --------------------------------------------------------------------------------------------------
# artifacts


def recipe_record(run: Run, state: dict) -> dict:
    """What the recipe did and kept, for metrics.json and model.json; under LP-FT the choice is also logged in words."""
    if not run.lp_ft:
        return {"name": "single-stage", "train_layers": layers_of(run.args), "kept": "trained"}
    kept = _kept_under_lp_ft(run, state)
    if run.args.is_main:
        log.info("kept the %s model: %s", kept[1], kept[2])
    return {"name": "lp-ft", "kept": kept[0], "reason": kept[2], "probe": run.probe, "mix_alpha": state.get("best_alpha"),
            "mixes": state.get("mixes", []), "head_lr": run.args.lr, "backbone_lr": run.args.lr * run.args.backbone_lr_ratio,
            "batchnorm_frozen": bn_frozen(run.args)}


def _kept_under_lp_ft(run: Run, state: dict) -> tuple[str, str, str]:
    """(kept, the model in words, why): the probe, a fine-tuned epoch, or a mix of the probe and the last epoch."""
    probe_scores = f"{run.probe['valid_acc']:.4f}/{run.probe['valid_loss']:.4f}"
    kept_scores = f"valid_acc/valid_loss {state['best_valid_acc']:.4f}/{state['best_valid_loss']:.4f}"
    if state.get("best_alpha") is not None:
        alpha = state["best_alpha"]
        return ("mixed", f"probe/fine-tuned mix (alpha {alpha:g})",
                f"{1 - alpha:g} x the probe's weights + {alpha:g} x the last fine-tuned epoch's beat the probe and every "
                f"fine-tuned epoch on the valid split: {kept_scores} (probe {probe_scores})")
    if state["best_epoch"] > 0:
        return ("fine-tuned", "fine-tuned", f"fine-tuning epoch {state['best_epoch']} beat the linear probe on the valid "
                f"split: {kept_scores} (probe {probe_scores})")
    tried = [f"epoch {h['epoch']} {h['valid_acc']:.4f}/{h['valid_loss']:.4f}" for h in state["history"]]
    tried += [f"mix {m['alpha']:g} {m['valid_acc']:.4f}/{m['valid_loss']:.4f}" for m in state.get("mixes", [])]
    return ("probe", "linear-probe", f"no fine-tuned epoch or mix beat the linear probe on both valid_acc and valid_loss "
            f"(probe {probe_scores}; {', '.join(tried) or 'none ran'})")


def finish(run: Run, state: dict) -> dict:
    """Best weights back in place, the test split, model.pth + model.json, metrics.json and the per-class reports."""
    args = run.args
    if state["best_model"] is not None:
        models.unwrap(run.model).load_state_dict(state["best_model"])
    if run.use_cache:  # the trained head goes back into the whole model for the artifacts
        features.head_of(run.full_model).load_state_dict(models.unwrap(run.model).state_dict())
    summary = {
        "best_epoch": state["best_epoch"], "best_valid_loss": state["best_valid_loss"],
        "epochs_run": len(state["history"]), "history": state["history"], "classes": run.splits.class_names,
        "hyperparameters": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool)) or v is None},
        "images": {k: len(v) for k, v in run.datasets.items()}, "accelerator": run.acc.describe(),
        "precision": run.acc.as_dict(), "world_size": run.dist.world_size, "recipe": recipe_record(run, state),
    }
    summary["data_warnings"] = run.splits.warnings  # classes valid/test lack (data.Splits.missing_classes)
    if args.is_main and math.isfinite(state["best_valid_loss"]):
        # The kept model's scores last: SageMaker's tuner reads a metric's last value, not the last epoch's.
        print("kept model: " + metrics.format_line(valid_loss=state["best_valid_loss"],
                                                   valid_acc=state["best_valid_acc"]), flush=True)
    confusion = None
    if "test" in run.loaders:
        test_loss, test_acc, lost, confusion = evaluate(models.unwrap(run.model), run.eval_criterion, run.loaders["test"],
                                                        run.acc, run.num_classes, with_confusion=True,
                                                        normalize=run.prep.normalize_batch)
        note_unreadable(run, "test", lost)
        summary.update(test_loss=test_loss, test_acc=test_acc)
        if args.is_main:
            probe_test = {"probe_test_acc": run.probe["test_acc"]} if run.probe and "test_acc" in run.probe else {}
            print(metrics.format_line(test_loss=test_loss, test_acc=test_acc, **probe_test), flush=True)
    summary["unreadable_images"] = {k: len(v) for k, v in run.unreadable.items()}
    summary["skipped_images"] = sum(summary["unreadable_images"].values())
    summary["seconds"] = round(time.perf_counter() - run.started, 1)
    if args.is_main:
        trained = {k: summary[k] for k in ("best_epoch", "best_valid_loss", "recipe") if k in summary}
        models.save_artifacts(args.model_dir, run.full_model, args.model, run.splits.class_names, run.prep,
                              extra={"trained": trained, "precision": summary["precision"]})
        write_reports(args.output_data_dir, run.splits.class_names, confusion, summary)
        log.info("model written to %s", args.model_dir)
    distributed.barrier()
    return summary


# --------------------------------------------------------------------------------------------------
# main


def main(args: argparse.Namespace, local_rank: int = 0, hooks_factory=None) -> dict:
    """Train one model as ``args`` say.

    ``args``: the namespace of :func:`parse_args` (paths left unset default to SageMaker's ``SM_*``);
    ``local_rank``: this process's GPU on its host (one process per GPU); ``hooks_factory``: makes the
    Debugger/profiler hooks, ``(model, criteria, args) -> [hooks]``, or None for none.
    Returns the summary also written to metrics.json; raises a DogbreedError the user can act on."""
    smenv = SageMakerEnv.from_environ()
    resolve_paths(args, smenv)
    use_cuda = accel.cuda_for_training(smenv.num_gpus)  # GPUs expected and CUDA broken: a GpuError, no CPU run
    dist_info = distributed.plan(smenv.hosts, smenv.current_host, smenv.num_gpus if use_cuda else 0, local_rank)
    args.is_main = dist_info.is_main
    distributed.init(dist_info, use_cuda)
    try:
        with errors.naming_a_batch_that_fits(args.batch_size):  # CUDA out of memory: a GpuError naming a batch that fits
            return _train(Run(args, smenv, dist_info, use_cuda), hooks_factory)
    finally:
        distributed.shutdown()


def _train(run: Run, hooks_factory) -> dict:
    args = run.args
    procs_per_host = max(1, run.smenv.num_gpus) if run.use_cuda else 1
    if not run.use_cuda:
        accel.set_threads(int(os.environ.get(envnames.DOGBREED_THREADS) or max(1, run.smenv.num_cpus // procs_per_host)))
    run.workers = args.num_workers if args.num_workers is not None else default_workers(run.smenv, procs_per_host)
    seed_everything(args.seed)
    # Installed before the set-up: a SIGTERM during the precision probe or the linear probe's feature pass is a
    # clean stop (exit 143, a reason in the failure file) once that pass is over, not a death by the signal.
    stop = checkpoint.TerminationFlag().install()
    try:
        load_data(run)
        choose_model_and_precision(run)
        fit_probe(run)
        if distributed.broadcast_flag(stop.requested, run.acc.device):  # every rank, or one waits for the others
            raise Interrupted("stopped by SIGTERM before the first epoch (during the set-up or the linear probe); no "
                              "epoch had finished: a restart of this job starts again")
        make_loaders(run)
        make_training_parts(run, hooks_factory)
        state = initial_state(run)
        resume(run, state)
        fit(run, state, stop)
        ensemble_weights(run, state, stop)
        return finish(run, state)
    finally:
        stop.uninstall()


# --------------------------------------------------------------------------------------------------
# process entry


def reason_of(exc: BaseException) -> str:
    """The failure file's line: our own errors' message, a hint for memory, else the class and message."""
    if isinstance(exc, DogbreedError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory: lower --batch-size or --num-workers"
    return f"{exc.__class__.__name__}: {exc}"


def write_failure(reason: str) -> Path | None:
    path = SageMakerEnv.from_environ().failure_file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(reason.rstrip() + "\n")
        return path
    except OSError:
        return None


def _worker(local_rank: int, argv: list[str]) -> None:
    """One process per GPU (mp.spawn): its failure reason reaches the parent as its exit code and the failure file."""
    configure_logging(force=True)
    try:
        main(parse_args(argv), local_rank=local_rank, hooks_factory=hooks_from_environment)
    except DogbreedError as exc:
        if local_rank == 0:
            write_failure(str(exc))
        log.error("rank %d: %s", local_rank, exc)
        sys.exit(143 if isinstance(exc, Interrupted) else 1)


def launch(argv: list[str]) -> None:
    """Parse, then train in this process, or one process per GPU where a host has several."""
    args = parse_args(argv)
    smenv = SageMakerEnv.from_environ()
    if torch.cuda.is_available() and smenv.num_gpus > 1 and envnames.RANK not in os.environ:
        codes = distributed.spawn_forwarding_sigterm(_worker, (list(argv),), smenv.num_gpus)
        failed = [code for code in codes if code]
        if failed:
            reason = _failure_text() or f"a training process exited with code {failed[0]}"
            raise (Interrupted if 143 in failed else TrainingError)(reason)
        return
    main(args, hooks_factory=hooks_from_environment)


def _failure_text() -> str:
    path = SageMakerEnv.from_environ().failure_file
    return path.read_text().strip() if path.is_file() else ""


def run(argv: list[str] | None = None) -> tuple[int, str]:
    """Train; returns (exit code, reason). A failure's reason is written to the failure file."""
    configure_logging(force=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        launch(argv)
        return 0, ""
    except BaseException as exc:  # the edge: every failure becomes a readable reason and an exit code
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            return 0, ""
        if isinstance(exc, KeyboardInterrupt):
            reason = "interrupted"
        else:
            reason = reason_of(exc)
        if not isinstance(exc, (DogbreedError, KeyboardInterrupt)):
            log.exception("training failed")
        path = write_failure(reason)
        log.error("training failed: %s%s", reason, f" (written to {path})" if path else "")
        return (143 if isinstance(exc, Interrupted) else 1), reason


def cli() -> None:
    code, _ = run()
    sys.exit(code)


if __name__ == "__main__":
    cli()
