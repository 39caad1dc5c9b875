"""Pillow images as the model sees them, before any tensor: one definition for training (presets) and for the
serving workers, which import no torch."""

from __future__ import annotations

from PIL import Image, ImageOps


def to_rgb(image: Image.Image, draft_size: int | None = None) -> Image.Image:
    """Any Pillow image (grayscale, RGBA, palette, CMYK, EXIF-rotated) as upright RGB.

    ``draft_size``: for JPEGs, let libjpeg decode at a reduced scale whose shorter side is still at
    least this many pixels (a no-op for other formats). Returns an RGB image (transparency flattened
    onto white); ``image`` itself may be changed by the JPEG draft mode.
    """
    if draft_size and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image
