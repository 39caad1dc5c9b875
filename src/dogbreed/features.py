"""Frozen-backbone features, computed once and cached on disk (head-only training without augmentation).

When only the head is trained and augmentation is off, every epoch (and every tuning trial) would run
the same frozen backbone over the same images: compute the pooled features once, keep them in a file
keyed by everything that determines them, and train the head on those.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import logging
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import data, models
from .checkpoint import atomic_save

log = logging.getLogger(__name__)


class FeatureExtractor(nn.Module):
    """The backbone up to the pooled features the head reads."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model)
        if hasattr(self.model, "forward_head"):  # timm
            self.timm = True
        else:  # torchvision ResNet
            self.timm = False
            self.model.fc = nn.Identity()

    def forward(self, x):
        if self.timm:
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.model(x)


def head_of(model: nn.Module) -> nn.Module:
    return model.get_classifier() if hasattr(model, "get_classifier") else model.fc


def cache_key(arch: str, weights: str, prep, samples: dict) -> str:
    digest = hashlib.sha256()
    weights_path = Path(weights)
    weights_id = weights
    if weights_path.is_file():
        weights_id = f"{weights_path.resolve()}:{weights_path.stat().st_size}:{weights_path.stat().st_mtime_ns}"
    digest.update(json.dumps({"arch": arch, "weights": weights_id, "prep": prep.to_json()}, sort_keys=True).encode())
    for split in sorted(samples):
        for path, label in samples[split]:
            real = Path(path).resolve()  # the same images through another channel link are the same features
            stat = real.stat()
            digest.update(f"{split}|{real}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


@torch.inference_mode()
def compute(extractor: nn.Module, dataset, acc, batch_size: int, workers: int,
            normalize=None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Features of every readable image of ``dataset`` (``normalize``: turns a uint8 batch into the model's input)."""
    loader = data.make_loader(dataset, batch_size, data.ShardSampler(len(dataset)), workers)
    extractor = acc.prepare_model(extractor).eval()
    features, labels, skipped = [], [], 0
    for images, targets, unreadable in loader:
        skipped += len(unreadable)
        if targets.numel() == 0:
            continue
        images = acc.prepare_batch(images)
        with acc.autocast():
            out = extractor(normalize(images) if normalize else images)
        features.append(out.float().cpu())
        labels.append(targets)
    return torch.cat(features), torch.cat(labels), skipped


def cache_file(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"features-{key}.pt"


def is_cached(cache_dir: Path, key: str) -> bool:
    return cache_file(cache_dir, key).is_file()


def cached_features(cache_dir: Path, key: str, model, datasets: dict, acc, batch_size: int, workers: int,
                    normalize=None) -> dict:
    """{split: (features, labels, skipped)}, from the cache or computed now (one process at a time per key)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_file(cache_dir, key)
    with open(cache_dir / f"features-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            try:
                cached = torch.load(target, map_location="cpu", weights_only=True)
                log.info("frozen features from the cache %s", target.name)
                return {k: (v["features"], v["labels"], int(v["skipped"])) for k, v in cached.items()}
            except Exception as exc:  # a torn cache file is recomputed
                log.warning("feature cache %s unreadable (%s): recomputing", target.name, exc)
        extractor = FeatureExtractor(models.unwrap(model))
        result = {split: compute(extractor, dataset, acc, batch_size, workers, normalize) for split, dataset in datasets.items()}
        atomic_save({k: {"features": f, "labels": lab, "skipped": s} for k, (f, lab, s) in result.items()}, target)
        log.info("frozen features computed and cached in %s", target.name)
        return result


def _collate(batch):
    features = torch.stack([item[0] for item in batch])
    labels = torch.stack([item[1] for item in batch])
    return features, labels, ()


class _Features(TensorDataset):
    """Cached features indexed like the image datasets: by ``index`` or the sampler's ``(index, seed)``."""

    def __getitem__(self, item):
        return super().__getitem__(item[0] if isinstance(item, tuple) else item)


def feature_loader(features: torch.Tensor, labels: torch.Tensor, batch_size: int, sampler) -> DataLoader:
    return DataLoader(_Features(features, labels), batch_size=batch_size, sampler=sampler, collate_fn=_collate)
