"""What the epoch loop runs on, built in order, each step from the last one's result: the data, the model and the
precision it trains at, the loaders, the optimizer and its schedule. :class:`Run` holds the result, frozen."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import accel, data, distributed, features, gpu_decode, models
from ..common import steps_per_epoch
from .config import RunConfig
from .loop import Trainer, evaluate

log = logging.getLogger("dogbreed.train")


class Unreadable:
    """The images of each split found unreadable, each counted and named once (from every rank)."""

    def __init__(self, datasets: Mapping[str, data.ImageSamples], show: bool):
        self.datasets, self.show = datasets, show
        self.found: dict[str, set[int]] = {split: set() for split in datasets}

    def note(self, split: str, indices) -> int:
        """Record unreadable images of a split; returns how many are new."""
        if split not in self.found:
            return 0
        new = sorted(distributed.gather_union(indices) - self.found[split])
        self.found[split].update(new)
        if new and self.show:
            names = ", ".join(str(self.datasets[split].samples[i][0].name) for i in new[:5])
            log.warning("%s: %d unreadable image(s) skipped: %s%s", split, len(new), names, " ..." if len(new) > 5 else "")
        return len(new)

    def counts(self) -> dict[str, int]:
        return {split: len(found) for split, found in self.found.items()}


@dataclass(frozen=True)
class Inputs:
    """The data: the splits, the preprocessing, the datasets (uint8 images: batches are normalized on the device)."""

    splits: data.Splits
    prep: object
    datasets: Mapping[str, data.ImageSamples]
    unreadable: Unreadable

    @property
    def num_classes(self) -> int:
        return len(self.splits.class_names)


@dataclass(frozen=True)
class Chosen:
    """The model and how it trains: the device and precision, the recipe, whether on cached features."""

    full_model: nn.Module  # what ships
    acc: accel.Accelerator
    lp_ft: bool  # the default recipe: linear probe, then gentle fine-tuning kept only where validation prefers it
    use_cache: bool


@dataclass(frozen=True)
class Feed:
    """The loaders, and what trains on them: the whole model, or its head on cached features."""

    loaders: Mapping[str, object]
    train_sampler: data.ShardSampler
    model: nn.Module
    acc: accel.Accelerator


@dataclass(frozen=True)
class Run:
    """Everything one run's steps share, built once by :mod:`.entry`."""

    config: RunConfig
    inputs: Inputs
    chosen: Chosen
    loaders: Mapping[str, object]
    train_sampler: data.ShardSampler
    trainer: Trainer
    eval_criterion: nn.Module
    hooks: tuple = ()
    probe: dict | None = None  # the probe's record (L2, valid/test scores, seconds)
    started: float = field(default_factory=time.perf_counter)

    @property
    def model(self) -> nn.Module:
        """What trains, unwrapped from DDP: the whole model, or its head on cached features."""
        return models.unwrap(self.trainer.model)

    @property
    def lp_ft(self) -> bool:
        return self.chosen.lp_ft

    def evaluate_on(self, split: str, model: nn.Module | None = None, with_confusion: bool = False,
                    keep_logits: bool = False):
        return evaluate(model or self.model, self.eval_criterion, self.loaders[split], self.trainer.acc,
                        self.inputs.num_classes, with_confusion=with_confusion, normalize=self.inputs.prep.normalize_batch,
                        keep_logits=keep_logits, split=split)


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


def load_data(config: RunConfig) -> Inputs:
    """Splits, preprocessing and datasets."""
    splits = data.load_splits(dict(config.channels), config.data_fraction, config.seed)
    prep = models.default_preprocessing(config.model, config.input_size)
    draft = prep.resize  # JPEGs decode at the smallest scale that still covers the resize
    augment = prep.train_transform(config.augment, False, config.min_crop_scale)
    datasets = {"train": data.ImageSamples(splits.samples["train"], augment, draft)}
    for split in ("valid", "test"):
        if split in splits.samples:
            datasets[split] = data.ImageSamples(splits.samples[split], prep.eval_transform(False), draft)
    inputs = Inputs(splits, prep, datasets, Unreadable(datasets, config.is_main))
    log.info("data: %d classes; %s", inputs.num_classes, ", ".join(f"{k}={len(v)}" for k, v in datasets.items()))
    return inputs


