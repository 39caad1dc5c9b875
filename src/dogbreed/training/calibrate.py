"""The kept model's temperature, fitted on the valid split at the end of training (issue "Know the model" §2).

A network trained with cross-entropy is over-confident: its top probability says 0.95 where it is right 85 % of
the time. One temperature T, fitted on the valid split (softmax(logits / T), a one-dimensional convex fit), mends
that without changing any answer's order. It goes into model.json, which serving reads; metrics.json records the
test split's expected calibration error and negative log-likelihood before and after.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import data, distributed
from ..calibration import calibrate, fit_temperature, unfit_reason
from .loop import Evaluation
from .setup import Run


@dataclass(frozen=True)
class SplitLogits:
    """A split's logits (before any temperature), labels and photo paths, from every rank; ``paths`` is None where
    the loader reads cached features (no photo behind a row)."""

    logits: np.ndarray
    labels: np.ndarray
    paths: list[str] | None


def shard_paths(loader, unreadable) -> list[str] | None:
    """This rank's photos in the order its evaluation read them: its shard, in order, less the unreadable ones."""
    loader = getattr(loader, "loader", loader)  # the GPU path wraps the loader of the files' bytes
    if not isinstance(loader.dataset, data.Samples):
        return None
    lost = set(unreadable)
    return [str(loader.dataset.samples[index][0]) for index, _ in loader.sampler if index not in lost]


def gathered(evaluation: Evaluation, paths: list[str] | None) -> SplitLogits:
    """Every rank's rows of one evaluation (each saw its shard: the fit and the report need them all)."""
    logits, labels = evaluation.logits, evaluation.labels
    if paths is not None and len(paths) != len(labels):
        paths = None
    if distributed.is_enabled():  # a few KB a hundred images
        shards = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shards, (logits, labels, paths))
        logits, labels = torch.cat([s[0] for s in shards]), torch.cat([s[1] for s in shards])
        paths = None if any(s[2] is None for s in shards) else [p for s in shards for p in s[2]]
    return SplitLogits(logits.numpy(), labels.numpy(), paths)


def scored(run: Run, split: str, evaluation: Evaluation | None = None) -> SplitLogits:
    """The kept model's logits over one split: from ``evaluation`` where the split was already scored with
    ``keep_logits``, else from a pass now (the same ``evaluate`` that scores it)."""
    evaluation = evaluation or run.evaluate_on(split, keep_logits=True)
    return gathered(evaluation, shard_paths(run.loaders[split], evaluation.unreadable))


def split_logits(run: Run, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The kept model's logits and the labels over one split, from every rank."""
    found = scored(run, split)
    return found.logits, found.labels


def test_pass(run: Run) -> tuple[Evaluation, SplitLogits] | None:
    """The one pass over the test split: its scores and confusion, and the logits that the calibration's figures and
    the report reuse. None without a test split."""
    if "test" not in run.loaders:
        return None
    evaluation = run.evaluate_on("test", with_confusion=True, keep_logits=True)
    return evaluation, scored(run, "test", evaluation)


def calibration_of(run: Run, test: SplitLogits | None) -> dict | None:
    """{"temperature", and the ``test`` split's ECE and NLL before and after}; None without a valid split."""
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
    if test is not None and len(test.labels):  # the test pass's own logits (training's one pass over the split)
        figures = calibrate(test.logits, test.labels, temperature, source).as_dict()
        record.update({f"test_{key}": value for key, value in figures.items()
                       if key not in ("temperature", "temperature_source")})
    return record
