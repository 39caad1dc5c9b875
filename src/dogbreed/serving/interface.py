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


# Images cropped (or made tensors) and sent to the model at once: 256 224-px crops are 38 MB as uint8. A Batch Transform
# body of 100 MB of thumbnails holds some 17,000 records, whose crops at once would be 2.5 GB (and a copy in the engine).
CHUNK_IMAGES = 256


def in_chunks(images: list) -> list[list]:
    """The images CHUNK_IMAGES at a time (one empty chunk for none: the model still answers, with nothing)."""
    return [images[start:start + CHUNK_IMAGES] for start in range(0, max(1, len(images)), CHUNK_IMAGES)]


def joined(parts: list[dict]) -> dict:
    """The chunks' answers as one, in order: each field is a list with one item an image."""
    if len(parts) == 1:
        return parts[0]
    return {key: [item for part in parts for item in part[key]] for key in parts[0]}


class EngineFed:
    """A predictor whose forward pass runs in a batching engine: decode, resize and crop here (Pillow and NumPy,
    no torch), then ``_ask`` the engine with uint8 pixels (a subclass says how) for ``{"predictions", "dog"}`` or
    ``{"error"}``, a chunk at a time, each by the request's one deadline (``_deadline``)."""

    def __init__(self, model_dir: Path):
        self.meta = read_meta(Path(model_dir))
        self.crop = EvalCrop.from_meta(self.meta)
        self.draft_size = self.crop.resize  # JPEGs decode at the reduced scale training decoded them at

    def _deadline(self) -> float:
        """When (time.monotonic()) the engine's answer to the whole request is due."""
        raise NotImplementedError

    def _ask(self, pixels, k: int, explain: bool, deadline: float) -> dict:
        raise NotImplementedError

    def top_k(self, images, k: int = 5) -> list[list[dict]]:
        return self.answer(images, k)["predictions"]

    def answer(self, images, k: int = 5, explain: bool = False) -> dict:
        """The engine's ``{"predictions", "dog"}`` (and ``"explanations"`` where asked). Each chunk's crops are made
        just before it is sent, and freed after; the chunks share the request's deadline, so that a body of many
        chunks still gets its 503 before the client's timeout."""
        deadline = self._deadline()
        return joined([self._checked(self._ask(self.crop.batch(chunk), int(k), explain, deadline))  # the model bounds k
                       for chunk in in_chunks(images)])

    @staticmethod
    def _checked(answer: dict) -> dict:
        if "error" in answer and 400 <= int(answer.get("status") or 0) < 500:  # the request's own fault
            raise BadRequest(answer["error"])
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def warm_up(self, rounds: int = 1) -> None:
        """The preprocessing only: the engine warms its own model, and may still be loading it."""
        from PIL import Image

        self.crop.batch([Image.new("RGB", (self.crop.resize, self.crop.resize), (127, 127, 127))])
