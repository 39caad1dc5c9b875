"""The hostile request bodies of issue 19, each with the statuses it may get: one list for the unit tests
(``input_fn``), the HTTP tests on both fronts, and the fuzz corpus.

Every body is built here from its description (no binary fixtures): a header that claims a size is written
byte by byte, so that the claim is all there is and nothing big is ever built on the client side.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from dogbreed.serving import decoders

JSON, NPY, PNG, JPEG, TIFF = "application/json", "application/x-npy", "image/png", "image/jpeg", "image/tiff"
BAD, TOO_LARGE, BAD_OR_TOO_LARGE = {400}, {413}, {400, 413}
MANY_DIGITS = 5000  # past Python's 4,300-digit limit on int-string conversion


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    content_type: str | None
    statuses: frozenset
    headers: dict = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        return 200 not in self.statuses


def case(name, body, content_type, statuses, headers=None) -> Case:
    return Case(name, body, content_type, frozenset(statuses), headers or {})


class Headers:
    """The request context ``input_fn`` reads headers from, as a front hands it over."""

    def __init__(self, headers: dict):
        self.request_processor, self.headers = [self], headers

    def get_request_properties(self) -> dict:
        return self.headers


# --- builders ---------------------------------------------------------------------------------------------------


def png(mode: str = "RGB", size=(30, 20), color=0) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_header(shape, dtype: str = "|u1") -> bytes:
    """A .npy header announcing ``shape`` with no data behind it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` (8-bit grey) and whose data is one empty row."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00"))
            + _chunk(b"IEND", b""))


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG of a uint16 array: HxW grey, HxWx2 grey+alpha, HxWx3 RGB, HxWx4 RGBA (Pillow writes 16-bit
    grey only)."""
    height, width = array.shape[:2]
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[array.shape[2] if array.ndim == 3 else 1]
    raw = b"".join(b"\x00" + array[row].astype(">u2").tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def tiff16(array: np.ndarray, claim: tuple[int, int] | None = None) -> bytes:
    """An uncompressed little-endian 16-bit TIFF of a uint16 array (HxW grey or HxWx3 RGB); ``claim``: the
    (width, height) its header says instead of the array's."""
    height, width = array.shape[:2]
    width, height = claim or (width, height)
    samples = 1 if array.ndim == 2 else array.shape[2]
    data = array.astype("<u2").tobytes()
    bits_at = 8 + len(data)
    bits = struct.pack("<" + "H" * samples, *[16] * samples) if samples > 2 else b""
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, samples, bits_at if samples > 2 else 16), (259, 3, 1, 1),
            (262, 3, 1, 2 if samples >= 3 else 1), (273, 4, 1, 8), (277, 3, 1, samples), (278, 4, 1, height),
            (279, 4, 1, len(data)), (284, 3, 1, 1)]
    entries = b"".join(struct.pack("<HHI", tag, kind, count)
                       + (struct.pack("<I", value) if kind == 4 or count > 2 else struct.pack("<HH", value, 0))
                       for tag, kind, count, value in tags)
    return b"II*\x00" + struct.pack("<I", bits_at + len(bits)) + data + bits + struct.pack("<H", len(tags)) + entries + b"\0" * 4


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) is rewritten to say ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 60, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0") + 5  # marker, length (2), precision (1): then height, width
    data[at : at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 64, 0, 0, 14 + len(info)) + info + b"\0" * 64


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def json_body(payload) -> bytes:
    return json.dumps(payload).encode()


def ramp(height: int = 48, width: int = 64) -> np.ndarray:
    """A uint16 grey ramp over the whole 16-bit range."""
    return (np.add.outer(np.arange(height), np.arange(width)) * (65535 // (height + width))).astype(np.uint16)


# --- the cases ----------------------------------------------------------------------------------------------------


def _big_integers() -> list[Case]:
    image = b64(png())
    digits = "9" * MANY_DIGITS
    return [
        case("top_k of 5000 digits", f'{{"image": "{image}", "top_k": {digits}}}'.encode(), JSON, BAD),
        case("top_k of -5000 digits", f'{{"image": "{image}", "top_k": -{digits}}}'.encode(), JSON, BAD),
        case("4301 digits elsewhere", f'{{"image": "{image}", "n": {"1" * 4301}}}'.encode(), JSON, BAD),
        case("5000 digits as an instance", f'{{"instances": [{digits}]}}'.encode(), JSON, BAD),
        case("5000 digits deep inside", f'{{"image": "{image}", "x": [{{"y": [{digits}]}}]}}'.encode(), JSON, BAD),
        case("5000 digits as a bare body", digits.encode(), JSON, BAD),
        case("top_k of 5000 digits as a string", json_body({"image": image, "top_k": digits}), JSON, BAD),
        case("top_k 1e999", f'{{"image": "{image}", "top_k": 1e999}}'.encode(), JSON, BAD),
        case("top_k in the attributes, 5000 digits", png(), PNG, {400, 431},  # 431 where headers are bounded lower
             {"X-Amzn-SageMaker-Custom-Attributes": f"top_k={digits}"}),
        case("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, JSON, BAD),
        case("65 instances", json_body({"instances": [image] * (decoders.MAX_BATCH + 1)}), JSON, TOO_LARGE),
        # 100 KB of body, 150 MB of crops: an endpoint takes MAX_BATCH records (Batch Transform's container more)
        case("1,024 one-pixel PNG records in JSON lines",
             b"\n".join([json_body({"image": b64(png("RGB", (1, 1)))})] * decoders.MAX_RECORDS),
             "application/jsonlines", TOO_LARGE),
        case("9 instances asking explain", json_body({"instances": [image] * 9, "explain": True}), JSON, TOO_LARGE),
        case("a 20000x1 PNG in JSON", json_body({"image": b64(png("L", (20000, 1)))}), JSON, BAD),
    ]


def _arrays() -> list[Case]:
    six_million = 6_000_000
    return [
        case("npy (0, 3, 16, 16)", npy(np.zeros((0, 3, 16, 16), np.uint8)), NPY, BAD),
        case("npy (4, 0)", npy(np.zeros((4, 0), np.uint8)), NPY, BAD),
        case("npy (3, 0, 16)", npy(np.zeros((3, 0, 16), np.uint8)), NPY, BAD),
        case("npy (1, 20000)", npy(np.zeros((1, 20000), np.uint8)), NPY, BAD),
        case("npy (20000, 1, 3)", npy(np.zeros((20000, 1, 3), np.uint8)), NPY, BAD),
        case("npy 6M uint8 (6000000,)", npy_header((six_million,)), NPY, BAD),
        case("npy 6M uint8 (1, 6000000)", npy_header((1, six_million)), NPY, BAD_OR_TOO_LARGE),
        case("npy 6M uint8 (6000000, 1)", npy_header((six_million, 1)), NPY, BAD_OR_TOO_LARGE),
        case("npy 6M uint8 (1, 1, 6000000)", npy_header((1, 1, six_million)), NPY, BAD_OR_TOO_LARGE),
        case("npy 6M uint8 (2, 3000000)", npy_header((2, six_million // 2)), NPY, BAD_OR_TOO_LARGE),
        case("npy 6M uint8 (6, 1000, 1000)", npy_header((6, 1000, 1000)), NPY, BAD),
        case("npy 6M uint8 (1, 1000, 1000, 6)", npy_header((1, 1000, 1000, 6)), NPY, BAD),
        case("npy (100000, 100000, 3)", npy_header((100_000, 100_000, 3)), NPY, TOO_LARGE),
        case("npy (65, 16, 16, 3)", npy_header((decoders.MAX_BATCH + 1, 16, 16, 3)), NPY, TOO_LARGE),
        case("npy (64, 3, 6000, 6000)", npy_header((decoders.MAX_BATCH, 3, 6000, 6000)), NPY, TOO_LARGE),
        case("npy shape of 2**62", npy_header((2**62, 2**62)), NPY, TOO_LARGE),
        case("npy complex", npy_header((16, 16), "<c16"), NPY, BAD),
        case("npy of strings", npy(np.array([["ab"] * 16] * 16)), NPY, BAD),
        case("npy of objects (a pickle)", npy(np.array([{"a": 1}], dtype=object)), NPY, BAD),
        case("npy shorter than its header says", npy_header((16, 16, 3)), NPY, BAD),
        case("npy of NaN", npy(np.full((16, 16), np.nan, np.float32)), NPY, BAD),
        case("npy 5-D", npy_header((1, 1, 16, 16, 3)), NPY, BAD),
        case("npy header of 20 kB", b"\x93NUMPY\x01\x00" + struct.pack("<H", 65535) + b" " * 20_000, NPY, BAD),
    ]


def _images() -> list[Case]:
    over = decoders.MAX_PIXELS + 1_000_000
    side = int(over**0.5)
    return [
        case("PNG 20000x1 (~100 bytes)", png("L", (20000, 1)), PNG, BAD),
        case("PNG 1x20000", png("L", (1, 20000)), PNG, BAD),
        case("PNG 1x5000", png("L", (1, 5000)), PNG, BAD),
        case("PNG claiming 20000x1", png_claiming(20000, 1), PNG, BAD),
        case("PNG claiming 65535x2", png_claiming(65535, 2), PNG, BAD_OR_TOO_LARGE),
        case("PNG claiming 41 MP", png_claiming(side, side), PNG, TOO_LARGE),
        case("PNG claiming 30000x30000", png_claiming(30000, 30000), PNG, TOO_LARGE),
        case("PNG claiming 0x0", png_claiming(0, 0), PNG, BAD),
        case("PNG 1-bit 20000x20000", png("1", (20000, 20000)), PNG, TOO_LARGE),
        case("JPEG claiming 41 MP", jpeg_claiming(side, side), JPEG, TOO_LARGE),
        case("JPEG claiming 65000x65000", jpeg_claiming(65000, 65000), JPEG, TOO_LARGE),
        case("JPEG claiming 65000x4", jpeg_claiming(65000, 4), JPEG, BAD_OR_TOO_LARGE),
        case("BMP claiming 41 MP", bmp_claiming(side, side), "image/bmp", BAD_OR_TOO_LARGE),
        case("TIFF claiming 41 MP", tiff16(ramp(4, 4), claim=(side, side)), TIFF, TOO_LARGE),
        case("TIFF claiming 20000x1", tiff16(ramp(4, 4), claim=(20000, 1)), TIFF, BAD),
        case("empty image", b"", JPEG, BAD),
        case("an EPS (Ghostscript) as image/png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", PNG, BAD),
        case("an image as text/csv", png(), "text/csv", {415}),
        case("no content type", png(), None, {400, 415}),
    ]


def _headers() -> list[Case]:
    """Header names in any case (HTTP names are case-insensitive): the answer of the lower-case request."""
    image = png("RGB", (40, 30), (120, 80, 40))
    return [
        case("CONTENT-TYPE in capitals", image, None, {200}, {"CONTENT-TYPE": PNG}),
        case("content type value in capitals", image, "IMAGE/PNG", {200}),
        case("ACCEPT in capitals", image, PNG, {200}, {"ACCEPT": JSON}),
        case("ACCEPT text/csv in capitals", image, PNG, {406}, {"ACCEPT": "text/csv"}),
        case("custom attributes in capitals", image, PNG, {200}, {"X-AMZN-SAGEMAKER-CUSTOM-ATTRIBUTES": "top_k=2"}),
        case("custom attributes top_k=0 in capitals", image, PNG, BAD, {"x-amzn-sagemaker-custom-attributes": "top_k=0"}),
    ]


def _deep_images() -> list[Case]:
    """16-bit images: a 200 with the answer of their 8-bit equivalent (compared by the HTTP test)."""
    grey = ramp()
    rgb = np.stack([grey, grey[::-1], grey[:, ::-1]], axis=-1)
    return [case("16-bit grey PNG", png16(grey), PNG, {200}), case("16-bit grey TIFF", tiff16(grey), TIFF, {200}),
            case("16-bit RGB PNG", png16(rgb), PNG, {200}), case("16-bit RGB TIFF", tiff16(rgb), TIFF, {200}),
            case("16-bit grey+alpha PNG", png16(np.stack([grey, np.full_like(grey, 65535)], -1)), PNG, {200})]


@functools.cache
def cases() -> tuple[Case, ...]:
    return tuple(_big_integers() + _arrays() + _images() + _headers() + _deep_images())


def worst_admitted() -> list[Case]:
    """The largest bodies the decoders still accept: what a burst that tests memory sends (each a correct 200)."""
    side = int(decoders.MAX_PIXELS**0.5) - 10  # one image just within the pixel bound
    per_image = decoders.MAX_REQUEST_PIXELS // decoders.MAX_BATCH  # a batch just within the request's budget
    small = int(per_image**0.5) - 10
    return [case("PNG at the pixel bound", png("L", (side, side), 90), PNG, {200}),
            case("JSON batch at the request budget",
                 json_body({"instances": [b64(png("L", (small, small), 140))] * decoders.MAX_BATCH}), JSON, {200}),
            case("npy of 6M uint8 (2000, 3000)", npy(np.full((2000, 3000), 70, np.uint8)), NPY, {200})]
