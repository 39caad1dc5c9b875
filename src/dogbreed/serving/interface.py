"""The one predictor interface that ``predict_fn`` calls, whatever holds the model, and the part its two
engine-fed kinds share. Torch-free: a multi-model-server worker that only decodes must not import torch.

- :class:`~.predictor.Predictor`: the model in this process (a GPU worker of the ``mms`` front, tests, benchmarks);
- :class:`~.native_engine.InProcessPredictor`: the native front's batching engines in this process;
- :class:`~.engine.RemotePredictor`: an ``mms`` worker's link to the engine process over a unix socket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import BadRequest
from .pixels import EvalCrop, read_meta


@runtime_checkable
class ServingPredictor(Protocol):
    """What the handler needs of a model: its metadata, the JPEG draft scale, top-k of decoded images, and the
    whole answer (top-k, the dog verdict, explanations where asked)."""

    meta: dict
    draft_size: int

    def top_k(self, images, k: int = 5) -> list[list[dict]]: ...

    def answer(self, images, k: int = 5, explain: bool = False) -> dict: ...

    def warm_up(self, rounds: int = 1) -> None: ...

    def describe(self) -> str: ...


class EngineFed:
    """A predictor whose forward pass runs in a batching engine: decode, resize and crop here (Pillow and NumPy,
    no torch), then ``_ask`` the engine with uint8 pixels (a subclass says how) for ``{"predictions", "dog"}`` or
    ``{"error"}``."""

    def __init__(self, model_dir: Path):
        self.meta = read_meta(Path(model_dir))
        self.crop = EvalCrop.from_meta(self.meta)
        self.draft_size = self.crop.resize  # JPEGs decode at the reduced scale training decoded them at

    def _ask(self, pixels, k: int, explain: bool = False) -> dict:
        raise NotImplementedError

    def top_k(self, images, k: int = 5) -> list[list[dict]]:
        return self.answer(images, k)["predictions"]

    def answer(self, images, k: int = 5, explain: bool = False) -> dict:
        """The engine's ``{"predictions", "dog"}`` (and ``"explanations"`` where asked)."""
        answer = self._ask(self.crop.batch(images), int(k), explain)  # the engine's model bounds k
        if "error" in answer and 400 <= int(answer.get("status") or 0) < 500:  # the request's own fault
            raise BadRequest(answer["error"])
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def warm_up(self, rounds: int = 1) -> None:
        """The preprocessing only: the engine warms its own model, and may still be loading it."""
        from PIL import Image

        self.crop.batch([Image.new("RGB", (self.crop.resize, self.crop.resize), (127, 127, 127))])
