"""The inference handler: ``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn`` (and the warm-up).

The sagemaker-inference toolkit's Transformer calls these (SAGEMAKER_PROGRAM points here). The model
is rebuilt from the training artifacts; preprocessing is the training package's own.
"""

from __future__ import annotations

import json
import logging
import os
import re

from .. import env as envnames
from . import content_types as ct
from . import heap
from .decoders import decode
from .engine import RemotePredictor
from .errors import BadRequest, NotAcceptable

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
MAX_TOP_K = 1000  # more than any model's classes: the model bounds it further
_DIGITS = re.compile(r"[+-]?[0-9]{1,12}")
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
# A request that decoded more pixels than this (12 MB as RGB; a phone JPEG at the draft scale is far less) gives the
# freed memory back to the system after it: trimming costs milliseconds, a big decode far more.
TRIM_AFTER_PIXELS = 4_000_000


def _workers() -> int:
    try:
        return max(1, int(os.environ.get(envnames.SAGEMAKER_MODEL_SERVER_WORKERS) or 1))
    except ValueError:
        return 1


# One model per worker process (multi-model-server): the decode scale of the model this worker serves.
_draft_size: int | None = None


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
    """The toolkit passes its context because this function takes a second parameter."""
    engine_socket = os.environ.get(envnames.DOGBREED_ENGINE_SOCKET)
    if engine_socket:  # the engine holds the model and batches all workers' requests
        predictor = RemotePredictor(model_dir, engine_socket)
    else:  # torch only here: a worker of the engine never imports it
        import torch

        from .hardware import warn_if_cuda_is_missing
        from .predictor import Predictor, threads_per_worker

        warn_if_cuda_is_missing(torch.cuda.is_available())
        predictor = Predictor(model_dir, threads=threads_per_worker(_workers()), gpu_id=gpu_id_of(context))
    set_draft_size(predictor.draft_size)
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


def top_k_from(attributes: str | None, options: dict) -> int:
    """k from the JSON body's ``top_k`` or the ``top_k=K`` custom attribute (SageMaker's CustomAttributes)."""
    raw = options.get("top_k")
    if raw is None and attributes:
        for part in str(attributes).replace(";", ",").split(","):
            key, _, value = part.partition("=")
            if key.strip().lower() in ("top_k", "top-k", "k"):
                raw = value.strip()
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


def input_fn(input_data, content_type, context=None):
    """The request body (bytes) and its Content-Type, decoded: ``{"images": [RGB PIL images], "top_k": int}``.

    ``top_k`` comes from a JSON body's ``top_k``, else the ``X-Amzn-SageMaker-Custom-Attributes`` header
    (``top_k=3``), else 5. An unreadable body or an unsupported type raises the 4xx error the server answers with.
    """
    images, options = decode(input_data, content_type, draft_size=_draft_size)
    return {"images": images, "top_k": top_k_from(_header(context, CUSTOM_ATTRIBUTES), options)}


def predict_fn(data, model):
    """The model's top k. The decoded images are dropped from ``data`` once cropped, so that a big request's pixels
    are freed, and handed back to the system, before its answer is written (the caller holds ``data`` until then)."""
    images = data.pop("images")
    pixels = sum(image.width * image.height for image in images)
    prediction = {"predictions": model.top_k(images, data["top_k"]), "model": model.meta["arch"]}
    del images
    if pixels > TRIM_AFTER_PIXELS:
        heap.trim()
    return prediction


def output_fn(prediction, accept):
    kind = ct.pick_response(accept)
    if kind is None:
        raise NotAcceptable(f"cannot answer in {accept!r}; this endpoint answers {', '.join(ct.RESPONSE_TYPES)}")
    return json.dumps(prediction), kind
