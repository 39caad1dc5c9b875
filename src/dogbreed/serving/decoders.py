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

from ..images import to_rgb
from . import content_types as ct
from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

MAX_PIXELS = 40_000_000  # a 40-megapixel photo is the largest we decode (bombs are refused before)
MAX_BATCH = 64
MAX_SIDE = 20_000


def _as_bytes(body) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise BadRequest(f"unexpected request body of type {type(body).__name__}")


def decode_image(data: bytes, draft_size: int | None = None) -> Image.Image:
    if not data:
        raise BadRequest("empty request body: send an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
                raise PayloadTooLarge(f"image of {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel limit")
            if width < 1 or height < 1:
                raise BadRequest("image has no pixels")
            rgb = to_rgb(image, draft_size)
            rgb.load()
            return rgb
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image refused as a decompression bomb: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise BadRequest("the body is not an image Pillow can read") from exc
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


def decode_json(body, draft_size: int | None = None) -> tuple[list[Image.Image], dict]:
    """``{"image": b64}``, ``{"instances": [b64 | {"b64": b64}, ...]}`` or a bare list; options such as ``top_k``."""
    text = _as_bytes(body)
    if not text.strip():
        raise BadRequest("empty JSON body")
    try:
        payload = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc
    options: dict = {}
    if isinstance(payload, dict):
        options = {k: payload[k] for k in ("top_k",) if k in payload}
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
    if len(items) > MAX_BATCH:
        raise PayloadTooLarge(f"{len(items)} images in one request; at most {MAX_BATCH}")
    images = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            item = item.get("b64", item.get("image"))
        images.append(decode_image(_b64(item, f"instance {index}"), draft_size))
    return images, options


def decode_npy(body) -> list[Image.Image]:
    data = _as_bytes(body)
    if not data:
        raise BadRequest("empty request body: send a .npy array")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy raises many kinds for a bad header
        raise BadRequest(f"not a .npy array ({exc.__class__.__name__})") from exc
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "uif" or array.ndim not in (2, 3, 4):
        raise BadRequest("expected a numeric array HxW, HxWxC, CxHxW or NxHxWxC")
    if array.size > MAX_PIXELS * 3:
        raise PayloadTooLarge("array too large")
    batch = array if array.ndim == 4 else array[None]
    if len(batch) > MAX_BATCH:
        raise PayloadTooLarge(f"{len(batch)} images in one request; at most {MAX_BATCH}")
    images = []
    for item in batch:
        if item.ndim == 3 and item.shape[0] in (1, 3) and item.shape[-1] not in (1, 3, 4):
            item = np.transpose(item, (1, 2, 0))
        if item.ndim == 3 and item.shape[-1] == 1:
            item = item[..., 0]
        if item.ndim == 3 and item.shape[-1] not in (3, 4):
            raise BadRequest(f"an image array needs 1, 3 or 4 channels, got shape {tuple(item.shape)}")
        if min(item.shape[:2]) < 1:
            raise BadRequest("image array has no pixels")
        if item.dtype.kind == "f":
            if not np.isfinite(item).all():
                raise BadRequest("image array holds NaN or infinity")
            scale = 255.0 if item.max(initial=0) <= 1.0 else 1.0
            item = np.clip(item * scale, 0, 255)
        item = np.clip(item, 0, 255).astype(np.uint8)
        images.append(to_rgb(Image.fromarray(item)))
    return images


def decode(body, content_type: str, draft_size: int | None = None) -> tuple[list[Image.Image], dict]:
    kind = ct.base(content_type)
    if kind in ct.IMAGE_TYPES:
        return [decode_image(_as_bytes(body), draft_size)], {}
    if kind == ct.JSON:
        return decode_json(body, draft_size)
    if kind == ct.NPY:
        return decode_npy(body), {}
    raise UnsupportedMediaType(
        f"content type {ascii(content_type[:60]) if content_type else '(none)'} is not supported; "
        f"send one of {', '.join(ct.REQUEST_TYPES)}"
    )
