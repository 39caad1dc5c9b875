"""The report of logits already computed: training writes it at its end from the test pass that scored the split
(issue 22 §1), with no second pass and no serving engine. ``dogbreed evaluate`` computes its logits through the
serving code instead (:mod:`.evaluate`); both render the same figures and page."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import report
from .evaluate import Predictions, report_context, scores_of


def write_report(out_dir: Path, logits: np.ndarray, labels: np.ndarray, paths: list[str], class_names: list[str],
                 temperature: float | None, settings: list[tuple[str, str]], model: dict, data: dict,
                 confusion_csv: str = "confusion.csv") -> Path:
    """report.html in ``out_dir`` from raw ``logits`` (before the temperature), their ``labels`` and photo ``paths``
    (one per row: the worst errors' thumbnails). ``model``: arch, classes, source, engine; ``data``: path, name;
    ``confusion_csv``: the full matrix beside the report (training writes its own)."""
    found = Predictions(paths=[Path(p) for p in paths], labels=[int(x) for x in labels], scores=list(logits))
    results = scores_of(found, class_names, temperature)
    context = report_context(results, class_names, settings, model, data)
    context["confusion_csv"] = confusion_csv
    return report.write(Path(out_dir), context)
