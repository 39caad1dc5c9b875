"""The inference handler: ``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn`` (and the warm-up).

The sagemaker-inference toolkit's Transformer calls these (SAGEMAKER_PROGRAM points here). The model
is rebuilt from the training artifacts; preprocessing is the training package's own.
"""

from __future__ import annotations

import json
import logging
import re

from . import content_types as ct
from . import decoders, heap
from .answers import refuse_non_dogs
from .engine import RemotePredictor
from .errors import BadRequest, NotAcceptable, PayloadTooLarge
from .jsonlines import answer_lines, decode_records
from .settings import ServingSettings, yes_or_no

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
MAX_TOP_K = 1000  # more than any model's classes: the model bounds it further
_DIGITS = re.compile(r"[+-]?[0-9]{1,12}")
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
# A request that decoded more pixels than this (12 MB as RGB; a phone JPEG at the draft scale is far less) gives the
# freed memory back to the system after it: trimming costs milliseconds, a big decode far more.
TRIM_AFTER_PIXELS = 4_000_000


# One model per worker process (multi-model-server): the decode scale of the model this worker serves.
_draft_size: int | None = None
# How many 6 MB requests the body limit allows (ServingSettings.scale): the decoders' budgets scale with it.
_scale: float = 1.0
# A JSON-lines body's records (decoders.json_lines_records)
_records_bound: int = decoders.MAX_BATCH


def configure(settings: ServingSettings) -> None:
    """The serving settings this process's requests are decoded under. ``model_fn`` reads them (a worker of
    multi-model-server); a front that loads its model itself (the native one) passes its own."""
    global _scale, _records_bound
    _scale = settings.scale
    _records_bound = decoders.json_lines_records(settings.scale, settings.batch)


def set_draft_size(size: int | None) -> None:
    """The scale JPEGs decode at in ``input_fn`` (the served model's resize: training decoded them so). ``model_fn``
    sets it; a front that loads its model itself (the native one) sets it here."""
    global _draft_size
    _draft_size = None if size is None else int(size)


def gpu_id_of(context) -> int | None:
    """The GPU multi-model-server assigned this worker (round-robin over the host's GPUs); None on CPU hosts."""
    properties = getattr(context, "system_properties", None) or {}
    gpu_id = properties.get("gpu_id")
    return None if gpu_id is None else int(gpu_id)


def model_fn(model_dir, context=None):
    """The toolkit passes its context because this function takes a second parameter. A worker's settings are
    read here, once (its concurrency is not asked: the launcher planned it)."""
    settings = ServingSettings.from_environ(cores=1, gpus=0)
    if settings.engine_socket:  # the engine holds the model and batches all workers' requests
        predictor = RemotePredictor(model_dir, settings.engine_socket, settings.engine_wait_s)
    else:  # torch only here: a worker of the engine never imports it
        import torch

        from .hardware import warn_if_cuda_is_missing
        from .predictor import Predictor, threads_per_worker

        warn_if_cuda_is_missing(torch.cuda.is_available())
        threads = threads_per_worker(settings.workers or 1, settings.threads)
        predictor = Predictor(model_dir, threads=threads, graph=settings.graph, gpu_id=gpu_id_of(context))
    set_draft_size(predictor.draft_size)
    configure(settings)
    log.info("model %s loaded from %s (%s)", predictor.meta["arch"], model_dir, predictor.describe())
    return predictor


def model_warmup_fn(model_dir, model):
    model.warm_up()


def _header(context, name: str):
    if context is None:
        return None
    try:
        properties = context.request_processor[0].get_request_properties()
    except (AttributeError, IndexError, TypeError):
        return None
    return ct.header(properties, name)


def _attribute(attributes: str | None, names: tuple[str, ...]):
    """The value of ``name=value`` in SageMaker's CustomAttributes (comma- or semicolon-separated), or None."""
    raw = None
    for part in str(attributes or "").replace(";", ",").split(","):
        key, _, value = part.partition("=")
        if key.strip().lower() in names:
            raw = value.strip()
    return raw


def flag_from(attributes: str | None, options: dict, name: str) -> bool:
    """A yes/no option from the JSON body (``true``/``false``) or the ``name=true`` custom attribute; off by default."""
    raw = options.get(name)
    if raw is None:
        raw = _attribute(attributes, (name, name.replace("_", "-")))
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, str):
        try:
            return yes_or_no(raw)
        except ValueError:
            pass  # refused below, by the option's name
    raise BadRequest(f"{name} must be true or false, got {str(raw)[:40]!r}")


def top_k_from(attributes: str | None, options: dict) -> int:
    """k from the JSON body's ``top_k`` or the ``top_k=K`` custom attribute (SageMaker's CustomAttributes)."""
    raw = options.get("top_k")
    if raw is None and attributes:
        raw = _attribute(attributes, ("top_k", "top-k", "k"))
    if raw is None:
        return DEFAULT_TOP_K
    k = _integer(raw)
    if k is None:
        raise BadRequest(f"top_k must be a whole number, got {str(raw)[:40]!r}")
    if k < 1:
        raise BadRequest(f"top_k must be at least 1, got {k}")
    return min(k, MAX_TOP_K)


