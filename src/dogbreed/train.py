"""The training program: one program for tuning and for final training.

Follows torchvision's reference trainer: ``get_args_parser()``, ``main(args)``, ``train_one_epoch``,
``evaluate``. Hyperparameters are CLI flags (also the SageMaker hyperparameter names); paths default
from ``SM_*`` variables; metrics are printed as ``name=value`` lines (see :mod:`dogbreed.metrics`).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import accel, checkpoint, data, distributed, metrics, models
from . import env as envnames
from .env import SageMakerEnv

log = logging.getLogger("dogbreed.train")


class TrainingError(RuntimeError):
    """A reason to stop that the user can act on; its message goes to the failure file."""


class Interrupted(TrainingError):
    pass


def str2bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


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


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so a bad hyperparameter reaches the failure file."""

    def error(self, message):
        raise TrainingError(f"bad hyperparameter: {message}")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = _Parser(description="Train a dog breed classifier (SageMaker training program)", add_help=add_help)
    a = parser.add_argument
    a("--model", default="resnet50", help="torchvision ResNet or timm model name")
    a("--pretrained-weights", default="imagenet",
      help="'imagenet' (download; or the file in a 'pretrained' channel), 'none', or a state_dict file")
    a("--train-layers", default="all", choices=models.TRAIN_LAYERS, help="head only, last stage + head, or all")
    a("--epochs", type=_positive(int), default=10)
    a("--batch-size", type=_positive(int), default=32)
    a("--lr", type=_positive(float), default=1e-3, help="peak learning rate")
    a("--weight-decay", type=_non_negative(float), default=1e-4)
    a("--optimizer", default="adamw", choices=("adamw", "sgd"))
    a("--momentum", type=_non_negative(float), default=0.9, help="SGD momentum")
    a("--label-smoothing", type=_smoothing, default=0.1)
    a("--warmup-epochs", type=_non_negative(float), default=1.0)
    a("--data-fraction", type=_fraction, default=1.0, help="stratified, seeded subset of every split")
    a("--seed", type=int, default=42)
    a("--patience", type=_non_negative(int), default=3, help="early stopping on valid_loss; 0 disables")
    a("--num-workers", type=_non_negative(int), default=None, help="data-loader workers (default from SM_NUM_CPUS)")
    a("--precision", default=os.environ.get(envnames.DOGBREED_PRECISION, "auto"), choices=accel.PRECISIONS)
    a("--input-size", type=_positive(int), default=None, help="crop size (default: the model's)")
    a("--augment", type=str2bool, default=True, help="random resized crop + flip for training")
    a("--max-steps-per-epoch", type=_non_negative(int), default=0, help="cap steps per epoch (0: all)")
    a("--data-dir", default=None, help="a folder holding train/ valid/ test/ (default: the SageMaker channels)")
    a("--model-dir", default=None, help="default SM_MODEL_DIR")
    a("--output-data-dir", default=None, help="default SM_OUTPUT_DATA_DIR")
    a("--checkpoint-dir", default=None, help="default /opt/ml/checkpoints")
    a("--resume", type=str2bool, default=True, help="resume from the newest checkpoint")
    a("--progress", default="auto", choices=("auto", "bar", "lines", "none"))
    a("--profile", type=str2bool, default=True, help="system use, step split and a torch.profiler trace in SM_OUTPUT_DATA_DIR/profile")
    a("--debug-out", default=None, help="local runs: write an smdebug trial here (SageMaker: debughookconfig.json)")
    a("--debug-interval", type=_positive(int), default=10, help="smdebug save interval in steps")
    a("--debug-collections", default="losses,weights,gradients,biases")
    a("--feature-cache", default=None, help="head-only training without augmentation: cache frozen features here")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = get_args_parser().parse_args(argv)
    validate(args)
    return args


def validate(args: argparse.Namespace) -> None:
    """Checks that need no data: they fail at once, before anything is read."""
    try:
        models.check_arch(args.model)
    except models.ModelError as exc:
        raise TrainingError(str(exc)) from exc
    weights = str(args.pretrained_weights)
    if weights.lower() not in ("imagenet", "none", "") and not Path(weights).is_file():
        raise TrainingError(f"--pretrained-weights {weights}: no such file")
    if args.precision == "fp16" and not torch.cuda.is_available():
        raise TrainingError("--precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")


