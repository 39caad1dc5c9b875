"""The handler service multi-model-server loads (a module with exactly one class)."""

from sagemaker_inference.default_handler_service import DefaultHandlerService

from .transformer import JsonErrorTransformer


class HandlerService(DefaultHandlerService):
    def __init__(self):
        super().__init__(transformer=JsonErrorTransformer())