def _integer(raw) -> int | None:
    """A JSON integer or a string of digits; None for anything else (true, 2.9, 1e999, "3.0", "")."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and _DIGITS.fullmatch(raw.strip()):
        return int(raw.strip())
    return None


FLAGS = ("explain", "reject_non_dogs")
# Each explained photo costs an eager pass with gradients, un-batched, on the engine's thread: a request may not
# turn one body into hundreds of them (a 64-image JSON body, a 1,000-record JSON-lines body).
MAX_EXPLAINED = 8


def _explained_at_most(images: list, explain: bool) -> None:
    if explain and len(images) > MAX_EXPLAINED:
        raise PayloadTooLarge(f"explain=true takes at most {MAX_EXPLAINED} images a request, this one holds "
                              f"{len(images)}: send the photos to explain in requests of their own")


def input_fn(input_data, content_type, context=None):
    """The request body (bytes) and its Content-Type, decoded: ``{"images": [RGB PIL images], "top_k": int,
    "explain": bool, "reject_non_dogs": bool}``.

    Each option comes from a JSON body's key, else the ``X-Amzn-SageMaker-Custom-Attributes`` header (``top_k=3``,
    ``explain=true``), else its default (5, false, false). An unreadable body or an unsupported type raises the 4xx
    error the server answers with. JSON lines (:mod:`.jsonlines`) add ``"records"``: each record's span of the
    images and its options, or its error.
    """
    _answerable(content_type, _header(context, "accept"))
    attributes = _header(context, CUSTOM_ATTRIBUTES)
    flags = {name: flag_from(attributes, {}, name) for name in FLAGS}
    if ct.base(content_type) in ct.JSONLINES_TYPES:
        return _records(input_data, top_k_from(attributes, {}), flags)
    images, options = decoders.decode(input_data, content_type, draft_size=_draft_size, scale=_scale)
    data = {"images": images, "top_k": top_k_from(attributes, options),
            **{name: flag_from(attributes, options, name) for name in FLAGS}}
    _explained_at_most(images, data["explain"])
    return data


def _records(body, default_top_k: int, flags: dict) -> dict:
    """A JSON-lines body: each line a JSON request of its own, under one pixel budget for the whole body (a record
    past it gets its 413 line, as any unreadable record gets its error line)."""
    budget = decoders.PixelBudget(decoders.request_pixels(_scale))

    def record(line: bytes):
        images, options = decoders.decode_json(line, _draft_size, budget)
        own = {name: flag_from(None, options, name) for name in FLAGS if name in options}
        return images, ({"top_k": top_k_from(None, options)} if "top_k" in options else {}) | own

    records = decode_records(decoders.as_bytes(body), record, default_top_k, _records_bound, flags)
    spans = [slot for slot in records.slots if isinstance(slot, tuple)]
    top_k = max([slot[2] for slot in spans], default=default_top_k)
    explain = any(slot[3]["explain"] for slot in spans)
    _explained_at_most(records.images, explain)  # every image of the body is explained where one record asks
    return {"images": records.images, "top_k": top_k, "explain": explain, "reject_non_dogs": False,
            "records": records.slots}


def predict_fn(data, model):
    """The model's top k and dog verdicts (and explanations where asked). The decoded images are dropped from
    ``data`` once cropped, so that a big request's pixels are freed, and handed back to the system, before its
    answer is written (the caller holds ``data`` until then)."""
    images = data.pop("images")
    pixels = sum(image.width * image.height for image in images)
    # JSON lines whose every record was refused: nothing to run, each record has its error line
    ran = images or "records" not in data
    answer = model.answer(images, data["top_k"], data.get("explain", False)) if ran else {"predictions": [], "dog": []}
    prediction = {"predictions": answer["predictions"], "model": model.meta["arch"], "dog": answer["dog"]}
    if "explanations" in answer:
        prediction["explanations"] = answer["explanations"]
    if "records" in data:
        prediction["records"] = data["records"]
    elif data.get("reject_non_dogs"):
        prediction = refuse_non_dogs(prediction)
    del images
    if pixels > TRIM_AFTER_PIXELS:
        heap.trim()
    return prediction


def _answer_type(accept: str | None, lines: bool) -> str:
    kind = ct.pick_lines_response(accept) if lines else ct.pick_response(accept)
    if kind is None:
        raise NotAcceptable(f"cannot answer in {str(accept)[:100]!r}; this endpoint answers "
                            f"{', '.join(ct.RESPONSE_TYPES)}")
    return kind


def _answerable(content_type: str | None, accept: str | None) -> None:
    """The 406 from the head alone, before the body is decoded and the model runs. No Accept, or */*, takes the
    front's default answer type, which its settings checked at start."""
    if accept and accept.strip() != ct.ANY:
        _answer_type(accept, ct.base(content_type) in ct.JSONLINES_TYPES)


def output_fn(prediction, accept):
    """JSON; JSON lines where asked (one line); a JSON-lines request's answer is JSON lines, one a record."""
    records = prediction.get("records")
    kind = _answer_type(accept, records is not None)
    if records is not None:
        return answer_lines(records, prediction), kind
    return json.dumps(prediction) + ("\n" if kind == ct.JSONLINES else ""), kind
