"""Temperature scaling and the calibration figures on synthetic logits whose true calibration is known."""

from __future__ import annotations

import numpy as np
import pytest

from dogbreed import calibration as cal


def calibrated_set(n: int = 6000, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated at T = 1 by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, classes))
    probs = cal.probabilities(logits)
    labels = np.array([rng.choice(classes, p=row) for row in probs])
    return logits, labels


def test_over_confident_logits_get_a_temperature_above_one_and_a_lower_ece():
    logits, labels = calibrated_set()
    over = 3.0 * logits  # the same answers, three times too sure
    result = cal.calibrate(over, labels)
    assert result.temperature > 1.0
    assert result.temperature == pytest.approx(3.0, rel=0.1)
    assert result.ece_before > 0.1
    assert result.ece_after < result.ece_before / 3
    assert result.nll_after < result.nll_before


def test_under_confident_logits_get_a_temperature_below_one():
    logits, labels = calibrated_set(seed=1)
    assert cal.fit_temperature(logits / 2.0, labels) == pytest.approx(0.5, rel=0.1)


def test_calibrated_logits_keep_a_temperature_of_one():
    logits, labels = calibrated_set(seed=2)
    assert cal.fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.08)
    assert cal.ece(cal.probabilities(logits), labels) < 0.03


def test_log_probabilities_give_the_same_fit_as_logits():
    """Evaluation may only see probabilities: their log differs from the logits by a constant per row."""
    logits, labels = calibrated_set(n=2000, seed=3)
    log_p = np.log(cal.probabilities(3.0 * logits))
    assert cal.fit_temperature(log_p, labels) == pytest.approx(cal.fit_temperature(3.0 * logits, labels), rel=1e-3)


def test_perfect_predictions_have_no_calibration_error():
    labels = np.array([0, 1, 2, 2, 1, 0])
    probs = np.eye(3)[labels]
    assert cal.ece(probs, labels) == 0.0


def test_ece_of_a_known_case():
    """Two answers at 0.9 confidence, one right: bin (0.8667, 0.9333] has accuracy 0.5, confidence 0.9."""
    probs = np.array([[0.9, 0.1], [0.9, 0.1]])
    labels = np.array([0, 1])
    assert cal.ece(probs, labels) == pytest.approx(0.4)
    bins = cal.reliability_bins(probs, labels)
    assert len(bins) == cal.BINS
    filled = [b for b in bins if b.count]
    assert len(filled) == 1 and filled[0].low < 0.9 <= filled[0].high and filled[0].accuracy == 0.5


def test_nll_at_a_temperature():
    logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    labels = np.array([0, 0])
    expected = -(np.log(np.exp(1) / (np.exp(1) + 1)) + np.log(1 / (1 + np.exp(1)))) / 2
    assert cal.nll(logits, labels, temperature=2.0) == pytest.approx(expected)


def test_a_given_temperature_is_used_and_named():
    logits, labels = calibrated_set(n=500, seed=4)
    result = cal.calibrate(logits, labels, temperature=2.0, source="model.json")
    assert result.temperature == 2.0 and result.source == "model.json"
    assert result.nll_after == pytest.approx(cal.nll(logits, labels, 2.0))


def test_no_temperature_is_fitted_on_logits_that_cannot_calibrate():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    all_right = rng.normal(size=(200, 5))
    all_right[np.arange(200), labels] += 10  # every answer right: the likelihood grows as T falls, without end
    assert cal.unfit_reason(all_right, labels).startswith("every answer right")
    assert cal.fit_temperature(all_right, labels) == 1.0
    broken = rng.normal(size=(200, 5))
    broken[3, 1] = np.nan  # an fp16 overflow
    assert cal.unfit_reason(broken, labels) == "non-finite logits" and cal.fit_temperature(broken, labels) == 1.0
