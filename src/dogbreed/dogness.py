""""Is this a dog?": one score per photo from the served model's own pooled features, and its threshold.

The pretrained weights carry ImageNet's 1000-class head, trained on 1.2 M photos of which 118 classes are dog breeds
(151 Chihuahua .. 268 Mexican hairless), and the dingo (273) that ImageNet files among the wild canids; the rest
include wolves, coyotes, dholes, foxes, cats and every other look-alike. Training
keeps that head beside the breed head (``imagenet_head.pth``), and the served model's head becomes :class:`DogHead`:
breed logits plus one column, log P(dog class) - log P(any other class), from the same features. The batched engine,
the frozen graph and the remote engine then carry the score with no second pass; it costs one linear layer.

A model without that head (trained from scratch, or with weights that had none) falls back to the breed head's
energy, logsumexp of the breed logits: weaker on animals that look like dogs, and model.json says which was used.
The threshold comes from data at the end of training: the quantile of the valid split's dog scores below which at
most ``rate`` of the dog photos fall (:func:`threshold_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .models import head_name

HEAD_FILE = "imagenet_head.pth"
META_KEY = "dog"
IMAGENET_CLASSES = 1000
# ImageNet-1k's dogs: the breeds 151-268, and the dingo (273), a dog (and a breed of dogs10) though filed as wild
DOG_CLASSES = (*range(151, 269), 273)
DOG_RATE = 0.02  # the share of dog photos the threshold may flag as not dogs (issue 22 §3)
IMAGENET_METHOD = "imagenet-dog-classes"
ENERGY_METHOD = "breed-energy"


def imagenet_dog_score(imagenet_logits: torch.Tensor) -> torch.Tensor:
    """log P(one of the dog classes) - log P(any other class), under ImageNet's softmax: > 0 where a dog is likelier."""
    is_dog = torch.zeros(imagenet_logits.shape[1], dtype=torch.bool, device=imagenet_logits.device)
    is_dog[list(DOG_CLASSES)] = True
    dog = torch.logsumexp(imagenet_logits[:, is_dog], dim=1)
    rest = torch.logsumexp(imagenet_logits[:, ~is_dog], dim=1)
    return dog - rest


def energy_score(breed_logits: torch.Tensor) -> torch.Tensor:
    """The breed head's free energy (negated): high where some breed fits well (Liu et al. 2020, energy-based OOD)."""
    return torch.logsumexp(breed_logits.float(), dim=1)


class DogHead(nn.Module):
    """The breed head and the dog score from the same pooled features: ``[N, classes + 1]``, the score last."""

    def __init__(self, breed: nn.Module, imagenet: nn.Module | None):
        super().__init__()
        self.breed, self.imagenet = breed, imagenet

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.breed(features)
        score = energy_score(logits) if self.imagenet is None else imagenet_dog_score(self.imagenet(features))
        return torch.cat([logits, score.to(logits.dtype).unsqueeze(1)], dim=1)


def split(outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(breed logits, dog scores) of a :class:`DogHead` model's output."""
    return outputs[:, :-1], outputs[:, -1]


def _set(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(model.get_submodule(parent), name, module)


def attach(model: nn.Module, imagenet_state: dict | None) -> nn.Module:
    """``model`` (in place) with its classifier replaced by a :class:`DogHead`; ``imagenet_state``: the ImageNet
    head's ``weight`` and ``bias`` (None: the energy fallback)."""
    path = head_name(model)
    breed = model.get_submodule(path)
    imagenet = None
    if imagenet_state is not None:
        weight = imagenet_state["weight"]
        imagenet = nn.Linear(weight.shape[1], weight.shape[0]).to(breed.weight.device, breed.weight.dtype)
        imagenet.load_state_dict(imagenet_state)
    _set(model, path, DogHead(breed, imagenet))
    return model


def imagenet_head_of(state: dict, model: nn.Module) -> dict | None:
    """The 1000-class head's ``weight``/``bias`` in a pretrained state_dict, where it fits ``model``'s features."""
    prefix = head_name(model) + "."
    weight, bias = state.get(prefix + "weight"), state.get(prefix + "bias")
    features = model.get_submodule(head_name(model)).weight.shape[1]
    if weight is None or bias is None or tuple(weight.shape) != (IMAGENET_CLASSES, features):
        return None
    return {"weight": weight.detach().float().cpu(), "bias": bias.detach().float().cpu()}


def load_imagenet_head(model_dir: Path) -> dict | None:
    path = Path(model_dir) / HEAD_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def threshold_for(scores, rate: float = DOG_RATE) -> float:
    """The score below which ``rate`` of these dog photos fall: a photo scoring under it is called not a dog."""
    values = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if values.numel() == 0:
        raise ValueError("no dog scores to set a threshold from")
    # "lower": a photo of the set itself, so that at most ``rate`` of the set falls under it, however few photos
    return float(torch.quantile(values, rate, interpolation="lower"))


@dataclass(frozen=True)
class DogCheck:
    """How the served model tells a dog (model.json's ``dog``): its method, threshold and the rate it was set for."""

    method: str
    threshold: float | None  # None: a model saved before the check; every photo is then called a dog

    @classmethod
    def from_meta(cls, meta: dict) -> DogCheck:
        record = meta.get(META_KEY) or {}
        threshold = record.get("threshold")
        return cls(record.get("method", ENERGY_METHOD), None if threshold is None else float(threshold))

    def verdicts(self, scores) -> list[dict]:
        """One ``{"is_dog", "score", "threshold"}`` a photo."""
        return [{"is_dog": self.threshold is None or float(s) >= self.threshold, "score": round(float(s), 4),
                 "threshold": None if self.threshold is None else round(self.threshold, 4)}
                for s in scores]


def load_served(model_dir: Path) -> tuple[nn.Module, dict, object]:
    """The trained model with its :class:`DogHead` (eval mode, CPU), its model.json and preprocessing."""
    from .errors import ModelError
    from .models import load_artifacts

    model, meta, prep = load_artifacts(Path(model_dir))
    method = (meta.get(META_KEY) or {}).get("method")
    head = None if method == ENERGY_METHOD else load_imagenet_head(model_dir)
    if method == IMAGENET_METHOD and head is None:
        raise ModelError(f"{model_dir}: model.json's dog check needs {HEAD_FILE}, which is missing")
    try:
        return attach(model, head).eval(), meta, prep
    except (RuntimeError, KeyError) as exc:
        raise ModelError(f"{Path(model_dir) / HEAD_FILE} does not fit {meta['arch']}: {exc}") from exc