def build_model(config: RunConfig, num_classes: int) -> nn.Module:
    weights = config.pretrained_weights
    model = models.build(config.model, num_classes, download_imagenet=weights.lower() == "imagenet")
    if weights.lower() not in ("imagenet", "none", ""):
        left_out = models.load_backbone_weights(model, Path(weights))
        log.info("loaded %s (left out %d head tensors)", weights, len(left_out))
    elif weights.lower() == "none":
        log.info("training %s from random initialisation", config.model)
    trainable, total = models.set_trainable(model, config.layers)
    log.info("training %s of %s parameters (--train-layers %s)", f"{trainable:,}", f"{total:,}", config.train_layers)
    return model


def cache_key(config: RunConfig, inputs: Inputs) -> str:
    return features.cache_key(config.model, config.pretrained_weights, inputs.prep,
                              {k: d.samples for k, d in inputs.datasets.items()})


def choose_model_and_precision(config: RunConfig, inputs: Inputs) -> Chosen:
    """The model, and the device/precision it trains at (measured on CPUs: the work that will run)."""
    model = build_model(config, inputs.num_classes)
    lp_ft = config.lp_ft and isinstance(features.head_of(model), nn.Linear)
    if config.lp_ft and not lp_ft:  # a convolutional or two-part classifier: no linear probe to fit
        log.warning("%s's classifier is not one Linear layer: no linear probe, every layer fine-tunes", config.model)
    use_cache = bool(config.feature_cache) and config.train_layers == "head" and not config.augment \
        and not config.dist.enabled
    if config.feature_cache and not use_cache and not lp_ft:  # LP-FT caches its probe's features there
        log.warning("--feature-cache needs --train-layers head, --augment false and one process: ignored")
    warm_cache = use_cache and features.is_cached(Path(config.feature_cache), cache_key(config, inputs))
    if warm_cache and not config.use_cuda and config.precision == "auto":  # only a Linear head runs: nothing to measure
        acc = replace(accel.pick("fp32", use_cuda=False), reason="cached features: only the head trains")
    else:  # the probe times the work that runs: the frozen feature pass where the head trains on cached features
        acc = accel.pick(config.precision, config.dist.local_rank, use_cuda=config.use_cuda, training=not use_cache,
                         model=model, input_size=inputs.prep.input_size)
    acc = distributed.same_choice_everywhere(acc)
    log.info("%s rank=%d/%d workers=%d (%s)", acc.describe(), config.dist.rank, config.dist.world_size, config.workers,
             acc.reason)
    return Chosen(model, acc, lp_ft, use_cache)


def decode_device(config: RunConfig, acc: accel.Accelerator) -> torch.device | None:
    """The device the batches decode on (the GPU path, :mod:`dogbreed.gpu_decode`), or None: Pillow in the workers.
    A few CPUs cannot feed a GPU (issue 21 section 7: 153 img/s from a g4dn.xlarge's 4 vCPUs, a T4 trains ~400)."""
    return acc.device if config.gpu_decode == "auto" and gpu_decode.decodes_on_gpu(acc.device) else None


def drops_last_batch(split: str, shard: int, batch_size: int) -> bool:
    """Whether training's loader drops its last batch: only where that batch would hold one image (and it is not the
    only one). Batch norm in training mode cannot normalize one value per channel (a ResNet's last stage at 32 px is
    1x1): a batch of one stops the run ("Expected more than 1 value per channel"). The image dropped is a different
    one each epoch (the order is shuffled). Evaluation keeps every image: batch norm uses its running statistics."""
    return split == "train" and shard > batch_size and shard % batch_size == 1


def _image_loader(config: RunConfig, inputs: Inputs, split: str, sampler, device: torch.device | None):
    dataset = inputs.datasets[split]
    drop_last = drops_last_batch(split, len(sampler), config.batch_size)
    if device is None:
        return data.make_loader(dataset, config.batch_size, sampler, config.workers, config.use_cuda, drop_last)
    augment = split == "train" and config.augment
    return gpu_decode.gpu_loader(dataset.samples, inputs.prep, device, augment, config.min_crop_scale,
                                 config.batch_size, sampler, config.workers, drop_last)


