"""The GPU decode path's logic, run on the CPU: torchvision's decoders and crops take the device as an argument, so
the same code runs here with device=cpu; only the choice of path needs CUDA, and that is mocked."""

from __future__ import annotations

import io
import random

import pytest
import torch
from PIL import Image

from dogbreed import data, gpu_decode
from dogbreed.presets import Preprocessing

PREP = Preprocessing(input_size=32, resize=36)


def _jpeg(path, width=80, height=60, shade=0):
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 3 + shade) % 256, (y * 4) % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    image.save(path, quality=95)
    return path


def _batch(samples, seeds=None):
    dataset = gpu_decode.EncodedSamples(samples)
    items = [dataset[(i, seed)] for i, seed in enumerate(seeds or [None] * len(samples))]
    return gpu_decode.collate_encoded(items)


def test_the_gpu_path_is_chosen_only_where_cuda_is_present(monkeypatch):
    assert not gpu_decode.decodes_on_gpu(torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not gpu_decode.decodes_on_gpu(torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu_decode.decodes_on_gpu(torch.device("cuda", 0))
    assert not gpu_decode.decodes_on_gpu(torch.device("cpu"))  # the CPU path stays where the model is on the CPU


def test_evaluation_batches_match_the_cpu_paths_crop(tmp_path):
    samples = [(_jpeg(tmp_path / f"{i}.jpg", 80 + 10 * i, 60, shade=40 * i), i % 2) for i in range(3)]
    encoded, labels, unreadable, indices, seeds = _batch(samples)
    images, kept_labels, lost = gpu_decode.BatchDecoder(PREP, torch.device("cpu"), augment=False)(
        encoded, labels, indices, seeds)
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 32, 32) and not lost and not unreadable
    assert kept_labels.tolist() == [0, 1, 0]
    cpu = torch.stack([data.ImageSamples(samples, PREP.eval_transform(False))[i][0] for i in range(3)])
    assert (images.float() - cpu.float()).abs().mean() < 4  # the same crop; two resizers' rounding apart


def test_training_crops_are_seeded_per_image(tmp_path):
    samples = [(_jpeg(tmp_path / f"{i}.jpg"), 0) for i in range(4)]
    decoder = gpu_decode.BatchDecoder(PREP, torch.device("cpu"), augment=True, min_scale=0.2)
    first = decoder(*[_batch(samples, [1, 2, 3, 4])[k] for k in (0, 1, 3, 4)])[0]
    again = decoder(*[_batch(samples, [1, 2, 3, 4])[k] for k in (0, 1, 3, 4)])[0]
    other = decoder(*[_batch(samples, [5, 6, 7, 8])[k] for k in (0, 1, 3, 4)])[0]
    assert first.shape == (4, 3, 32, 32) and torch.equal(first, again) and not torch.equal(first, other)


def test_a_png_decodes_and_a_corrupt_file_is_reported_not_fatal(tmp_path):
    good = _jpeg(tmp_path / "good.jpg")
    png = tmp_path / "p.png"
    Image.new("RGB", (50, 40), "blue").save(png)
    broken = tmp_path / "broken.jpg"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "JPEG")
    broken.write_bytes(buffer.getvalue()[:30])
    encoded, labels, _, indices, seeds = _batch([(good, 0), (png, 1), (broken, 1)])
    images, kept, lost = gpu_decode.BatchDecoder(PREP, torch.device("cpu"), augment=False)(encoded, labels, indices, seeds)
    assert images.shape == (2, 3, 32, 32) and kept.tolist() == [0, 1] and lost == (2,)
    assert images[1, 2].float().mean() > 200  # the PNG's blue


@pytest.mark.parametrize("height,width", [(60, 80), (400, 30), (30, 400)])
def test_crop_boxes_lie_inside_the_image(height, width):
    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = gpu_decode.crop_box(height, width, (0.08, 1.0), rng)
        assert 0 <= top and 0 <= left and 0 < h and 0 < w and top + h <= height and left + w <= width


