"""Pillow images as the model sees them, before any tensor: one definition for training (presets) and for the
serving workers, which import no torch."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

# Modes of more than 8 bits a channel. Pillow's convert("RGB") clips them at 255 (a 16-bit photo comes out nearly
# all white): they are scaled to 8 bits first, as the same photo saved with 8 bits would hold.
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_DEEP_MODES = (*_SIXTEEN_BIT, "I", "F")


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grayscale image as 8-bit ``L``. 16-bit modes: divided by 257 (65535 -> 255),
    however dark the image. ``I`` and ``F`` say nothing of their range: values past 255 are taken as 16-bit, floats
    within [0, 1] as fractions, the rest as 0..255."""
    # float32, in place: a 40-megapixel image is 160 MB (float64 and a copy for each step came to a gigabyte).
    values = np.array(image, dtype=np.float32)
    top = float(values.max(initial=0.0)) if values.size else 0.0
    if image.mode in _SIXTEEN_BIT or top > 255.0:
        values /= 257.0
    elif image.mode == "F" and top <= 1.0:
        values *= 255.0
    np.clip(np.rint(values, out=values), 0, 255, out=values)
    return Image.fromarray(values.astype(np.uint8))


def apply_draft(image: Image.Image, draft_size: int | None) -> Image.Image:
    """For JPEGs, let libjpeg decode at a reduced scale whose shorter side is still at least ``draft_size``
    (``image.size`` then says the decoded size); a no-op for other formats and on a second call."""
    if draft_size and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    return image


def to_rgb(image: Image.Image, draft_size: int | None = None) -> Image.Image:
    """Any Pillow image (grayscale, RGBA, palette, CMYK, EXIF-rotated) as upright RGB.

    ``draft_size``: the shorter side the model resizes from. JPEGs decode at a reduced scale that still covers it
    (libjpeg's draft mode), and any image still over twice it is reduced by a whole factor that keeps it (a box
    filter, as the draft's): a 40-megapixel PNG held for its crop then costs what a JPEG does, not 120 MB. Returns
    an RGB image (transparency flattened onto white); ``image`` itself may be changed by the JPEG draft mode.
    """
    image = ImageOps.exif_transpose(apply_draft(image, draft_size))
    if image.mode in _DEEP_MODES:
        image = to_8bit(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")  # no copy of what is RGBA already
        rgb = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
        del rgba
        image = rgb
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return _reduced(image, draft_size)


def _reduced(image: Image.Image, draft_size: int | None) -> Image.Image:
    factor = min(image.size) // draft_size if draft_size else 1
    return image.reduce(factor) if factor >= 2 else image
