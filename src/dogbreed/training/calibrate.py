"""The kept model's temperature, fitted on the valid split at the end of training (issue "Know the model" §2).

A network trained with cross-entropy is over-confident: its top probability says 0.95 where it is right 85 % of
the time. One temperature T, fitted on the valid split (softmax(logits / T), a one-dimensional convex fit), mends
that without changing any answer's order. It goes into model.json, which serving reads; metrics.json records the
test split's expected calibration error and negative log-likelihood before and after.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import distributed
from ..calibration import calibrate, fit_temperature, unfit_reason
from .setup import Run


@torch.inference_mode()
def split_logits(run: Run, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The kept model's logits and the labels over one split, from every rank (as ``Run.evaluate_on`` reads it)."""
    model, acc, normalize = run.model, run.trainer.acc, run.inputs.prep.normalize_batch
    model.eval()
    rows, labels = [], []
    for images, batch_labels, _ in run.loaders[split]:
        if batch_labels.numel() == 0:
            continue
        images = acc.prepare_batch(images)
        images = normalize(images) if normalize else images
        with acc.autocast():
            rows.append(model(images).float().cpu())
        labels.append(batch_labels.cpu())
    logits = torch.cat(rows) if rows else torch.zeros(0, run.inputs.num_classes)
    targets = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    if distributed.is_enabled():  # each rank saw its shard: the fit needs them all (a few KB a hundred images)
        shards = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shards, (logits, targets))
        logits, targets = torch.cat([s[0] for s in shards]), torch.cat([s[1] for s in shards])
    return logits.numpy(), targets.numpy()


def calibration_of(run: Run) -> dict | None:
    """{"temperature", and the test split's ECE and NLL before and after}; None without a valid split."""
    if "valid" not in run.loaders:
        return None
    valid_logits, valid_labels = split_logits(run, "valid")
    if len(valid_labels) == 0:
        return None
    preset = (run.probe or {}).get("temperature")  # the kept probe refitted on train + valid: see recipe.py
    if preset:
        temperature, source = preset["value"], preset["source"]
    else:
        reason = unfit_reason(valid_logits, valid_labels)
        temperature = fit_temperature(valid_logits, valid_labels)
        source = f"not fitted ({reason}): 1" if reason else "fitted on the valid split"
    record = {"temperature": temperature, "temperature_source": source, "valid_images": int(len(valid_labels))}
    if "test" in run.loaders:
        test_logits, test_labels = split_logits(run, "test")
        if len(test_labels):
            figures = calibrate(test_logits, test_labels, temperature, source).as_dict()
            record.update({f"test_{key}": value for key, value in figures.items()
                           if key not in ("temperature", "temperature_source")})
    return record