def test_the_gpu_loader_yields_what_the_cpu_loader_yields(tmp_path):
    samples = [(_jpeg(tmp_path / f"{i}.jpg", shade=30 * i), i % 2) for i in range(5)]
    (tmp_path / "4.jpg").write_bytes(b"\xff\xd8 truncated")
    loader = gpu_decode.gpu_loader(samples, PREP, torch.device("cpu"), augment=False, min_scale=0.08, batch_size=3,
                                   sampler=data.ShardSampler(5), workers=0)
    batches = list(loader)
    assert len(loader) == 2 and [b[0].shape[0] for b in batches] == [3, 1]
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 1, 0, 1] and batches[1][2] == (4,)


def _loaders(tmp_path, monkeypatch, on_device: bool):
    """Training's loaders of a small sample as ``make_loaders`` builds them, the GPU path's injected from outside
    (device=cpu, where torchvision's decoders run the same code): no GPU here."""
    from dogbreed.sample import make_sample
    from dogbreed.training import setup
    from tests.unit.test_recipe import config_of

    root = tmp_path / "dogImages"
    if not root.exists():
        make_sample(root, classes=2, size=72, seed=0, per_split={"train": 4, "valid": 2, "test": 2})
    config = config_of(["--model", "resnet18", "--pretrained-weights", "none", "--input-size", "32",
                        "--batch-size", "4", "--num-workers", "0", "--data-dir", str(root)], tmp_path)
    monkeypatch.setattr(gpu_decode, "decodes_on_gpu", lambda device: on_device)
    inputs = setup.load_data(config)
    acc = setup.accel.pick("fp32", use_cuda=False)
    feed = setup.make_loaders(config, inputs, setup.Chosen(torch.nn.Identity(), acc, False, False))
    return inputs, feed.loaders


def test_training_loaders_take_the_gpu_path_only_where_batches_can_decode_on_the_device(tmp_path, monkeypatch):
    from dogbreed.training import setup

    inputs, cpu = _loaders(tmp_path, monkeypatch, on_device=False)
    assert not any(isinstance(loader, gpu_decode.DecodedLoader) for loader in cpu.values())
    _, device = _loaders(tmp_path, monkeypatch, on_device=True)
    assert all(isinstance(loader, gpu_decode.DecodedLoader) for loader in device.values())
    assert device["train"].decoder.augment and not device["valid"].decoder.augment
    for split in ("train", "valid"):  # the same batches for the loop: uint8 NCHW, labels, unreadable indices
        (a, a_labels, a_lost), (b, b_labels, b_lost) = next(iter(cpu[split])), next(iter(device[split]))
        assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape == (4, 3, 32, 32)
        assert torch.equal(a_labels, b_labels) and a_lost == b_lost == ()
        normalized = inputs.prep.normalize_batch(b)
        assert normalized.dtype == torch.float32
        assert abs(float(normalized.mean() - inputs.prep.normalize_batch(a).mean())) < 0.2
    a, b = next(iter(cpu["valid"]))[0], next(iter(device["valid"]))[0]  # evaluation's crop: the same pixels,
    assert (a.float() - b.float()).abs().mean() < 4  # two resizers' rounding apart
    device_ok = type("Config", (), {"gpu_decode": "auto"})(), type("Config", (), {"gpu_decode": "false"})()
    acc = setup.accel.pick("fp32", use_cuda=False)
    assert setup.decode_device(device_ok[0], acc) == acc.device  # decodes_on_gpu still says yes (injected above)
    assert setup.decode_device(device_ok[1], acc) is None  # --gpu-decode false: Pillow in the workers


def _saved(path, fmt, colour):
    Image.new("RGB", (70, 50), colour).save(path, fmt)
    return path


