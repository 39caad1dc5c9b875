"""``dogbreed evaluate``: a trained model run over a labelled split through the serving code, written up as one
self-contained HTML report (accuracy, per-breed scores, confusions, worst errors, calibration)."""
