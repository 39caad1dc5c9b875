"""Request bodies to RGB images: image bytes, JSON with base64 images, NumPy arrays.

Every way a body can be wrong ends in a :class:`~dogbreed.serving.errors.RequestError` (4xx),
never in an unhandled exception.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import struct
import warnings

import numpy as np
from PIL import Image

from ..images import apply_draft, to_rgb
from . import content_types as ct
from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

# The formats the endpoint reads (content_types.IMAGE_TYPES; multi-picture JPEGs open through JPEG). Left open,
# Pillow would try every reader it has on whatever bytes a client sends (EPS among them, which runs Ghostscript).
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
MAX_PIXELS = 40_000_000  # a 40-megapixel photo is the largest we decode (bombs are refused before)
MAX_BATCH = 64
MAX_RECORDS = 1024  # a JSON-lines request's records: request_records
MAX_SIDE = 20_000
# Panoramas run to about 8:1. Past the bound the resize of the shorter side to the model's size is what explodes:
# a 20000x1 image resized to a 256-pixel short side is 5 gigapixels, from a 100-byte PNG.
MAX_ASPECT = 10
# One request's decoded pixels in all: 150 MB as RGB, what each of the native front's 16 request threads (or each
# multi-model-server worker) may hold at once. JPEGs count at the draft scale they decode at (a 12-MP phone photo is
# 0.19 MP for a model that resizes to 256), so 64 of them fit many times over; 6 MB of PNG photos hold ~3 MP. Only
# flat, synthetic images pack more into a body: 200 MP of them fit in 6 MB of PNG (600 MB decoded, per request).
MAX_REQUEST_PIXELS = 50_000_000
# Both budgets above are for a 6 MB body; a larger body limit (SAGEMAKER_MAX_PAYLOAD_IN_MB, Batch Transform) scales
# them by ``scale`` (settings.ServingSettings.scale): a 20 MB batch of photos holds 3.3 times as many.


def request_pixels(scale: float = 1.0) -> int:
    return int(MAX_REQUEST_PIXELS * max(1.0, scale))


class PixelBudget:
    """One request's decoded pixels in all, charged as each image is sized up, before it is decoded: an image
    whose decode then fails, or whose record is refused after it, has cost its decode all the same (else a body of
    records that each fail after a big image would decode many budgets' worth)."""

    def __init__(self, pixels: int | None = None):
        self.total = MAX_REQUEST_PIXELS if pixels is None else pixels
        self.left = self.total

    def take(self, pixels: int) -> None:
        if pixels > self.left:
            raise PayloadTooLarge(f"the request's images hold over its pixel budget in all ({self.total:,} pixels: "
                                  f"{MAX_REQUEST_PIXELS:,} for each 6 MB of the body limit)")
        self.left -= pixels


def request_images(scale: float = 1.0) -> int:
    return int(MAX_BATCH * max(1.0, scale))


def json_lines_records(scale: float, batch: bool) -> int:
    """A JSON-lines body's records: MAX_BATCH on an endpoint; Batch Transform's many (:func:`request_records`) only
    where SAGEMAKER_BATCH says this is its container. Each record costs a crop however small its photo, and an
    endpoint is reachable by whoever may invoke it: 1,024 one-pixel PNGs are 100 KB of body and 150 MB of crops."""
    return (request_records if batch else request_images)(scale)


def request_records(scale: float = 1.0) -> int:
    """A JSON-lines body's records (and images): Batch Transform packs as many as fit in MaxPayloadInMB, and 6 MB
    of small photos is well over MAX_BATCH. Each costs at most a 224-px crop in the worker (150 KB as uint8) and
    an answer line; the engine runs them max_batch at a time, and the pixel budget still bounds the decoding."""
    return int(MAX_RECORDS * max(1.0, scale))


def check_pixels(width: int, height: int, what: str = "image") -> None:
    """The decoded-pixel budget, checked from a header before anything is decoded or allocated."""
    if width < 1 or height < 1:
        raise BadRequest(f"{what} has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise PayloadTooLarge(f"{what} of {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel limit")
    if max(width, height) > MAX_SIDE:
        raise PayloadTooLarge(f"{what} of {width}x{height} pixels is over the {MAX_SIDE:,}-pixel side limit")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise BadRequest(f"{what} of {width}x{height} pixels is narrower than 1:{MAX_ASPECT}; send a photo")


def as_bytes(body) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise BadRequest(f"unexpected request body of type {type(body).__name__}")


def decode_image(data: bytes, draft_size: int | None = None, budget: PixelBudget | None = None) -> Image.Image:
    """One image body as RGB. ``budget``: the request's (a 6 MB request's by default), charged with the size the
    image will decode at (a JPEG's reduced draft scale) before it is decoded."""
    budget = PixelBudget() if budget is None else budget
    if not data:
        raise BadRequest("empty request body: send an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            check_pixels(*image.size)
            width, height = apply_draft(image, draft_size).size
            budget.take(width * height)
            rgb = to_rgb(image, draft_size)
            rgb.load()
            return rgb
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image refused as a decompression bomb: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise BadRequest(f"the body is not an image of a format this endpoint reads ({', '.join(FORMATS)})") from exc
    except (PayloadTooLarge, BadRequest):
        raise
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, struct.error) as exc:
        raise BadRequest(f"the image is truncated or corrupt ({exc.__class__.__name__}: {str(exc)[:120]})") from exc


def _b64(text, where: str) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(f"{where}: expected a base64 string")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{where}: not valid base64 ({exc})") from exc


def decode_json(body, draft_size: int | None = None, budget: PixelBudget | None = None,
                max_images: int | None = None) -> tuple[list[Image.Image], dict]:
    """``{"image": b64}``, ``{"instances": [b64 | {"b64": b64}, ...]}`` or a bare list; options such as ``top_k``.
    ``budget``: the request's pixels (a 6 MB request's by default); ``max_images``: its images."""
    budget = PixelBudget() if budget is None else budget
    max_images = MAX_BATCH if max_images is None else max_images
    text = as_bytes(body)
    if not text.strip():
        raise BadRequest("empty JSON body")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, and integers past Python's digit limit
        raise BadRequest(f"malformed JSON: {str(exc)[:200]}") from exc
    options: dict = {}
    if isinstance(payload, dict):
        options = {k: payload[k] for k in ("top_k", "explain", "reject_non_dogs") if k in payload}
        if "image" in payload:
            items = [payload["image"]]
        elif "instances" in payload:
            items = payload["instances"]
        else:
            raise BadRequest('JSON must hold "image" (base64) or "instances" (a list of base64 images)')
    elif isinstance(payload, list):
        items = payload
    else:
        raise BadRequest("JSON must be an object or a list")
    if not isinstance(items, list) or not items:
        raise BadRequest('"instances" must be a non-empty list')
    if len(items) > max_images:
        raise PayloadTooLarge(f"{len(items)} images in one request; at most {max_images}")
    images = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            item = item.get("b64", item.get("image"))
        images.append(decode_image(_b64(item, f"instance {index}"), draft_size, budget))
    return images, options


def _npy_header(data: bytes) -> tuple[tuple, bool, np.dtype]:
    """The array's shape, order and dtype from its header alone: nothing is allocated before they are checked."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream, max_header_size=10_000)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream, max_header_size=10_000)
    except Exception as exc:  # numpy raises many kinds for a bad header
        raise BadRequest(f"not a .npy array ({exc.__class__.__name__})") from exc
    return shape, fortran, dtype


def _channels_first(shape: tuple) -> bool:
    """CxHxW (C of 1 or 3) rather than HxWxC: the rule the decoder transposes by."""
    return len(shape) == 3 and shape[0] in (1, 3) and shape[-1] not in (1, 3, 4)


def _check_npy_shape(shape: tuple, dtype: np.dtype, scale: float = 1.0) -> None:
    if dtype.kind not in "uif" or dtype.hasobject or len(shape) not in (2, 3, 4):
        raise BadRequest(f"expected a numeric array HxW, HxWxC, CxHxW or NxHxWxC, got {dtype.str} {tuple(shape)}")
    if any(int(side) == 0 for side in shape):
        raise BadRequest(f"image array has no pixels (shape {tuple(shape)})")
    count = int(shape[0]) if len(shape) == 4 else 1
    if count > request_images(scale):
        raise PayloadTooLarge(f"{count} images in one request; at most {request_images(scale)}")
    item = tuple(int(side) for side in (shape[1:] if len(shape) == 4 else shape))
    if len(item) == 3 and not _channels_first(item) and item[-1] not in (1, 3, 4):
        raise BadRequest(f"an image array needs 1, 3 or 4 channels, got shape {item}")
    height, width = item[1:3] if _channels_first(item) else item[:2]
    check_pixels(width, height, "image array")
    if count * width * height > request_pixels(scale):
        raise PayloadTooLarge(f"the request's arrays hold over {request_pixels(scale):,} pixels in all")


def decode_npy(body, scale: float = 1.0) -> list[Image.Image]:
    data = as_bytes(body)
    if not data:
        raise BadRequest("empty request body: send a .npy array")
    shape, _, dtype = _npy_header(data)
    _check_npy_shape(shape, dtype, scale)
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # a body shorter than its header says
        raise BadRequest(f"not a .npy array ({exc.__class__.__name__})") from exc
    batch = array if array.ndim == 4 else array[None]
    images = []
    for item in batch:
        if _channels_first(item.shape):
            item = np.transpose(item, (1, 2, 0))
        if item.ndim == 3 and item.shape[-1] == 1:
            item = item[..., 0]
        if item.dtype.kind == "f":
            if not np.isfinite(item).all():
                raise BadRequest("image array holds NaN or infinity")
            scale = 255.0 if item.max(initial=0) <= 1.0 else 1.0
            item = np.clip(item * scale, 0, 255)
        item = np.clip(item, 0, 255).astype(np.uint8)
        images.append(to_rgb(Image.fromarray(item)))
    return images


def decode(body, content_type: str, draft_size: int | None = None,
           scale: float = 1.0) -> tuple[list[Image.Image], dict]:
    """One request's images and options. ``scale``: how many 6 MB requests the body limit allows (the budgets
    scale with it). JSON lines (several records) are :mod:`.jsonlines`'s."""
    kind = ct.base(content_type)
    if kind in ct.IMAGE_TYPES:
        return [decode_image(as_bytes(body), draft_size, PixelBudget(request_pixels(scale)))], {}
    if kind == ct.JSON:
        return decode_json(body, draft_size, PixelBudget(request_pixels(scale)), request_images(scale))
    if kind == ct.NPY:
        return decode_npy(body, scale), {}
    raise UnsupportedMediaType(
        f"content type {ascii(content_type[:60]) if content_type else '(none)'} is not supported; "
        f"send one of {', '.join(ct.REQUEST_TYPES)}"
    )
