"""``application/jsonlines``: several records in one body, one answer line per record, in order.

Batch Transform with ``SplitType=Line`` and ``BatchStrategy=MultiRecord`` packs as many lines of the input as fit
in ``MaxPayloadInMB`` into one request, and writes back what the container answers. Each line is a record as a
JSON request holds it (``{"image": base64}``, optionally ``"top_k"``, ``"explain"``, ``"reject_non_dogs"``). A
record that cannot be read gets an error line (``{"error": ..., "status": 4xx}``) in its place and the others are
answered: one bad photo must not cost the whole batch, and the output must stay aligned with the input line by line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from PIL import Image

from . import content_types as ct
from .answers import NotADog, refuse_non_dogs
from .errors import BadRequest, PayloadTooLarge, RequestError

JSONLINES = ct.JSONLINES


@dataclass
class Records:
    """The decoded records: every readable image in order, and for each record its images' span or its error."""

    images: list[Image.Image] = field(default_factory=list)
    # (start, stop, top_k, {"explain", "reject_non_dogs"}) or an error
    slots: list[tuple[int, int, int, dict] | dict] = field(default_factory=list)


def lines_of(body: bytes) -> list[bytes]:
    """The non-blank lines (Batch Transform ends each record with a newline, the last one too)."""
    lines = [line for line in body.split(b"\n") if line.strip()]
    if not lines:
        raise BadRequest("empty JSON-lines body: send one JSON record a line")
    return lines


def decode_records(body: bytes, decode_record, default_top_k: int, max_images: int, flags: dict | None = None) -> Records:
    """Each line through ``decode_record(line) -> (images, options)`` (the JSON decoder), its error kept in its
    place; the request's k and ``flags`` (the custom attributes' explain and reject_non_dogs) for records that
    name none. A body of more records than it may hold images is refused
    whole, before any is decoded: each record, even a refused one, costs an answer line, and a few MB of ``{}``
    lines would otherwise cost gigabytes."""
    if body.count(b"\n") > 4 * max_images + 1:  # counted before splitting: blank lines are few in a real body
        raise PayloadTooLarge(f"over {max_images} records in one request; send fewer lines a request")
    lines = lines_of(body)
    if len(lines) > max_images:
        raise PayloadTooLarge(f"{len(lines)} records in one request; at most {max_images}")
    records = Records()
    for number, line in enumerate(lines, start=1):
        try:
            images, options = decode_record(line)
            if len(records.images) + len(images) > max_images:
                raise PayloadTooLarge(f"the request's records hold over {max_images} images; send fewer lines a request")
            top_k = options.get("top_k", default_top_k)
            own = {name: options.get(name, value) for name, value in (flags or {}).items()}
        except RequestError as exc:
            records.slots.append({"error": f"record {number}: {exc.message}", "status": int(exc.status)})
            continue
        start = len(records.images)
        records.images.extend(images)
        records.slots.append((start, len(records.images), top_k, own))
    return records


def answer_lines(slots: list, prediction: dict) -> str:
    """One JSON answer a line, aligned with the input records: what a single-record request would get
    (``predictions``, ``model``, ``dog``, ``explanations`` where the record asked), the error where the record could
    not be read, or where it asked ``reject_non_dogs`` and holds no dog."""
    lines = []
    for number, slot in enumerate(slots, start=1):
        if isinstance(slot, dict):
            lines.append(json.dumps(slot))
            continue
        try:
            lines.append(json.dumps(_record_answer(slot, prediction)))
        except NotADog as exc:
            lines.append(json.dumps({"error": f"record {number}: {exc.message}", "status": int(exc.status)}))
    return "\n".join(lines) + "\n"


def _record_answer(slot: tuple, prediction: dict) -> dict:
    start, stop, top_k, flags = slot
    answer = {"predictions": [rows[:top_k] for rows in prediction["predictions"][start:stop]],
              "model": prediction["model"], "dog": prediction["dog"][start:stop]}
    if flags.get("explain") and "explanations" in prediction:
        answer["explanations"] = prediction["explanations"][start:stop]
    return refuse_non_dogs(answer) if flags.get("reject_non_dogs") else answer
