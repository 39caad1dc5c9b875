"""``dogbreed debug report PATH|JOB_NAME --out DIR``: the loss plot (training and validation) and the rule verdicts
(a job's trial is fetched first: ``job_outputs.fetch_trial``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .job_outputs import local_trial, s3_trial

log = logging.getLogger(__name__)


def loss_series(trial):
    from smdebug.core.modes import ModeKeys  # smdebug is optional and slow to import: only for a report

    from .rules import _loss, _loss_name  # imports smdebug: see above

    _loss_name(trial)
    series = {}
    for label, mode in (("train", ModeKeys.TRAIN), ("eval", ModeKeys.EVAL)):
        steps = trial.steps(mode=mode)
        points = [(trial.global_step(mode, s), _loss(trial, s, mode)) for s in steps]
        series[label] = [(s, v) for s, v in points if v is not None]
    return series


def plot_losses(series: dict, path: Path) -> Path:
    import matplotlib  # optional and slow: only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, points in series.items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None,
                    label={"train": "training loss", "eval": "validation loss"}[label])
    ax.set_xlabel("global step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("dogbreed: loss over steps (smdebug trial)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(path: str, out: Path) -> dict:
    from smdebug.trials import create_trial  # smdebug is optional and slow to import: only for a report

    from .rules import run_rules  # imports smdebug: see above

    # at once, not smdebug's endless poll for a trial that is not there
    path = s3_trial(str(path)) if str(path).startswith("s3://") else local_trial(str(path))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trial = create_trial(str(path))
    series = loss_series(trial)
    plot = plot_losses(series, out / "loss.png")
    verdicts = run_rules(trial)
    result = {"trial": str(path), "plot": str(plot), "steps": {k: len(v) for k, v in series.items()}, "rules": verdicts}
    (out / "rules.json").write_text(json.dumps(result, indent=2))
    return result


def cmd_debug_report(args) -> int:
    logging.getLogger("smdebug").setLevel(logging.WARNING)
    result = report(args.path, Path(args.out))
    print(f"loss plot: {result['plot']} (training steps {result['steps']['train']}, validation steps {result['steps']['eval']})")
    for name, verdict in result["rules"].items():
        state = "not evaluated: " + verdict["error"] if verdict.get("error") else "ok"
        state = f"FIRED at step {verdict['step']}" if verdict["fired"] else state
        print(f"{name}: {state}")
    return 0
