"""Decoding and augmentation on the GPU, where CUDA is present (issue 21 section 7).

A g4dn.xlarge's 4 vCPUs decode about 150 ResNet50 images a second with Pillow; its T4 trains about 400. Here the
loader workers only read the files' bytes (:class:`EncodedSamples`); the training process decodes the batch on the
GPU in one nvJPEG call (``torchvision.io.decode_jpeg(..., device="cuda")``) and crops and flips it there
(:class:`BatchDecoder`), returning the same uint8 NCHW batch the CPU path (:class:`dogbreed.data.ImageSamples`)
yields. The CPU path is unchanged; :func:`decodes_on_gpu` picks this one only for a CUDA device.
"""

from __future__ import annotations

import io
import logging
import math
import random

import torch
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as F

from .data import Samples, Unreadable, make_loader
from .presets import open_rgb

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8"
RATIO = (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop's aspect ratios


def decodes_on_gpu(device: torch.device) -> bool:
    """Whether the batches for ``device`` decode on it: a CUDA device that CUDA can use. Elsewhere, Pillow in the
    loader workers, as before."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


class EncodedSamples(Samples):
    """(file bytes, label, index, seed) per image; a file that cannot be read yields ``Unreadable(index)``."""

    def __getitem__(self, item):
        index, seed, path, label = self.sample(item)
        try:
            return read_file(str(path)), label, index, seed
        except (OSError, RuntimeError):
            return Unreadable(index)


def collate_encoded(batch):
    """(list of byte tensors, labels, unreadable indices, indices, seeds): decoding waits for the device."""
    good = [item for item in batch if not isinstance(item, Unreadable)]
    unreadable = tuple(item.index for item in batch if isinstance(item, Unreadable))
    labels = torch.tensor([item[1] for item in good], dtype=torch.long)
    return [item[0] for item in good], labels, unreadable, [item[2] for item in good], [item[3] for item in good]


def crop_box(height: int, width: int, scale: tuple[float, float], rng: random.Random) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random resized crop: torchvision's RandomResizedCrop.get_params, drawn from
    ``rng`` (seeded per image and epoch, as the CPU path's transform is) instead of torch's global generator."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height  # no draw fitted: the central crop of the ratio nearest the image's
    if in_ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif in_ratio > RATIO[1]:
        h, w = height, round(height * RATIO[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _decode_on_cpu(encoded: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """Pillow, as the CPU path and :func:`dogbreed.data.readable` decode: the formats torchvision cannot (BMP, TIFF)
    and the JPEGs nvJPEG refuses (CMYK, 12-bit, ...). Every image the readability check passed must train; this
    costs the training process a Pillow decode, but only for those images. None: Pillow cannot read it either."""
    try:
        image = open_rgb(io.BytesIO(encoded.numpy().tobytes()))
    except Exception as exc:  # noqa: BLE001 - any decode failure: the image is skipped and counted, never fatal
        log.debug("skipping an image no decoder reads: %s", exc)
        return None
    return F.pil_to_tensor(image).to(device)


def _decode_one(encoded: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """One image: nvJPEG for a JPEG (8-bit, no alpha: what the CPU path makes of it too); every other format through
    Pillow (:func:`_decode_on_cpu`), as the CPU path and serving read it: torchvision's decoders would give a
    16-bit PNG as uint16 (a batch of it and a JPEG cannot even stack) and a transparent one on black, not white.
    None where no decoder reads it."""
    if bytes(encoded[:2].tolist()) != JPEG_MAGIC:
        return _decode_on_cpu(encoded, device)
    try:
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
    except (RuntimeError, ValueError):
        return _decode_on_cpu(encoded, device)


def decode_all(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Every image of a batch as CHW uint8 on ``device`` (None: no decoder, Pillow included, reads it). One batched
    nvJPEG call where all are JPEGs that decode; image by image where one fails, so that one bad file costs its
    image, not the batch."""
    if encoded and all(bytes(e[:2].tolist()) == JPEG_MAGIC for e in encoded):
        try:
            return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True))
        except RuntimeError:
            pass
    return [_decode_one(e, device) for e in encoded]


class BatchDecoder:
    """Encoded images -> the uint8 NCHW batch ``prep``'s transforms would give, made on ``device``: training's random
    resized crop (smallest share ``min_scale``) and flip, seeded per image, or evaluation's resize and center crop."""

    def __init__(self, prep, device: torch.device, augment: bool, min_scale: float = 0.08):
        self.prep, self.device, self.augment, self.scale = prep, torch.device(device), augment, (min_scale, 1.0)

    def _crop(self, image: torch.Tensor, seed) -> torch.Tensor:
        size = [self.prep.input_size, self.prep.input_size]
        interpolation = self.prep.interpolation_mode
        if not self.augment:
            resized = F.resize(image, [self.prep.resize], interpolation=interpolation, antialias=True)
            return F.center_crop(resized, size)
        rng = random.Random(seed)
        top, left, height, width = crop_box(image.shape[-2], image.shape[-1], self.scale, rng)
        crop = F.resized_crop(image, top, left, height, width, size, interpolation=interpolation, antialias=True)
        return F.horizontal_flip(crop) if rng.random() < 0.5 else crop

    def __call__(self, encoded, labels, indices, seeds):
        """(images on the device, their labels there, the indices of the images that did not decode)."""
        decoded = decode_all(encoded, self.device)
        kept = [i for i, image in enumerate(decoded) if image is not None]
        lost = tuple(indices[i] for i, image in enumerate(decoded) if image is None)
        if not kept:
            return torch.empty(0, dtype=torch.uint8, device=self.device), labels[:0].to(self.device), lost
        images = torch.stack([self._crop(decoded[i], seeds[i]) for i in kept])
        return images, labels[kept].to(self.device, non_blocking=True), lost


class DecodedLoader:
    """A loader of encoded images that yields what the CPU path's loader yields, ``(images, labels, unreadable
    indices)``, with the images decoded and cropped on the device: the training loop stays as it is."""

    def __init__(self, loader, decoder: BatchDecoder):
        self.loader, self.decoder = loader, decoder

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for encoded, labels, unreadable, indices, seeds in self.loader:
            images, labels, lost = self.decoder(encoded, labels, indices, seeds)
            yield images, labels, unreadable + lost


def gpu_loader(samples, prep, device: torch.device, augment: bool, min_scale: float, batch_size: int, sampler,
               workers: int, drop_last: bool = False) -> DecodedLoader:
    """The GPU path's loader of ``samples`` (see :func:`decodes_on_gpu`): the workers read bytes, the device decodes.
    ``drop_last``: as the CPU path's loader (training's last batch of one, :func:`dogbreed.training.setup`)."""
    loader = make_loader(EncodedSamples(samples), batch_size, sampler, workers, drop_last=drop_last,
                         collate_fn=collate_encoded)
    return DecodedLoader(loader, BatchDecoder(prep, device, augment, min_scale))
