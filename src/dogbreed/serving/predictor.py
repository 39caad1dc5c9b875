"""The trained model in memory: preprocessing (the training definition), forward, top-k.

Used by the endpoint's handler, by tests as "the in-process model", and by the benchmarks.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from PIL import Image

from .. import accel, dogness
from ..env import DOGBREED_SERVE_GRAPH
from ..presets import to_rgb
from . import graph
from .errors import BadRequest
from .interface import in_chunks, joined

log = logging.getLogger(__name__)


class ModelInputs:
    """What the model's metadata says about its inputs: the preprocessing (training's own) and the classes."""

    def __init__(self, meta: dict, prep):
        self.meta, self.prep = meta, prep
        self.class_names = list(meta["class_names"])
        self.transform = prep.eval_transform()
        self.draft_size = prep.resize  # JPEGs decode at the reduced scale training decoded them at
        # fitted on the valid split at the end of training (evaluation.calibration); 1 for models saved before it
        self.temperature = float(meta.get("temperature") or 1.0)
        self.dog_check = dogness.DogCheck.from_meta(meta)  # threshold set at the end of training (dogness)

    def tensor(self, images) -> torch.Tensor:
        return torch.stack([self.transform(to_rgb(image, self.draft_size)) for image in images])

    def blank_image(self):
        return Image.new("RGB", (self.prep.resize, self.prep.resize), (127, 127, 127))


class Predictor(ModelInputs):
    """The model on this process's device. ``gpu_id``: the GPU multi-model-server gave this worker (its
    context's ``gpu_id``); each worker of a multi-GPU host then holds its model on its own GPU. The
    precision is training's rule (:func:`accel.pick`): on CUDA, bf16 where the GPU has it natively, else fp16."""

    def __init__(self, model_dir: Path, precision: str = "auto", threads: int | None = None, graph: str | None = None,
                 gpu_id: int | None = None, channels_last: bool | None = None):
        # the served head also gives the dog score (dogness.DogHead): one column more, no second pass
        self.model, meta, prep = dogness.load_served(Path(model_dir))
        super().__init__(meta, prep)
        self.model_dir = Path(model_dir)
        self._explainer = None  # loaded on the first request that asks for an explanation
        if threads:
            torch.set_num_threads(max(1, int(threads)))
        mode = graph or "auto"
        self.acc = self._accelerator(precision, gpu_id, mode, channels_last)
        self.model = self.acc.prepare_model(self.model).eval()
        self.graph = self._freeze(mode)

    def _accelerator(self, precision: str, gpu_id: int | None, mode: str, channels_last: bool | None) -> accel.Accelerator:
        """Training's rule, except where its CPU probe cannot change what is served: without native bf16 kernels
        the candidates are fp32 either way, and fp32 is served as the frozen graph, whose pre-packed kernels take
        either layout at the same speed. ``channels_last``: the layout measured before with this precision."""
        if precision == "auto" and mode != "eager" and not torch.cuda.is_available() and not accel.cpu_supports_bf16():
            return accel.Accelerator(torch.device("cpu"), "fp32", False,
                                     "no native bf16 kernels on this CPU: fp32 as a frozen graph, nothing to measure")
        acc = accel.pick(precision, local_rank=int(gpu_id or 0), training=False, model=self.model,
                         input_size=self.prep.input_size)
        if channels_last is not None and acc.device.type == "cpu" and acc.channels_last != channels_last:
            acc = dataclasses.replace(acc, channels_last=channels_last)
        return acc

    def _freeze(self, mode: str) -> str:
        """Serve a frozen TorchScript graph on fp32 CPUs (``auto``), where it gives the same answers."""
        if mode not in graph.MODES:
            raise ValueError(f"{DOGBREED_SERVE_GRAPH}={mode!r}: choose one of {', '.join(graph.MODES)}")
        wanted = mode == "frozen" or (mode == "auto" and self.acc.device.type == "cpu" and self.acc.precision == "fp32")
        if not wanted:
            return "eager"
        if self.acc.precision != "fp32":
            raise ValueError(f"{DOGBREED_SERVE_GRAPH}=frozen needs fp32; this model runs in {self.acc.precision}")
        frozen = graph.freeze(self.model, self.prep.input_size, self.acc.channels_last)
        if frozen is None:
            return "eager"
        self.model = frozen
        return "frozen"

    def describe(self) -> str:
        return f"{self.acc.describe()} graph={self.graph}"

    @torch.inference_mode()
    def probabilities(self, images) -> torch.Tensor:
        return self.tensor_probabilities(self.tensor(images))

    @torch.inference_mode()
    def tensor_outputs(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(breed logits, dog scores) of one forward pass."""
        batch = self.acc.prepare_batch(batch)
        with self.acc.autocast():
            outputs = self.model(batch)
        return dogness.split(outputs.float().cpu())

    def tensor_logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.tensor_outputs(batch)[0]

    @torch.inference_mode()
    def tensor_probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Calibrated: the logits over the model's temperature (every serving path comes through here)."""
        return torch.softmax(self.tensor_logits(batch) / self.temperature, dim=1)

    def top_k(self, images, k: int = 5) -> list[list[dict]]:
        return self.top_k_tensors(self.tensor(images), k)

    def top_k_tensors(self, batch: torch.Tensor, k: int = 5) -> list[list[dict]]:
        """Top-k of preprocessed images (what :meth:`tensor` makes)."""
        return self.answer_tensors(batch, k)["predictions"]

    def answer(self, images, k: int = 5, explain: bool = False) -> dict:
        """``{"predictions", "dog"}``, and ``"explanations"`` where asked (docs/serving.md, the answer's fields); the
        images made tensors a chunk at a time (``interface.CHUNK_IMAGES``)."""
        return joined([self._answer_chunk(chunk, k, explain) for chunk in in_chunks(images)])

    def _answer_chunk(self, images, k: int, explain: bool) -> dict:
        batch = self.tensor(images)
        answer = self.answer_tensors(batch, k)
        if explain:
            answer["explanations"] = self.explain_tensors(batch, answer["predictions"])
        return answer

    def explain_tensors(self, batch: torch.Tensor, predictions: list[list[dict]]) -> list[dict]:
        """The top breed's heatmap over each photo: its own eager pass with gradients (never the frozen graph)."""
        from ..explain import Explainer, NotExplainable

        if self._explainer is None:
            try:
                self._explainer = Explainer(self.model_dir, self.acc.device)
            except NotExplainable as exc:  # remembered: the model does not change, nor would the answer
                self._explainer = BadRequest(str(exc))
        if isinstance(self._explainer, BadRequest):
            raise self._explainer
        return self._explainer.explain(batch, [rows[0]["index"] for rows in predictions], self.class_names)

    def answer_tensors(self, batch: torch.Tensor, k: int = 5) -> dict:
        """Top-k and the dog verdicts of preprocessed images, from one forward pass."""
        logits, scores = self.tensor_outputs(batch)
        probs = torch.softmax(logits / self.temperature, dim=1)
        k = max(1, min(int(k), len(self.class_names)))
        # ranked by the logits: probabilities that underflow to equal zeros would leave their order to chance
        indices = logits.topk(k, dim=1).indices
        values = probs.gather(1, indices)
        predictions = [
            [
                {"breed": self.class_names[i], "index": int(i), "probability": round(float(p), 6)}
                for p, i in zip(row_values.tolist(), row_indices.tolist(), strict=True)
            ]
            for row_values, row_indices in zip(values, indices, strict=True)
        ]
        return {"predictions": predictions, "dog": self.dog_check.verdicts(scores.tolist())}

    def warm_up(self, rounds: int = 3) -> None:
        """Run the forward pass so that oneDNN's kernels are chosen (and a frozen graph is profiled and
        optimised) before the first request."""
        image = self.blank_image()
        for _ in range(rounds):
            self.probabilities([image])


def threads_per_worker(workers: int, configured: int | None = None) -> int:
    """Cores shared between the server's workers, so that they do not oversubscribe the CPU; ``configured``:
    the settings' threads (DOGBREED_SERVE_THREADS), where set."""
    return configured or max(1, accel.available_cores() // max(1, workers))
