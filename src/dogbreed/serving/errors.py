"""Client errors that carry their HTTP status (the toolkit turns them into the response status)."""

from __future__ import annotations

from http import HTTPStatus

from sagemaker_inference.errors import BaseInferenceToolkitError


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
