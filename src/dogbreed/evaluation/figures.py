"""The report's pictures as base64 strings to embed: the reliability diagram and the confusion heatmap (matplotlib,
PNG), and photo thumbnails (JPEG)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from ..calibration import Bin, Calibration
from ..presets import open_rgb

THUMBNAIL = 160  # pixels, the longer side


def _pyplot():
    import matplotlib  # slow to import: only when a report is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _reliability_panel(ax, bins: list[Bin], title: str, ece: float) -> None:
    centres = [(b.low + b.high) / 2 for b in bins]
    width = bins[0].high - bins[0].low
    accuracy = [b.accuracy if b.count else 0.0 for b in bins]
    # the gap spans accuracy to mean confidence: above the bar when over-confident, inside it when under-confident
    low = [min(b.accuracy, b.confidence) if b.count else 0.0 for b in bins]
    gap = [abs(b.confidence - b.accuracy) if b.count else 0.0 for b in bins]
    ax.bar(centres, accuracy, width=width, edgecolor="black", color="#4c72b0", label="accuracy")
    ax.bar(centres, gap, bottom=low, width=width, edgecolor="#c44e52", color="#c44e52", alpha=0.35, hatch="//",
           label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy",
           title=f"{title}: ECE {ece:.3f}")
    ax.legend(loc="upper left", fontsize=8)


def reliability_diagram(result: Calibration) -> str:
    """Before and after temperature scaling, side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    _reliability_panel(axes[0], result.bins_before, "before (T = 1)", result.ece_before)
    _reliability_panel(axes[1], result.bins_after, f"after (T = {result.temperature:.3f})", result.ece_after)
    fig.tight_layout()
    return _png(fig)


def confusion_heatmap(matrix: np.ndarray, class_names: list[str], indices: list[int]) -> str | None:
    """The confusion matrix restricted to ``indices`` (rows normalised by each true breed's photos); None if empty."""
    if not indices:
        return None
    plt = _pyplot()
    sub = matrix[np.ix_(indices, indices)].astype(float)
    support = matrix[indices].sum(axis=1, keepdims=True).astype(float)
    shares = np.divide(sub, support, out=np.zeros_like(sub), where=support > 0)
    names = [class_names[i] for i in indices]
    size = max(4.0, 0.38 * len(indices) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set(xlabel="answer", ylabel="true breed")
    for r, c in zip(*np.nonzero(sub), strict=True):
        ax.text(c, r, str(int(sub[r, c])), ha="center", va="center", fontsize=7,
                color="white" if shares[r, c] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true breed's photos")
    fig.tight_layout()
    return _png(fig)


def thumbnail(path: Path) -> str:
    image = open_rgb(path, THUMBNAIL)
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode()
