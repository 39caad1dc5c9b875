"""Client errors that carry their HTTP status, and the one mapping from any exception to its HTTP answer that both
fronts use (:func:`http_error`: the native front directly, multi-model-server's through the transformer)."""

from __future__ import annotations

import logging
from http import HTTPStatus

from sagemaker_inference.errors import BaseInferenceToolkitError

log = logging.getLogger("dogbreed.serving.transformer")


class RequestError(BaseInferenceToolkitError):
    """A client's mistake: a 4xx with a message; the server goes on serving."""

    status = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str):
        super().__init__(int(self.status), message, message)


class BadRequest(RequestError):
    status = HTTPStatus.BAD_REQUEST


class PayloadTooLarge(RequestError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(RequestError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class NotAcceptable(RequestError):
    status = HTTPStatus.NOT_ACCEPTABLE


def http_error(exc: BaseException, trace: str) -> tuple[int, str, int | None]:
    """(status, message, Retry-After seconds or None) of a request that raised ``exc``: a status the error carries
    (ours and the toolkit's), 507 out of memory, else 500 with the reason (a bug of ours). Logged here, the
    traceback with a 5xx only: the client gets the message, never the traceback."""
    if isinstance(exc, BaseInferenceToolkitError):
        status, message = int(exc.status_code), str(exc.message)
    elif isinstance(exc, MemoryError):
        status, message = int(HTTPStatus.INSUFFICIENT_STORAGE), "out of memory"
    else:
        status, message = int(HTTPStatus.INTERNAL_SERVER_ERROR), f"{exc.__class__.__name__}: {exc}"
    if status >= 500:
        log.error("inference failed (%d): %s\n%s", status, message, trace)
    else:
        log.info("client error %d: %s", status, message)
    retry_after = getattr(exc, "retry_after", None)
    return status, message, int(retry_after) if retry_after else None
