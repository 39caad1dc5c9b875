"""What a finished run leaves: the kept weights back in place, the test split's scores, model.pth + model.json
(rank 0), metrics.json and the per-class and confusion tables."""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from .. import distributed, features, metrics, models
from .calibrate import calibration_of, test_pass
from .errors import TrainingError
from .notdog import fit_dog_check, save_head
from .recipe import recipe_record
from .report import write_report
from .resume import FitState
from .setup import Run

log = logging.getLogger("dogbreed.train")


def write_reports(output_dir: Path, class_names, confusion, summary: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    if confusion is None:
        return
    with open(output_dir / "per_class.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "support", "correct", "accuracy"])
        for index, name in enumerate(class_names):
            support = int(confusion[index].sum())
            correct = int(confusion[index, index])
            writer.writerow([name, support, correct, f"{correct / support:.4f}" if support else ""])
    with open(output_dir / "confusion.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *class_names])
        for index, name in enumerate(class_names):
            writer.writerow([name, *[int(x) for x in confusion[index]]])


def _summary(run: Run, state: FitState) -> dict:
    acc = run.trainer.acc
    return {
        "best_epoch": state.best_epoch, "best_valid_loss": state.best_valid_loss,
        "epochs_run": len(state.history), "history": state.history, "classes": run.inputs.splits.class_names,
        "hyperparameters": run.config.hyperparameters(),
        "images": {k: len(v) for k, v in run.inputs.datasets.items()}, "accelerator": acc.describe(),
        "precision": acc.as_dict(), "world_size": run.config.dist.world_size, "recipe": recipe_record(run, state),
        "data_warnings": run.inputs.splits.warnings,  # classes that valid or test lack
    }


def _test(run: Run, summary: dict, scored):
    """The test split's scores (``scored``: its one pass) into ``summary`` and the metric line; returns the confusion
    matrix (None: no split)."""
    if scored is None:
        return None
    test_loss, test_acc, lost, confusion = scored
    run.inputs.unreadable.note("test", lost)
    summary.update(test_loss=test_loss, test_acc=test_acc)
    if run.config.is_main:
        probe_test = {"probe_test_acc": run.probe["test_acc"]} if run.probe and "test_acc" in run.probe else {}
        metrics.write_line(metrics.format_line(test_loss=test_loss, test_acc=test_acc, **probe_test))
    return confusion


def check_finite(model: nn.Module, advice: str) -> None:
    """A model with a nan or inf weight predicts nothing: no model.pth, no SUCCESS. ``advice``: the flags to lower."""
    bad = [name for name, value in model.state_dict().items()
           if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise TrainingError(f"the kept model has non-finite weights ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}):"
                            f" {advice}")


def finish(run: Run, state: FitState) -> dict:
    """Best weights back in place, the test split, model.pth + model.json, metrics.json and the per-class reports."""
    config, full_model = run.config, run.chosen.full_model
    if state.best_model is not None:
        run.model.load_state_dict(state.best_model)
    if run.chosen.use_cache:  # the trained head goes back into the whole model for the artifacts
        features.head_of(full_model).load_state_dict(run.model.state_dict())
    check_finite(full_model, run.trainer.diverged)  # every rank holds the same weights: all stop together
    summary = _summary(run, state)
    scored, test = test_pass(run) or (None, None)  # the test split once: scores, calibration figures, the report
    summary["calibration"] = calibration_of(run, test)  # the temperature serving applies; test ECE/NLL before/after
    if config.is_main and summary["calibration"]:
        log.info("calibration: %s", ", ".join(f"{k}={v:.4g}" for k, v in summary["calibration"].items()
                                               if isinstance(v, float)))
    if config.is_main and math.isfinite(state.best_valid_loss):
        # The kept model's scores last: SageMaker's tuner reads a metric's last value, not the last epoch's.
        metrics.write_line("kept model: " + metrics.format_line(valid_loss=state.best_valid_loss,
                                                                 valid_acc=state.best_valid_acc))
    confusion = _test(run, summary, scored)
    summary["unreadable_images"] = run.inputs.unreadable.counts()
    summary["skipped_images"] = sum(summary["unreadable_images"].values())
    summary["seconds"] = round(time.perf_counter() - run.started, 1)
    if config.is_main:
        trained = {k: summary[k] for k in ("best_epoch", "best_valid_loss", "recipe") if k in summary}
        class_names = run.inputs.splits.class_names
        summary["dog"], imagenet_head = fit_dog_check(run, full_model)  # the not-a-dog threshold, from the valid split
        models.save_artifacts(config.model_dir, full_model, config.model, class_names, run.inputs.prep,
                              extra={"trained": trained, "precision": summary["precision"], "dog": summary["dog"],
                                     "temperature": (summary["calibration"] or {}).get("temperature", 1.0)})
        save_head(config.model_dir, imagenet_head)
        write_reports(config.output_data_dir, class_names, confusion, summary)
        log.info("model written to %s", config.model_dir)
    write_report(run, test, (summary["calibration"] or {}).get("temperature"))  # rank 0; a failure: a warning
    distributed.barrier()
    return summary
