"""The scores of one evaluated split: top-k accuracy, per-breed precision/recall/F1 (scikit-learn), the confusion
matrix, the most confused pairs and the worst errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose true label is among the ``k`` highest scores (k capped at the number of classes)."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def per_breed(labels: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> list[dict]:
    """One row per breed of the model, in label order; a breed with no photo here has support 0 (and scores 0)."""
    indices = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=indices, zero_division=0)
    return [{"breed": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)]


def confusion(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Rows: the true breed; columns: the answer."""
    return confusion_matrix(labels, predicted, labels=list(range(classes)))


def confused_pairs(matrix: np.ndarray, class_names: list[str], limit: int = 20) -> list[dict]:
    """The off-diagonal cells with the most photos, largest first (ties in label order)."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    order = sorted(zip(rows.tolist(), cols.tolist(), strict=True), key=lambda rc: (-off[rc], rc))[:limit]
    support = matrix.sum(axis=1)
    return [{"true": class_names[r], "predicted": class_names[c], "count": int(off[r, c]),
             "share": float(off[r, c] / support[r]) if support[r] else 0.0} for r, c in order]


def most_confused_breeds(matrix: np.ndarray, limit: int = 20) -> list[int]:
    """The breeds in the most confusions (as the truth or as the answer), for a heatmap small enough to read;
    returned in label order. Breeds in no confusion are left out."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    involvement = off.sum(axis=0) + off.sum(axis=1)
    ranked = [int(i) for i in np.argsort(-involvement, kind="stable") if involvement[i] > 0][:limit]
    return sorted(ranked)


def worst_errors(probs: np.ndarray, labels: np.ndarray, limit: int = 12) -> list[int]:
    """Indices of the wrong top-1 answers given with the highest confidence, most confident first."""
    predicted = probs.argmax(axis=1)
    wrong = np.nonzero(predicted != labels)[0]
    confidence = probs[wrong, predicted[wrong]]
    return [int(i) for i in wrong[np.argsort(-confidence, kind="stable")][:limit]]


def write_confusion_csv(path: Path, matrix: np.ndarray, class_names: list[str]) -> None:
    """The full matrix, as training's confusion.csv: a header of answers, one row per true breed."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *class_names])
        for name, row in zip(class_names, matrix, strict=True):
            writer.writerow([name, *[int(x) for x in row]])
