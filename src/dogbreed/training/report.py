"""The evaluation report (issue 22 §1) at the end of training, into the output data (output.tar.gz on SageMaker):
from the test pass that scored the kept model, on global rank 0. A report that cannot be drawn is a warning: the
model is trained and written by then, and a job is no failure for want of a picture."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .calibrate import SplitLogits
from .setup import Run

log = logging.getLogger("dogbreed.train")


def _settings(run: Run, temperature: float | None) -> list[tuple[str, str]]:
    hyperparameters = {k: v for k, v in run.config.hyperparameters().items() if k != "is_main"}
    rows = [(key, value if isinstance(value, str) else json.dumps(value)) for key, value in hyperparameters.items()]
    return rows + [("temperature", json.dumps(temperature)), ("engine", run.trainer.acc.describe()),
                   ("world size", str(run.config.dist.world_size))]


def write_report(run: Run, test: SplitLogits | None, temperature: float | None) -> Path | None:
    """report.html beside metrics.json; None (and a warning) where it cannot be written."""
    config = run.config
    if not config.is_main:
        return None
    if test is None or len(test.labels) == 0 or test.paths is None:
        why = "no test split" if test is None or len(test.labels) == 0 else "cached features keep no photos"
        log.warning("no evaluation report: %s", why)
        return None
    try:
        from ..evaluation.from_logits import write_report as render  # matplotlib, jinja2: only when one is drawn

        split = Path(test.paths[0]).parent.parent if test.paths else Path(".")
        target = render(config.output_data_dir, test.logits, test.labels, test.paths, run.inputs.splits.class_names,
                        temperature, _settings(run, temperature),
                        model={"arch": config.model, "classes": run.inputs.num_classes, "source": "this training run",
                               "engine": run.trainer.acc.describe()},
                        data={"path": str(split), "name": split.name})
    except Exception as exc:  # noqa: BLE001 - any failure to draw: a warning, never a failed training
        log.warning("no evaluation report: %s: %s", exc.__class__.__name__, exc, exc_info=True)
        return None
    log.info("evaluation report written to %s", target)
    return target
