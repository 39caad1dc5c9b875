"""Serving on the sagemaker-inference toolkit and multi-model-server."""
