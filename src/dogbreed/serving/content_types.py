"""The content types the endpoint reads and writes."""

from __future__ import annotations

JPEG = "image/jpeg"
PNG = "image/png"
X_IMAGE = "application/x-image"
IMAGE_TYPES = (JPEG, PNG, X_IMAGE, "image/webp", "image/bmp", "image/gif", "image/tiff")
JSON = "application/json"
NPY = "application/x-npy"
JSONLINES = "application/jsonlines"  # one JSON record a line (Batch Transform's SplitType=Line): jsonlines.py
JSONLINES_TYPES = (JSONLINES, "application/jsonl", "application/x-jsonlines")
ANY = "*/*"
REQUEST_TYPES = (*IMAGE_TYPES, JSON, NPY, JSONLINES)
RESPONSE_TYPES = (JSON, JSONLINES)


def base(content_type: str | None) -> str:
    """``'image/jpeg; charset=x'`` -> ``'image/jpeg'`` (lower case)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def pick_response(accept: str | None) -> str:
    """The response type for an Accept header; None where we can give none of what is accepted."""
    if not accept:
        return JSON
    for part in accept.split(","):
        kind = base(part)
        if kind in RESPONSE_TYPES:
            return kind
        if kind in JSONLINES_TYPES:
            return JSONLINES
        if kind in (ANY, "application/*"):
            return JSON
    return None


def header(headers: dict | None, name: str):
    """A request header by name in any case (HTTP names are case-insensitive; the toolkit's own lookup takes
    ``Content-Type`` and ``content-type`` only, so ``CONTENT-TYPE: image/jpeg`` got a 415)."""
    wanted = name.lower()
    for key, value in (headers or {}).items():
        if str(key).lower() == wanted:
            return value
    return None


def pick_lines_response(accept: str | None) -> str | None:
    """The response type of a JSON-lines request: JSON lines for an Accept of JSON lines, JSON (the fronts turn an
    absent Accept and ``*/*`` into the default, JSON, before the handler sees it: the lines are JSON each), or
    any; None otherwise."""
    if not accept:
        return JSONLINES
    for part in accept.split(","):
        if base(part) in (*JSONLINES_TYPES, JSON, ANY, "application/*"):
            return JSONLINES
    return None
