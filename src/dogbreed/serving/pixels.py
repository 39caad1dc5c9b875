"""The evaluation preprocessing up to uint8 pixels, without torch: what a decoding worker does.

The same steps as the training package's eval transform (:meth:`dogbreed.presets.Preprocessing.eval_transform`),
which runs torchvision on Pillow images: upright RGB (JPEGs decoded at the reduced draft scale), resize of the
shorter side with Pillow's own filter (torchvision calls ``Image.resize`` for Pillow images), centre crop
(padded with zeros where the image is smaller, as torchvision pads), HWC to CHW. The engine converts to float
and normalizes in torch (:meth:`~dogbreed.presets.Preprocessing.normalize_batch`). A test holds the answers
to the in-process model's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# torchvision's InterpolationMode values -> Pillow's filters (torchvision.transforms.functional.pil_modes_mapping)
PIL_FILTERS = {"nearest": Image.NEAREST, "nearest-exact": Image.NEAREST, "bilinear": Image.BILINEAR,
               "bicubic": Image.BICUBIC, "box": Image.BOX, "hamming": Image.HAMMING, "lanczos": Image.LANCZOS}
META_FILE = "model.json"


def read_meta(model_dir: Path) -> dict:
    """model.json, read without the training package's model code (the engine checks it in full)."""
    return json.loads((Path(model_dir) / META_FILE).read_text())


@dataclass(frozen=True)
class EvalCrop:
    """model.json's ``resize``, ``input_size`` and ``interpolation``: resize the shorter side, crop the centre."""

    resize: int
    input_size: int
    interpolation: str = "bilinear"

    @classmethod
    def from_meta(cls, meta: dict) -> EvalCrop:
        return cls(int(meta["resize"]), int(meta["input_size"]), str(meta.get("interpolation", "bilinear")))

    def resized(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize, int(self.resize * long / short)
        size = (new_short, new_long) if width <= height else (new_long, new_short)
        return image if size == image.size else image.resize(size, PIL_FILTERS[self.interpolation])

    def pixels(self, image: Image.Image) -> np.ndarray:
        """An RGB image -> the centre crop as uint8 CHW."""
        array = np.asarray(self.resized(image), dtype=np.uint8)
        height, width, crop = array.shape[0], array.shape[1], self.input_size
        if crop > width or crop > height:  # torchvision pads left/top with the floor, right/bottom with the ceiling
            pad_x, pad_y = max(0, crop - width), max(0, crop - height)
            array = np.pad(array, ((pad_y // 2, (pad_y + 1) // 2), (pad_x // 2, (pad_x + 1) // 2), (0, 0)))
            height, width = array.shape[:2]
        top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
        return np.ascontiguousarray(array[top : top + crop, left : left + crop].transpose(2, 0, 1))

    def batch(self, images) -> np.ndarray:
        """RGB images -> uint8 NCHW."""
        return np.stack([self.pixels(image) for image in images])