# --------------------------------------------------------------------------------------------------
# progress


class Progress:
    """A tqdm bar in an interactive terminal, a few plain lines otherwise."""

    def __init__(self, mode: str, total: int, epoch: int, enabled: bool):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode if enabled else "none"
        self.total, self.epoch, self.bar = total, epoch, None
        self.every = max(1, total // 5)
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"epoch {epoch}", leave=False, file=sys.stderr)

    def update(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}")
        elif self.mode == "lines" and (step % self.every == 0 or step == self.total):
            print(f"[progress] e{self.epoch} {step}/{self.total} loss {loss:.4f}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------------------------------
# one epoch


def train_one_epoch(model, criterion, optimizer, scheduler, scaler, loader, acc, epoch, args, stop, hooks=()):
    """Returns (mean loss, images seen, images skipped, seconds)."""
    model.train()
    models.frozen_modules_eval(models.unwrap(model))
    total_loss, seen, skipped = 0.0, 0, 0
    steps = len(loader) if not args.max_steps_per_epoch else min(len(loader), args.max_steps_per_epoch)
    progress = Progress(args.progress, steps, epoch, enabled=args.is_main)
    fail_after = int(os.environ.get(envnames.DOGBREED_FAIL_AFTER_STEPS, "0") or 0)
    start = time.perf_counter()
    step = 0
    for images, labels, n_skipped in loader:
        skipped += n_skipped
        if labels.numel() == 0:
            continue
        for hook in hooks:
            hook.begin_step()
        images = acc.prepare_batch(images)
        labels = labels.to(acc.device, non_blocking=True)
        with acc.autocast():
            output = model(images)
            loss = criterion(output, labels)
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became {loss.item()} at epoch {epoch} step {step}: lower --lr")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        for hook in hooks:
            hook.end_step(loss.item())
        step += 1
        batch = labels.size(0)
        seen += batch
        total_loss += loss.item() * batch
        progress.update(step, loss.item())
        if fail_after and args.global_step_base + step >= fail_after:
            os.kill(os.getpid(), 9)  # tests: a hard crash at a chosen step
        if distributed.broadcast_flag(stop.requested, acc.device):
            stop.requested = True
            break
        if step >= steps:
            break
    progress.close()
    elapsed = time.perf_counter() - start
    sums = distributed.all_reduce_sum([total_loss, seen, skipped], acc.device)
    mean_loss = sums[0] / max(1, sums[1])
    return mean_loss, int(sums[1]), int(sums[2]), elapsed


@torch.inference_mode()
def evaluate(model, criterion, loader, acc, num_classes: int, with_confusion: bool = False):
    """Returns (loss, accuracy, skipped, confusion matrix or None) over the whole split (all ranks)."""
    model.eval()
    total_loss, correct, seen, skipped = 0.0, 0, 0, 0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64) if with_confusion else None
    for images, labels, n_skipped in loader:
        skipped += n_skipped
        if labels.numel() == 0:
            continue
        images = acc.prepare_batch(images)
        labels = labels.to(acc.device, non_blocking=True)
        with acc.autocast():
            output = model(images)
        output = output.float()
        loss = criterion(output, labels)
        predicted = output.argmax(dim=1)
        total_loss += loss.item() * labels.size(0)
        correct += (predicted == labels).sum().item()
        seen += labels.size(0)
        if confusion is not None:
            index = labels.cpu() * num_classes + predicted.cpu()
            confusion += torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)
    sums = distributed.all_reduce_sum([total_loss, correct, seen, skipped], acc.device)
    if confusion is not None and torch.distributed.is_initialized():
        flat = confusion.to(torch.float64).to(acc.device)
        torch.distributed.all_reduce(flat)
        confusion = flat.cpu().to(torch.int64)
    seen = max(1, sums[2])
    return sums[0] / seen, sums[1] / seen, int(sums[3]), confusion


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
    args.model_dir = Path(args.model_dir or smenv.model_dir)
    args.output_data_dir = Path(args.output_data_dir or smenv.output_data_dir)
    args.checkpoint_dir = Path(args.checkpoint_dir or smenv.checkpoint_dir)
    channels = dict(smenv.channels)
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
    trainable, total = models.set_trainable(model, args.train_layers)
    log.info("training %s of %s parameters (--train-layers %s)", f"{trainable:,}", f"{total:,}", args.train_layers)
    return model


