"""The toolkit's Transformer, answering errors as JSON (status, message) without the traceback."""

from __future__ import annotations

import json
import logging

from sagemaker_inference import utils
from sagemaker_inference.transformer import Transformer

from . import content_types as ct

log = logging.getLogger(__name__)


class JsonErrorTransformer(Transformer):
    @staticmethod
    def handle_error(context, inference_exception, trace):
        status = int(inference_exception.status_code)
        message = str(inference_exception.message)
        if status >= 500:
            log.error("inference failed (%d): %s\n%s", status, message, trace)
        else:
            log.info("client error %d: %s", status, message)
        context.set_response_status(code=status, phrase=utils.remove_crlf(message)[:200])
        try:
            context.set_response_content_type(0, ct.JSON)
        except Exception:  # an old context without content types: the body still says it all
            pass
        return [json.dumps({"error": message, "status": status})]
