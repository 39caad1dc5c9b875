"""dogbreed: a dog breed classifier trained, tuned and served on SageMaker through our own images."""

__version__ = "0.1.0"
