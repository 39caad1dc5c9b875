"""Temperature scaling (Guo et al., 2017) and the calibration figures: NLL, expected calibration error, reliability bins.

Everything works on logits, or on anything that differs from the logits by a constant per row (log-probabilities):
softmax, and so every figure here, ignores that constant. NumPy and SciPy only, so training can call it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

BINS = 15  # the usual ECE: 15 equal-width confidence bins
# T is searched in [0.25, 20]: wider than a network trained with cross-entropy needs either way. The lower bound
# matters: on a valid split the model gets all right, the likelihood grows without end as T falls, and an
# unbounded fit would sharpen every answer into probabilities of 1 and exact zeros.
LOG_T_BOUNDS = (float(np.log(0.25)), float(np.log(20.0)))


def _as_arrays(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits must be (N, C) and labels (N,); got {logits.shape} and {labels.shape}")
    return logits, labels


def probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1))


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / T)."""
    logits, labels = _as_arrays(logits, labels)
    if len(labels) == 0:
        return float("nan")
    log_p = log_softmax(logits / temperature, axis=1)
    return float(-log_p[np.arange(len(labels)), labels].mean())


def unfit_reason(logits, labels) -> str | None:
    """Why these logits cannot calibrate anything (None where they can): no labels, a non-finite logit (an fp16
    overflow), or every answer right, where the likelihood only grows as T falls and any fitted T is the bound's."""
    logits, labels = _as_arrays(logits, labels)
    if len(labels) == 0:
        return "no labelled images"
    if not np.isfinite(logits).all():
        return "non-finite logits"
    if (logits.argmax(axis=1) == labels).all():
        return "every answer right: nothing to fit a temperature on"
    return None


def fit_temperature(logits, labels) -> float:
    """The T that minimises the NLL of softmax(logits / T): a one-dimensional fit over log T (unimodal there,
    as the NLL is convex in 1/T), bounded. 1 (no change) where :func:`unfit_reason` names one."""
    if unfit_reason(logits, labels):
        return 1.0
    logits, labels = _as_arrays(logits, labels)
    found = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))), bounds=LOG_T_BOUNDS,
                            method="bounded", options={"xatol": 1e-5})
    return float(np.exp(found.x))


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    count: int
    confidence: float  # mean top-1 probability in the bin (nan when empty)
    accuracy: float  # share of top-1 answers right in the bin (nan when empty)


def reliability_bins(probs, labels, bins: int = BINS) -> list[Bin]:
    """Top-1 confidence in ``bins`` equal-width bins over [0, 1] (each bin (low, high], the first also holds 0)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels) if len(probs) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        out.append(Bin(float(edges[b]), float(edges[b + 1]), count,
                       float(confidence[members].mean()) if count else float("nan"),
                       float(correct[members].mean()) if count else float("nan")))
    return out


def ece(probs, labels, bins: int = BINS) -> float:
    """Expected calibration error: sum over bins of |accuracy - confidence| weighted by the bin's share."""
    found = reliability_bins(probs, labels, bins)
    total = sum(b.count for b in found)
    if total == 0:
        return float("nan")
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in found if b.count))


@dataclass(frozen=True)
class Calibration:
    """The figures before (T = 1) and after temperature scaling with ``temperature``."""

    temperature: float
    source: str  # where the temperature came from, in words
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    bins_before: list[Bin]
    bins_after: list[Bin]

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "temperature_source": self.source,
                "ece_before": self.ece_before, "ece_after": self.ece_after,
                "nll_before": self.nll_before, "nll_after": self.nll_after}


def calibrate(logits, labels, temperature: float | None = None, source: str = "") -> Calibration:
    """Before and after; ``temperature`` None: fitted on these very logits (an optimistic "after", said in ``source``)."""
    logits, labels = _as_arrays(logits, labels)
    if temperature is None:
        temperature = fit_temperature(logits, labels)
        source = source or "fitted on the evaluated data itself (no temperature in model.json): the 'after' is optimistic"
    before, after = probabilities(logits), probabilities(logits, temperature)
    return Calibration(float(temperature), source, ece(before, labels), ece(after, labels), nll(logits, labels),
                       nll(logits, labels, temperature), reliability_bins(before, labels), reliability_bins(after, labels))
