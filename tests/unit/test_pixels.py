"""The decoding workers' torch-free preprocessing (:mod:`dogbreed.serving.pixels`) gives the very pixels of the
training package's eval transform (torchvision on Pillow), for every shape, mode and filter a model can ask for."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dogbreed import images, presets
from dogbreed.presets import Preprocessing
from dogbreed.serving import pixels
from tests.conftest import DOGS10, needs_shared

PREPS = [Preprocessing(224, 256), Preprocessing(64, 73), Preprocessing(224, 224, interpolation="bicubic"),
         Preprocessing(300, 256), Preprocessing(96, 110, interpolation="lanczos"), Preprocessing(32, 40, interpolation="nearest")]


def _encoded(image: Image.Image, fmt: str, exif_orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        exif = Image.Exif()
        if exif_orientation:
            exif[0x0112] = exif_orientation
        image.convert("RGB").save(buffer, fmt, quality=90, exif=exif.tobytes())
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


def _bodies() -> list[bytes]:
    """Encoded images (each opened afresh: the JPEG draft changes an image in place)."""
    noise = Image.effect_noise((640, 480), 60).convert("RGB")
    rgba = noise.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(noise.size))
    palette = noise.convert("P")
    palette.info["transparency"] = 3
    return [_encoded(noise, "PNG"), _encoded(noise.resize((301, 777)), "PNG"), _encoded(noise.resize((50, 40)), "PNG"),
            _encoded(noise.resize((257, 256)), "BMP"), _encoded(rgba, "PNG"), _encoded(palette, "PNG"),
            _encoded(noise.convert("L"), "PNG"), _encoded(noise.convert("CMYK"), "TIFF"), _encoded(noise, "JPEG"),
            _encoded(noise, "JPEG", exif_orientation=6), _encoded(noise.resize((1600, 1200)), "JPEG")]


def _open(body: bytes) -> Image.Image:
    return Image.open(io.BytesIO(body))


def _assert_same_pixels(body: bytes, prep: Preprocessing) -> None:
    ours = pixels.EvalCrop.from_meta(prep.to_json()).pixels(images.to_rgb(_open(body), prep.resize))
    theirs = prep.eval_transform(normalize=False)(presets.to_rgb(_open(body), prep.resize)).numpy()
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("prep", PREPS, ids=lambda p: f"{p.input_size}-{p.resize}-{p.interpolation}")
def test_the_workers_pixels_are_the_eval_transforms(prep):
    for body in _bodies():
        _assert_same_pixels(body, prep)


def test_to_rgb_is_the_training_packages():
    """One definition, torch-free: the workers' decoders take training's own (a copy could drift)."""
    from dogbreed.serving import decoders

    assert decoders.to_rgb is presets.to_rgb is images.to_rgb
    for body in _bodies():
        assert images.to_rgb(_open(body), 100).mode == "RGB"


@pytest.mark.shared
@needs_shared()
def test_the_workers_pixels_are_the_eval_transforms_on_real_photos():
    photos = sorted(DOGS10.glob("test/*/*.jpg"))[::7][:12]
    assert len(photos) >= 10
    for path in photos:
        for prep in (Preprocessing(224, 256), Preprocessing(64, 73)):
            _assert_same_pixels(path.read_bytes(), prep)
