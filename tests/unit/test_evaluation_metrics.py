"""The evaluation's scores on small hand-made cases whose answers are known, and the report's escaping."""

from __future__ import annotations

import numpy as np
import pytest

from dogbreed.evaluation import metrics


def test_top_k_accuracy():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = np.array([0, 1, 2])
    assert metrics.top_k_accuracy(probs, labels, 1) == pytest.approx(1 / 3)
    assert metrics.top_k_accuracy(probs, labels, 2) == pytest.approx(2 / 3)
    assert metrics.top_k_accuracy(probs, labels, 5) == 1.0  # k above the number of classes: every answer counts


def test_per_breed_scores_and_an_absent_breed():
    labels = np.array([0, 0, 1, 1])
    predicted = np.array([0, 1, 1, 1])
    rows = metrics.per_breed(labels, predicted, ["a", "b", "c"])
    assert [r["support"] for r in rows] == [2, 2, 0]
    assert rows[0]["precision"] == 1.0 and rows[0]["recall"] == 0.5
    assert rows[1]["precision"] == pytest.approx(2 / 3) and rows[1]["recall"] == 1.0
    assert rows[2] == {"breed": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_confused_pairs_and_breeds():
    matrix = np.array([[5, 3, 0, 0], [1, 6, 0, 0], [0, 0, 9, 0], [0, 2, 0, 4]])
    pairs = metrics.confused_pairs(matrix, ["a", "b", "c", "d"], limit=2)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("a", "b", 3), ("d", "b", 2)]
    assert pairs[0]["share"] == pytest.approx(3 / 8)
    assert metrics.most_confused_breeds(matrix, limit=3) == [0, 1, 3]  # c is in no confusion
    assert metrics.most_confused_breeds(matrix, limit=2) == [0, 1]


def test_worst_errors_are_the_most_confident_wrong_answers():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 0, 1, 1])  # wrong: rows 1 (0.8) and 2 (0.6)
    assert metrics.worst_errors(probs, labels) == [1, 2]


def test_the_report_escapes_what_it_shows():
    from dogbreed.evaluation.report import render

    context = {"model": {"arch": "<b>x</b>", "classes": 1, "source": "m", "engine": "cpu"},
               "data": {"path": "d", "name": "d", "images": 1, "skipped": []}, "generated": "now",
               "summary": {"top1": 1.0, "top5": 1.0},
               "calibration": {"temperature": 1.0, "temperature_source": "s", "ece_before": 0.0, "ece_after": 0.0,
                               "nll_before": 0.0, "nll_after": 0.0},
               "reliability_png": "", "confusion_csv": "confusion.csv", "heatmap_png": None, "pairs": [], "errors": [],
               "per_breed": [{"breed": "<script>alert(1)</script>", "precision": 1.0, "recall": 1.0, "f1": 1.0,
                              "support": 1}], "settings": []}
    page = render(context)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
