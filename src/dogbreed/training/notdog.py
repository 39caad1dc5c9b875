"""The "not a dog" check's threshold, set from data at the end of training (issue 22 §3; :mod:`dogbreed.dogness`).

The pretrained weights' ImageNet head (left out of the breed model when it was loaded) is kept beside the
artifacts; the kept model, with that head attached as it is served, scores the valid split's photos, all dogs,
and the threshold is the quantile that flags ``DOG_RATE`` of them. Only the valid split: the training photos were
fitted, and their scores would sit higher than a new photo's, flagging more dogs than the stated rate.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from .. import data, dogness, models
from .setup import Run

log = logging.getLogger("dogbreed.train")


def imagenet_head(weights: str, model: nn.Module) -> dict | None:
    """The 1000-class head of the pretrained weights file, where there is one and it fits the model."""
    path = Path(weights)
    if weights.lower() in ("imagenet", "none", "") or not path.is_file():
        return None  # a download (torchvision/timm drop its head on building) or no weights: the energy fallback
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return dogness.imagenet_head_of(state, model) if isinstance(state, dict) else None


@torch.inference_mode()
def dog_scores(run: Run, served: nn.Module, split: str) -> torch.Tensor:
    """The served module's dog score for every readable photo of ``split``, at training's precision and device."""
    acc, normalize = run.trainer.acc, run.inputs.prep.normalize_batch
    dataset = run.inputs.datasets[split]
    loader = data.make_loader(dataset, 64, data.ShardSampler(len(dataset)), 0)
    scores = []
    for images, labels, _ in loader:
        if labels.numel() == 0:
            continue
        images = acc.prepare_batch(images)
        images = normalize(images) if normalize else images
        with acc.autocast():
            scores.append(dogness.split(served(images).float().cpu())[1])
    return torch.cat(scores) if scores else torch.zeros(0)


def _fresh_copy(run: Run, model: nn.Module) -> nn.Module:
    """The trained weights in a model of their own, fp32. Not a deepcopy: that would copy the training's hooks too
    (smdebug's, closed by now, whose forward hooks then fail on their missing writer)."""
    fresh = models.build(run.config.model, run.inputs.num_classes)
    fresh.load_state_dict(model.state_dict())
    return fresh.float()


def fit_dog_check(run: Run, full_model: nn.Module) -> tuple[dict | None, dict | None]:
    """(model.json's ``dog`` record, the ImageNet head to save); (None, None) without a valid split."""
    if "valid" not in run.inputs.datasets:
        return None, None
    head = imagenet_head(run.config.pretrained_weights, models.unwrap(full_model))
    served = dogness.attach(_fresh_copy(run, models.unwrap(full_model)), head)
    served = run.trainer.acc.prepare_model(served).eval()
    scores = dog_scores(run, served, "valid")
    if scores.numel() == 0:
        return None, None
    threshold = dogness.threshold_for(scores, dogness.DOG_RATE)
    record = {"method": dogness.IMAGENET_METHOD if head is not None else dogness.ENERGY_METHOD,
              "threshold": threshold, "dog_rate": dogness.DOG_RATE, "fitted_on": "valid",
              "valid_images": int(scores.numel()),
              "valid_flagged": round(float((scores < threshold).float().mean()), 4)}
    log.info("not-a-dog check: %s, threshold %.4g (flags %.1f%% of the %d valid photos)", record["method"],
             threshold, 100 * record["valid_flagged"], record["valid_images"])
    return record, head


def save_head(model_dir: Path, head: dict | None) -> None:
    if head is not None:
        torch.save(head, Path(model_dir) / dogness.HEAD_FILE)
