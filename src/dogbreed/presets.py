"""Preprocessing: the single definition, used by training, evaluation and serving.

Follows torchvision's reference presets (ClassificationPresetTrain / ClassificationPresetEval).
Images are decoded with Pillow; JPEGs use draft mode so a big photo is decoded at a reduced
scale (never below what the resize needs), which is most of the decoding cost saved.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from .images import to_rgb  # re-exported: the training side has always taken it from here

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects of its input; saved in model.json and read back by serving."""

    input_size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_json(self) -> dict:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_json(cls, data: dict) -> Preprocessing:
        return cls(
            input_size=int(data["input_size"]),
            resize=int(data["resize"]),
            mean=tuple(float(x) for x in data["mean"]),
            std=tuple(float(x) for x in data["std"]),
            interpolation=str(data.get("interpolation", "bilinear")),
        )

    @property
    def interpolation_mode(self) -> InterpolationMode:
        return InterpolationMode(self.interpolation)

    def train_transform(self, augment: bool = True, normalize: bool = True, min_scale: float = 0.08):
        """Pillow image -> CHW tensor: random resized crop (``min_scale``: the smallest share of the image's area
        a crop may cover) + flip when ``augment``, else the eval crop.

        ``normalize=False`` stops at uint8: the loader then ships a quarter of the bytes and the batch is
        normalized on its device (:meth:`normalize_batch`), which keeps a GPU fed from few CPUs."""
        if not augment:
            return self.eval_transform(normalize)
        steps = [
            T.RandomResizedCrop(self.input_size, scale=(min_scale, 1.0), interpolation=self.interpolation_mode, antialias=True),
            T.RandomHorizontalFlip(),
            T.PILToTensor(),
        ]
        return T.Compose(steps + self._normalize_steps(normalize))

    def eval_transform(self, normalize: bool = True):
        """Pillow image -> CHW tensor: resize, center crop; float and normalized unless ``normalize=False``."""
        steps = [T.Resize(self.resize, interpolation=self.interpolation_mode, antialias=True), T.CenterCrop(self.input_size),
                 T.PILToTensor()]
        return T.Compose(steps + self._normalize_steps(normalize))

    def _normalize_steps(self, normalize: bool) -> list:
        return [T.ConvertImageDtype(torch.float), T.Normalize(self.mean, self.std)] if normalize else []

    def normalize_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """A uint8 NCHW batch -> float, scaled and normalized where it lies (its device, its memory format).
        A float batch (already normalized, or cached features) passes unchanged."""
        if batch.dtype != torch.uint8:
            return batch
        mean, inv_std = _scale(self.mean, self.std, batch.device)
        return batch.float().sub_(mean).mul_(inv_std)


@functools.lru_cache(maxsize=8)
def _scale(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The 0-255 mean and 1/std on ``device``, made once: a tensor built from Python numbers at every step is a
    host-to-device copy the host waits for."""
    mean_255 = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255.0
    return mean_255, 1.0 / (torch.tensor(std, device=device).view(1, -1, 1, 1) * 255.0)


def open_rgb(path, draft_size: int | None = None) -> Image.Image:
    """Decode an image file fully (the file is closed on return) as upright RGB."""
    with Image.open(path) as image:
        rgb = to_rgb(image, draft_size)
        rgb.load()
        return rgb