def make_loaders(config: RunConfig, inputs: Inputs, chosen: Chosen) -> Feed:
    """Image loaders (training shards padded so that every rank steps together), decoding on the GPU where there is
    one (:func:`decode_device`), or cached-feature loaders."""
    if chosen.use_cache:
        return _feature_loaders(config, inputs, chosen)
    dist, datasets = config.dist, inputs.datasets
    device = decode_device(config, chosen.acc)
    log.info("images decode %s", f"on {device} (nvJPEG)" if device is not None else "in the loader workers (Pillow)")
    sampler = data.ShardSampler(len(datasets["train"]), dist.rank, dist.world_size, shuffle=True, seed=config.seed, pad=True)
    loaders = {"train": _image_loader(config, inputs, "train", sampler, device)}
    for split in ("valid", "test"):
        if split in datasets:
            shard = data.ShardSampler(len(datasets[split]), dist.rank, dist.world_size)
            loaders[split] = _image_loader(config, inputs, split, shard, device)
    return Feed(loaders, sampler, chosen.full_model, chosen.acc)


def _feature_loaders(config: RunConfig, inputs: Inputs, chosen: Chosen) -> Feed:
    """Head-only training without augmentation: the frozen backbone runs once (cached); the head trains on its output."""
    computed = features.cached_features(Path(config.feature_cache), cache_key(config, inputs), chosen.full_model,
                                        inputs.datasets, chosen.acc, config.batch_size, config.workers,
                                        inputs.prep.normalize_batch)
    # The choice was measured on the feature pass; the head alone trains in fp32 wherever the features came from.
    acc = replace(chosen.acc, precision="fp32", channels_last=False,
                  reason=f"cached features: only the head trains (features: {chosen.acc.precision})")
    loaders, train_sampler = {}, None
    for split, (feats, labels, skipped_images) in computed.items():
        if skipped_images:
            log.warning("%s: %d unreadable images left out of the cached features", split, skipped_images)
        sampler = data.ShardSampler(len(labels), shuffle=split == "train", seed=config.seed)
        if split == "train":
            train_sampler = sampler
        loaders[split] = features.feature_loader(feats, labels, config.batch_size, sampler)
    log.info("training the head on cached features (%s)", ", ".join(f"{k}={len(v[1])}" for k, v in computed.items()))
    return Feed(loaders, train_sampler, features.head_of(chosen.full_model), acc)


def make_optimizer(config: RunConfig, model: nn.Module, backbone_ratio: float = 1.0):
    """Weight decay on weights only; the backbone at ``backbone_ratio`` x the head's lr. The head's groups come first:
    the ``lr=`` metric is the head's."""
    head = models.head_name(models.unwrap(model)) + "."
    found = {}
    for name, param in models.unwrap(model).named_parameters():
        if param.requires_grad:
            key = (not name.startswith(head), param.ndim <= 1 or name.endswith(".bias"))
            found.setdefault(key, []).append(param)
    groups = [{"params": found[key], "weight_decay": 0.0 if key[1] else config.weight_decay,
               "lr": config.lr * (backbone_ratio if key[0] else 1.0)} for key in sorted(found)]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr)


def divergence_advice(config: RunConfig) -> str:
    """The flags that could have made the weights overflow, with their values as typed: the learning rate, the weight
    decay (each step scales a weight by lr x weight decay) and, under SGD, the momentum (it compounds the steps)."""
    names = ["lr", "weight_decay"] + (["momentum"] if config.optimizer == "sgd" else [])
    flags = [f"--{name.replace('_', '-')} {config.as_typed.get(name, getattr(config, name))}" for name in names]
    return f"lower {', '.join(flags[:-1])} or {flags[-1]}"


def make_trainer(config: RunConfig, inputs: Inputs, feed: Feed, lp_ft: bool) -> Trainer:
    """Device placement, the DDP wrapper, the loss, optimizer, warm-up + cosine schedule and grad scaler."""
    model = feed.acc.prepare_model(feed.model)
    if config.dist.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[feed.acc.device.index] if config.use_cuda else None)
    optimizer = make_optimizer(config, model, config.backbone_lr_ratio if lp_ft else 1.0)
    steps = steps_per_epoch(len(feed.loaders["train"]), config.max_steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.epochs * steps, int(config.warmup_epochs * steps)))
    return Trainer(model, nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), optimizer, scheduler,
                   feed.acc.grad_scaler(), feed.acc, inputs.prep.normalize_batch, inputs.prep.input_size,
                   divergence_advice(config))