def test_images_only_pillow_reads_are_decoded_on_the_cpu_not_dropped(tmp_path):
    """BMP and TIFF pass the readability check (Pillow) but no torchvision decoder reads them: a class of them must
    still train on the GPU path, decoded by Pillow, to the batch the other images make."""
    samples = [(_saved(tmp_path / "a.bmp", "BMP", "red"), 0), (_saved(tmp_path / "b.tif", "TIFF", "green"), 1),
               (_jpeg(tmp_path / "c.jpg"), 1)]
    assert all(data.readable(path) for path, _ in samples)
    encoded, labels, unreadable, indices, seeds = _batch(samples)
    images, kept, lost = gpu_decode.BatchDecoder(PREP, torch.device("cpu"), augment=False)(encoded, labels, indices, seeds)
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 32, 32) and kept.tolist() == [0, 1, 1]
    assert lost == () and unreadable == ()
    assert images[0, 0].float().mean() > 200 and images[1, 1].float().mean() > 100  # the BMP's red, the TIFF's green
    cpu = torch.stack([data.ImageSamples(samples, PREP.eval_transform(False))[i][0] for i in range(3)])
    assert (images.float() - cpu.float()).abs().mean() < 4


def test_a_jpeg_nvjpeg_refuses_is_decoded_by_pillow(tmp_path, monkeypatch):
    """nvJPEG refuses some JPEGs Pillow reads (CMYK, 12-bit): the device's decoder is mocked to refuse every one."""
    def refusing(*_, **__):
        raise RuntimeError("nvjpegDecode failed: unsupported JPEG")

    monkeypatch.setattr(gpu_decode, "decode_jpeg", refusing)
    samples = [(_jpeg(tmp_path / f"{i}.jpg", shade=50 * i), i) for i in range(2)]
    encoded, labels, _, indices, seeds = _batch(samples)
    decoder = gpu_decode.BatchDecoder(PREP, torch.device("cpu"), augment=True)
    images, kept, lost = decoder(encoded, labels, indices, [3, 4])
    assert images.shape == (2, 3, 32, 32) and kept.tolist() == [0, 1] and lost == ()
    (tmp_path / "0.jpg").write_bytes(b"\xff\xd8 truncated")  # what Pillow cannot read either is still reported
    encoded, labels, _, indices, seeds = _batch(samples)
    assert decoder(encoded, labels, indices, [3, 4])[2] == (0,)


def test_the_gpu_loader_trains_on_a_class_of_bmps(tmp_path):
    samples = [(_jpeg(tmp_path / f"{i}.jpg", shade=30 * i), 0) for i in range(3)]
    samples += [(_saved(tmp_path / f"{i}.bmp", "BMP", (0, 0, 40 * i)), 1) for i in range(3)]
    loader = gpu_decode.gpu_loader(samples, PREP, torch.device("cpu"), augment=True, min_scale=0.5, batch_size=4,
                                   sampler=data.ShardSampler(6, shuffle=True), workers=0)
    batches = list(loader)
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == [0, 0, 0, 1, 1, 1]
    assert all(b[2] == () for b in batches)


def test_16_bit_and_transparent_pngs_decode_as_the_cpu_path_reads_them(tmp_path):
    """torchvision's PNG decoder gave a 16-bit PNG as uint16 (its batch with a JPEG could not stack: the epoch
    failed) and a transparent one on black; the CPU path and serving read them as 8-bit, flattened on white."""
    import numpy as np

    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((40, 50), 40000, dtype=np.uint16)).save(deep)
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (50, 40), (10, 20, 30, 0)).save(clear)
    samples = [(deep, 0), (clear, 1), (_jpeg(tmp_path / "c.jpg"), 1)]
    encoded, labels, unreadable, indices, seeds = _batch(samples)
    images, kept, lost = gpu_decode.BatchDecoder(PREP, torch.device("cpu"), augment=False)(encoded, labels, indices, seeds)
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 32, 32) and lost == ()
    cpu = torch.stack([data.ImageSamples(samples, PREP.eval_transform(False))[i][0] for i in range(3)])
    assert (images.float() - cpu.float()).abs().mean() < 4
    assert images[1].float().mean() > 250  # white, not black