def make_optimizer(args, model):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
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
# main


def main(args: argparse.Namespace, local_rank: int = 0, hooks_factory=None) -> dict:
    smenv = SageMakerEnv.from_environ()
    resolve_paths(args, smenv)
    use_cuda = torch.cuda.is_available() and smenv.num_gpus > 0
    dist_info = distributed.plan(smenv.hosts, smenv.current_host, smenv.num_gpus if use_cuda else 0, local_rank)
    args.is_main = dist_info.is_main
    distributed.init(dist_info, use_cuda)
    try:
        return _train(args, smenv, dist_info, use_cuda, hooks_factory)
    finally:
        distributed.shutdown()


def _train(args, smenv: SageMakerEnv, dist_info, use_cuda: bool, hooks_factory) -> dict:
    procs_per_host = max(1, smenv.num_gpus) if use_cuda else 1
    if not use_cuda:
        accel.set_threads(int(os.environ.get(envnames.DOGBREED_THREADS) or max(1, smenv.num_cpus // procs_per_host)))
    workers = args.num_workers if args.num_workers is not None else default_workers(smenv, procs_per_host)
    seed_everything(args.seed)

    splits = data.load_splits(args.channels, args.data_fraction, args.seed)
    num_classes = len(splits.class_names)
    model = build_model(args, num_classes)
    prep = models.default_preprocessing(args.model, args.input_size)
    use_cache = bool(args.feature_cache) and args.train_layers == "head" and not args.augment and not dist_info.enabled
    if args.feature_cache and not use_cache:
        log.warning("--feature-cache needs --train-layers head, --augment false and one process: ignored")
    draft = prep.resize
    datasets = {
        "train": data.ImageSamples(splits.samples["train"], prep.train_transform(args.augment), draft),
        "valid": data.ImageSamples(splits.samples["valid"], prep.eval_transform(), draft),
    }
    if "test" in splits.samples:
        datasets["test"] = data.ImageSamples(splits.samples["test"], prep.eval_transform(), draft)
    cache_key = None
    if use_cache:
        from . import features

        cache_key = features.cache_key(args.model, str(args.pretrained_weights), prep, {k: d.samples for k, d in datasets.items()})
    if cache_key and features.is_cached(Path(args.feature_cache), cache_key) and not use_cuda and args.precision == "auto":
        acc = accel.pick("fp32", use_cuda=False)  # only a Linear head runs: nothing to measure
    else:  # the probe times the work that runs: the frozen feature pass where the head trains on cached features
        acc = accel.pick(args.precision, dist_info.local_rank, use_cuda=use_cuda, training=not use_cache, model=model,
                         input_size=prep.input_size)
    acc = distributed.same_choice_everywhere(acc)
    log.info("%s rank=%d/%d workers=%d", acc.describe(), dist_info.rank, dist_info.world_size, workers)
    log.info(
        "data: %d classes; %s",
        num_classes,
        ", ".join(f"{k}={len(v)}" for k, v in datasets.items()),
    )
    train_sampler = data.ShardSampler(len(datasets["train"]), dist_info.rank, dist_info.world_size, shuffle=True, seed=args.seed)
    loaders = {
        "train": data.make_loader(datasets["train"], args.batch_size, train_sampler, workers, use_cuda, drop_last=False)
    }
    for split in ("valid", "test"):
        if split in datasets:
            sampler = data.ShardSampler(len(datasets[split]), dist_info.rank, dist_info.world_size)
            loaders[split] = data.make_loader(datasets[split], args.batch_size, sampler, workers, use_cuda)

    full_model = model
    if use_cache:
        computed = features.cached_features(Path(args.feature_cache), cache_key, model, datasets, acc, args.batch_size, workers)
        model = features.head_of(model)
        acc = replace(acc, channels_last=False)
        loaders = {}
        for split, (feats, labels, skipped_images) in computed.items():
            if skipped_images:
                log.warning("%s: %d unreadable images left out of the cached features", split, skipped_images)
            if split == "train":
                train_sampler = data.ShardSampler(len(labels), shuffle=True, seed=args.seed)
            sampler = train_sampler if split == "train" else data.ShardSampler(len(labels))
            loaders[split] = features.feature_loader(feats, labels, args.batch_size, sampler)
        log.info("training the head on cached features (%s)", ", ".join(f"{k}={len(v[1])}" for k, v in computed.items()))
    model = acc.prepare_model(model)
    if dist_info.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[acc.device.index] if use_cuda else None)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    eval_criterion = nn.CrossEntropyLoss()
    optimizer = make_optimizer(args, model)
    steps_per_epoch = len(loaders["train"]) if not args.max_steps_per_epoch else min(len(loaders["train"]), args.max_steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(args.epochs * steps_per_epoch, int(args.warmup_epochs * steps_per_epoch))
    )
    scaler = acc.grad_scaler()
    hooks = hooks_factory(models.unwrap(model), [criterion, eval_criterion], args) if hooks_factory else []

    state = {"epoch": 0, "best_valid_loss": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [], "best_model": None}
    fingerprint = {"model": args.model, "num_classes": num_classes, "train_layers": args.train_layers}
    if args.resume:
        found = checkpoint.load_latest(args.checkpoint_dir)
        if found:
            saved, path = found
            if saved.get("fingerprint") != fingerprint:
                raise TrainingError(
                    f"{path} is a checkpoint of another run ({saved.get('fingerprint')}); "
                    "use an empty --checkpoint-dir or --resume false"
                )
            models.unwrap(model).load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            for key in ("epoch", "best_valid_loss", "best_epoch", "bad_epochs", "history", "best_model"):
                state[key] = saved[key]
            log.info("resumed from %s (epoch %d done)", path.name, state["epoch"])
            print(f"resumed_from_epoch={state['epoch']}", flush=True)

    writes_checkpoints = dist_info.local_rank == 0
    stop = checkpoint.TerminationFlag().install()

    def save_checkpoint(epoch_done: int) -> None:
        if not writes_checkpoints:
            return
        checkpoint.save(
            args.checkpoint_dir,
            epoch_done,
            {
                **state,
                "epoch": epoch_done,
                "fingerprint": fingerprint,
                "model": models.unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
            },
        )

    try:
        for epoch in range(state["epoch"] + 1, args.epochs + 1):
            torch.manual_seed(args.seed + epoch)  # per-epoch seeds: a resumed run repeats the same epoch
            train_sampler.set_epoch(epoch)
            args.global_step_base = (epoch - 1) * steps_per_epoch
            for hook in hooks:
                hook.set_mode("train")
            train_loss, seen, skipped, seconds = train_one_epoch(
                model, criterion, optimizer, scheduler, scaler, loaders["train"], acc, epoch, args, stop, hooks
            )
            if stop.requested:
                save_checkpoint(epoch - 1)
                raise Interrupted(
                    f"stopped by SIGTERM during epoch {epoch}; checkpoint saved in {args.checkpoint_dir} "
                    f"(resumes after epoch {epoch - 1})"
                )
            for hook in hooks:
                hook.set_mode("eval")
            valid_loss, valid_acc, valid_skipped, _ = evaluate(model, eval_criterion, loaders["valid"], acc, num_classes)
            for hook in hooks:
                hook.record_eval(valid_loss)
            lr = optimizer.param_groups[0]["lr"]
            line = metrics.format_line(
                epoch=epoch,
                train_loss=train_loss,
                valid_loss=valid_loss,
                valid_acc=valid_acc,
                lr=lr,
                images_per_sec=seen / max(seconds, 1e-9),
            )
            if args.is_main:
                print(line, flush=True)
                if skipped or valid_skipped:
                    log.warning("epoch %d: skipped %d unreadable images (train %d, valid %d)", epoch, skipped + valid_skipped, skipped, valid_skipped)
            state["history"].append(
                {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, "valid_acc": valid_acc, "lr": lr,
                 "images_per_sec": seen / max(seconds, 1e-9), "skipped": skipped + valid_skipped}
            )
            if valid_loss < state["best_valid_loss"]:
                state.update(best_valid_loss=valid_loss, best_epoch=epoch, bad_epochs=0)
                state["best_model"] = copy.deepcopy({k: v.detach().cpu() for k, v in models.unwrap(model).state_dict().items()})
            else:
                state["bad_epochs"] += 1
            early_stop = args.patience and state["bad_epochs"] >= args.patience
            save_checkpoint(epoch)
            if early_stop:
                log.info("early stopping: valid_loss has not improved for %d epochs (best at epoch %d)", args.patience, state["best_epoch"])
                break
    finally:
        stop.uninstall()
        for hook in hooks:
            hook.close()

    if state["best_model"] is not None:
        models.unwrap(model).load_state_dict(state["best_model"])
    if use_cache:  # the trained head goes back into the whole model for the artifacts
        features.head_of(full_model).load_state_dict(models.unwrap(model).state_dict())
    summary = {
        "best_epoch": state["best_epoch"],
        "best_valid_loss": state["best_valid_loss"],
        "epochs_run": len(state["history"]),
        "history": state["history"],
        "classes": splits.class_names,
        "hyperparameters": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool)) or v is None},
        "images": {k: len(v) for k, v in datasets.items()},
        "accelerator": acc.describe(),
        "world_size": dist_info.world_size,
    }
    confusion = None
    if "test" in loaders:
        test_loss, test_acc, test_skipped, confusion = evaluate(model, eval_criterion, loaders["test"], acc, num_classes, with_confusion=True)
        summary.update(test_loss=test_loss, test_acc=test_acc, test_skipped=test_skipped)
        if args.is_main:
            print(metrics.format_line(test_loss=test_loss, test_acc=test_acc), flush=True)
    summary["skipped_images"] = sum(h["skipped"] for h in state["history"]) + summary.get("test_skipped", 0)
    if args.is_main:
        models.save_artifacts(
            args.model_dir, full_model, args.model, splits.class_names, prep,
            extra={"trained": {k: summary[k] for k in ("best_epoch", "best_valid_loss") if k in summary}},
        )
        write_reports(args.output_data_dir, splits.class_names, confusion, summary)
        log.info("model written to %s", args.model_dir)
    distributed.barrier()
    return summary


