"""Pillow images as the model sees them, before any tensor: one definition for training (presets) and for the
serving workers, which import no torch."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

# Modes of more than 8 bits a channel. Pillow's convert("RGB") clips them at 255 (a 16-bit photo comes out nearly
# all white): they are scaled to 8 bits first, as the same photo saved with 8 bits would hold.
_DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grayscale image as 8-bit ``L``: 16-bit ranges divided by 257 (65535 ->
    255), floats in [0, 1] times 255, values already within 0..255 kept."""
    values = np.asarray(image, dtype=np.float64)
    top = float(values.max(initial=0.0)) if values.size else 0.0
    if image.mode == "F" and top <= 1.0:
        values = values * 255.0
    elif top > 255.0:
        values = values / 257.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def to_rgb(image: Image.Image, draft_size: int | None = None) -> Image.Image:
    """Any Pillow image (grayscale, RGBA, palette, CMYK, EXIF-rotated) as upright RGB.

    ``draft_size``: for JPEGs, let libjpeg decode at a reduced scale whose shorter side is still at
    least this many pixels (a no-op for other formats). Returns an RGB image (transparency flattened
    onto white); ``image`` itself may be changed by the JPEG draft mode.
    """
    if draft_size and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    image = ImageOps.exif_transpose(image)
    if image.mode in _DEEP_MODES:
        image = to_8bit(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image
