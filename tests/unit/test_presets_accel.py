import io

import pytest
import torch
from PIL import Image

from dogbreed import accel
from dogbreed.errors import ConfigError
from dogbreed.presets import Preprocessing, to_rgb


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16", "1"])
def test_any_mode_becomes_rgb(mode):
    image = Image.new("RGB", (20, 10), (200, 30, 30)).convert(mode)
    assert to_rgb(image).mode == "RGB"


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (40, 20), "blue")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    assert to_rgb(Image.open(io.BytesIO(buffer.getvalue()))).size == (20, 40)


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


def test_eval_transform_shape_and_draft_decode():
    prep = Preprocessing(64, 73)
    buffer = io.BytesIO()
    Image.new("RGB", (1000, 800), "green").save(buffer, "JPEG")
    image = Image.open(io.BytesIO(buffer.getvalue()))
    rgb = to_rgb(image, draft_size=73)
    assert min(rgb.size) >= 73 and rgb.size[0] < 1000  # decoded at a reduced scale
    assert prep.eval_transform()(rgb).shape == (3, 64, 64)


def test_precision_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(accel, "_PROBED", {})  # measured here and now, not taken from an earlier test's probe
    chosen = accel.pick("auto", use_cuda=False)
    ((key, (precision, channels_last, timings)),) = accel._PROBED.items()
    assert key == ("train", "proxy", 224)
    assert (chosen.precision, chosen.channels_last) == (precision, channels_last)
    assert set(timings) >= {"fp32", "fp32+channels_last"}
    assert ("bf16+channels_last" in timings) == accel.cpu_supports_bf16()
    label = precision + ("+channels_last" if channels_last else "")
    assert timings[label] == min(timings.values())  # the fastest measured set-up wins
    with pytest.raises(ConfigError, match="fp16"):
        accel.pick("fp16", use_cuda=False)
    fp32 = accel.pick("fp32", use_cuda=False)
    assert fp32.autocast_dtype is None
    x = torch.ones(2, 2)
    with chosen.autocast():
        y = x @ x
    assert y.dtype == (torch.bfloat16 if chosen.precision == "bf16" else torch.float32)


@pytest.mark.parametrize("fastest", ["fp32", "fp32+channels_last", "bf16+channels_last"])
def test_the_measured_timings_decide_and_are_cached_per_workload(monkeypatch, fastest):
    """The probe's timings are set here: the choice must follow them, and a second pick of the same
    workload must reuse the measurement while another workload is measured anew."""
    monkeypatch.setattr(accel, "_PROBED", {})
    monkeypatch.setattr(accel, "cpu_supports_bf16", lambda: True)
    measured = []

    def fake_measure(net, x, precision, channels_last, training, rounds):
        label = precision + ("+channels_last" if channels_last else "")
        measured.append((label, training))
        return 0.01 if label == fastest else 0.02

    monkeypatch.setattr(accel, "_measure", fake_measure)
    chosen = accel.pick("auto", use_cuda=False)
    assert chosen.precision + ("+channels_last" if chosen.channels_last else "") == fastest
    assert f"{fastest} 10.0 ms" in chosen.reason
    assert sorted(measured) == sorted((label, True) for label in ("fp32", "fp32+channels_last", "bf16+channels_last"))
    assert accel.pick("auto", use_cuda=False) == chosen and len(measured) == 3  # cached: not measured again
    accel.pick("auto", use_cuda=False, training=False)  # inference is another workload
    assert len(measured) == 6 and all(not training for _, training in measured[3:])
    assert set(accel._PROBED) == {("train", "proxy", 224), ("infer", "proxy", 224)}


def test_uint8_batches_normalized_on_the_device_equal_the_float_transform():
    import numpy as np

    prep = Preprocessing(64, 72)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    batch = prep.eval_transform(normalize=False)(image)[None].contiguous(memory_format=torch.channels_last)
    on_device = prep.normalize_batch(batch)
    assert on_device.dtype == torch.float32 and on_device.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(on_device[0], prep.eval_transform()(image), atol=1e-5)
    assert prep.normalize_batch(on_device) is on_device  # already float: untouched


def test_a_big_image_is_held_reduced_to_what_the_resize_needs_and_transparency_is_white():
    """A 24-MP RGBA PNG held for its crop: reduced by a whole factor that keeps the shorter side at or over the
    draft size (a JPEG's draft does the same), not 72 MB of RGB; its transparent pixels are white."""
    image = Image.new("RGBA", (6000, 4000), (0, 0, 0, 0))
    image.paste((200, 10, 10, 255), (0, 0, 3000, 4000))
    rgb = to_rgb(image, draft_size=256)
    assert rgb.mode == "RGB" and 256 <= min(rgb.size) < 512 and rgb.size[0] / rgb.size[1] == pytest.approx(1.5, rel=0.01)
    assert rgb.getpixel((10, 10)) == (200, 10, 10) and rgb.getpixel((rgb.size[0] - 10, 10)) == (255, 255, 255)
    assert to_rgb(Image.new("RGB", (300, 200)), draft_size=256).size == (300, 200)  # under twice it: as it is
