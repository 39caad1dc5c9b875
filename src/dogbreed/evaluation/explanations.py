"""The report's explanation overlays and not-a-dog figures: the endpoint's own code (:mod:`dogbreed.explain`, the
served dog head), on the worst errors and on one photo of each most confused pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..explain import Explainer
from ..serving.decoders import decode_image

PAIR_EXAMPLES = 8  # the most confused pairs shown with a photo and its overlay


def _overlay(explainer: Explainer, predictor, path: Path, target: int) -> str | None:
    """The base64 PNG of ``target``'s heatmap over the photo as the endpoint crops it; None if it cannot be read."""
    try:
        image = decode_image(Path(path).read_bytes(), predictor.draft_size)
    except Exception:  # the photo was read once already; a failure here costs its overlay, not the report
        return None
    return explainer.explain(predictor.tensor([image]), [target], predictor.class_names)[0]["heatmap_png"]


def add_overlays(model_dir: Path, predictor, results: dict, paths: list[Path], labels: np.ndarray,
                 predicted: np.ndarray) -> None:
    """``explanation`` (the answered breed's heatmap) into each worst error, and ``examples`` (a photo of the pair,
    with its overlay) into the most confused pairs, in ``results``."""
    explainer = Explainer(Path(model_dir))
    index = {name: i for i, name in enumerate(predictor.class_names)}
    for error in results["worst_errors"]:
        error["explanation"] = _overlay(explainer, predictor, Path(error["path"]), index[error["predicted"]])
    for pair in results["pairs"][:PAIR_EXAMPLES]:
        true, answered = index[pair["true"]], index[pair["predicted"]]
        found = np.nonzero((labels == true) & (predicted == answered))[0]
        if len(found):
            path = paths[int(found[0])]
            pair["example"] = {"name": path.name, "explanation": _overlay(explainer, predictor, path, answered)}


def dog_figures(dog_check, scores: list[float]) -> dict:
    """The share of this split's photos (all dogs) the served dog check flags, with its method and threshold."""
    flags = [not v["is_dog"] for v in dog_check.verdicts(scores)]
    return {"method": dog_check.method, "threshold": dog_check.threshold, "images": len(flags),
            "flagged": float(np.mean(flags)) if flags else 0.0,
            "lowest_score": float(min(scores)) if scores else None}
