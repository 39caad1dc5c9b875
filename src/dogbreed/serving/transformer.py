"""The toolkit's Transformer with two changes: bodies reach ``input_fn`` as bytes (the toolkit would
decode JSON/CSV bodies as UTF-8 first and turn a bad byte into a 500), and errors are answered as
JSON (status, message) with the traceback kept in the log, not sent to the client; and an answer the model gave
is marked for the edge (:class:`CountedModel`)."""

from __future__ import annotations

import json
import logging
import traceback

from sagemaker_inference import content_types, environment, utils
from sagemaker_inference.transformer import Transformer

from . import content_types as ct
from .errors import http_error
from .settings import MODEL_ANSWERED_HEADER

log = logging.getLogger(__name__)


class CountedModel:
    """The served model, counting the answers it gave. Each answer the model gave is marked with
    ``MODEL_ANSWERED_HEADER`` for the edge, which counts only those as a sign of life (:class:`.mms_edge.Prober`):
    a 200 the handler gives without the model (a JSON-lines body whose every record was refused) proves nothing
    about a wedged engine. Counted at the model rather than read off the answer (non-empty predictions), so that it
    says what happened whatever the handler makes of the answer; and a response header of our own worker, never
    taken from the request, so that no client can forge it."""

    def __init__(self, model):
        self.model, self.answers = model, 0

    def __getattr__(self, name):  # meta, draft_size, warm_up, describe: the model's own
        if name == "model":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def answer(self, images, k: int = 5, explain: bool = False) -> dict:
        answer = self.model.answer(images, k, explain)
        self.answers += 1
        return answer

    def top_k(self, images, k: int = 5) -> list[list[dict]]:
        rows = self.model.top_k(images, k)
        self.answers += 1
        return rows


class JsonErrorTransformer(Transformer):
    def validate_and_initialize(self, model_dir=environment.model_dir, context=None):
        super().validate_and_initialize(model_dir=model_dir, context=context)
        if not isinstance(self._model, CountedModel):
            self._model = CountedModel(self._model)

    def transform(self, data, context):
        try:
            properties = context.system_properties
            self.validate_and_initialize(model_dir=properties.get("model_dir"), context=context)
            responses = []
            for index, item in enumerate(data):
                answers = self._model.answers
                body = item.get("body")
                if body is None:
                    body = item.get("data") or b""
                processors = context.request_processor
                request = processors[index if index < len(processors) else 0].get_request_properties()
                content_type, accept = ct.header(request, "content-type"), ct.header(request, "accept")
                if not accept or accept == content_types.ANY:
                    accept = self._environment.default_accept
                result = self._run_handler_function(self._transform_fn, *(self._model, body, content_type, accept))
                response, response_type = result if isinstance(result, tuple) else (result, accept)
                context.set_response_content_type(index, response_type)
                if self._model.answers > answers:
                    context.set_response_header(index, MODEL_ANSWERED_HEADER, "1")
                responses.append(response)
            return responses
        except Exception as exc:  # MemoryError too: every failure gets its JSON answer (errors.http_error)
            return self.handle_error(context, exc, traceback.format_exc())

    @staticmethod
    def handle_error(context, exc, trace):
        status, message, retry_after = http_error(exc, trace)
        # The reason phrase travels in multi-model-server's own frame: printable ASCII only (a phrase echoing
        # a hostile content type in UTF-8 would corrupt the frame and kill the worker).
        phrase = "".join(c if 32 <= ord(c) < 127 else "?" for c in utils.remove_crlf(message))[:200]
        context.set_response_status(code=status, phrase=phrase)
        try:
            context.set_response_content_type(0, ct.JSON)
            if retry_after:  # the engine is down or restarting: when to try again
                context.set_response_header(0, "Retry-After", str(retry_after))
        except Exception:  # an old context without content types: the body still says it all
            log.debug("could not set the error's headers")
        return [json.dumps({"error": message, "status": status})]