# --------------------------------------------------------------------------------------------------
# process entry


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, (TrainingError, data.DataError, models.ModelError, checkpoint.CheckpointError, ValueError)):
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
    configure_logging()
    main(parse_args(argv), local_rank=local_rank, hooks_factory=_default_hooks())


def _default_hooks():
    try:
        from .insight.hooks import hooks_from_environment
    except ImportError:
        return None
    return hooks_from_environment


def launch(argv: list[str]) -> None:
    """Parse, then train in this process, or one process per GPU where a host has several."""
    args = parse_args(argv)
    smenv = SageMakerEnv.from_environ()
    if torch.cuda.is_available() and smenv.num_gpus > 1 and envnames.RANK not in os.environ:
        import torch.multiprocessing as mp

        mp.spawn(_worker, args=(list(argv),), nprocs=smenv.num_gpus, join=True)
        return
    main(args, hooks_factory=_default_hooks())


def run(argv: list[str] | None = None) -> tuple[int, str]:
    """Train; returns (exit code, reason). A failure's reason is written to the failure file."""
    configure_logging()
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
        if not isinstance(exc, (TrainingError, data.DataError, models.ModelError, KeyboardInterrupt)):
            log.exception("training failed")
        path = write_failure(reason)
        log.error("training failed: %s%s", reason, f" (written to {path})" if path else "")
        return (143 if isinstance(exc, Interrupted) else 1), reason


def cli() -> None:
    code, _ = run()
    sys.exit(code)


if __name__ == "__main__":
    cli()
