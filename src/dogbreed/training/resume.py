"""Checkpoints and resume: what a checkpoint holds (:class:`FitState`, the weights, the optimizer), when one is
written, and which one a run starts from (this job's newest, else ``--resume-from``), refused if its settings differ."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import checkpoint
from .args import get_args_parser
from .errors import Interrupted, TrainingError
from .setup import Run

log = logging.getLogger("dogbreed.train")


@dataclass
class FitState:
    """Where fitting stands: the epochs done, the best model so far and its scores, the history, the weight mixes.
    It changes as the epochs run, and every checkpoint saves it."""

    epoch: int = 0
    best_valid_loss: float = math.inf
    best_valid_acc: float = 0.0
    best_epoch: int | None = 0
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    best_model: dict | None = None
    probe_model: dict | None = None  # one end of the weight-space ensembles (wise.py)
    mixes: list = field(default_factory=list)
    best_alpha: float | None = None

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# What a resumed run takes from its checkpoint (the mixes are redone after the last epoch).
RESTORED = ("epoch", "best_valid_loss", "best_epoch", "bad_epochs", "history", "best_model")


def fingerprint(run: Run) -> dict:
    """Everything that changes what training computes: the hyperparameters, the classes, the images."""
    hps = run.config.training_settings()
    weights = Path(run.config.pretrained_weights)
    if weights.is_file():  # the same weights file through another channel path is the same weights
        hps["pretrained_weights"] = f"{weights.name}:{weights.stat().st_size}"
    hps["classes"] = list(run.inputs.splits.class_names)
    hps["images"] = {k: len(v) for k, v in run.inputs.datasets.items()}
    hps["cached_features"] = run.chosen.use_cache
    return hps


def save_checkpoint(run: Run, state: FitState, epoch_done: int) -> None:
    """After a complete epoch only: a checkpoint never holds a half-trained epoch."""
    if not run.config.dist.is_main:  # global rank 0 alone: every host syncs to the one S3 prefix
        return
    trainer = run.trainer
    saved = {**state.as_dict(), "epoch": epoch_done, "fingerprint": fingerprint(run),
             "as_typed": dict(run.config.as_typed), "model": run.model.state_dict(),
             "optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
             "scaler": trainer.scaler.state_dict()}
    checkpoint.save(run.config.checkpoint_dir, epoch_done, saved)


def find_resume_point(run: Run):
    """This job's newest checkpoint (a spot restart), else the one ``--resume-from`` names, else None."""
    config = run.config
    found = checkpoint.load_latest(config.checkpoint_dir)
    if found or not config.resume_from:
        return found
    found = checkpoint.load_latest(Path(config.resume_from), recursive=True)
    if not found:
        raise TrainingError(f"--resume-from {config.resume_from}: no readable checkpoint there")
    return found


class AsTyped:
    """A setting compared by its value and shown as it was typed: the refusal names ``1e30``, not ``1e+30``."""

    __hash__ = None

    def __init__(self, value, text: str):
        self.value, self.text = value, text

    def __eq__(self, other) -> bool:
        return self.value == (other.value if isinstance(other, AsTyped) else other)

    def __repr__(self) -> str:
        return self.text


def shown_as_typed(settings: dict, typed: dict) -> dict:
    """``settings`` with each value typed as a flag (``typed``: name -> text) shown as typed."""
    return {name: AsTyped(value, typed[name]) if name in typed else value for name, value in settings.items()}


def resume(run: Run, state: FitState) -> None:
    found = find_resume_point(run) if run.config.resume else None
    if not found:
        return
    saved, path = found
    defaults = vars(get_args_parser().parse_args([]))
    before = shown_as_typed(saved.get("fingerprint") or {}, saved.get("as_typed") or {})  # older checkpoints: none
    differences = checkpoint.differences(before, shown_as_typed(fingerprint(run), run.config.as_typed), defaults)
    if differences:
        raise TrainingError(f"refusing to resume from {path}: it was trained with other settings ({differences}); "
                            "rerun with the same ones, or start afresh (--resume false or an empty --checkpoint-dir)")
    run.model.load_state_dict(saved["model"])
    run.trainer.optimizer.load_state_dict(saved["optimizer"])
    run.trainer.scheduler.load_state_dict(saved["scheduler"])
    run.trainer.scaler.load_state_dict(saved["scaler"])
    for key in RESTORED:
        setattr(state, key, saved[key])
    state.best_valid_acc = saved.get("best_valid_acc", 0.0)
    state.probe_model = saved.get("probe_model", state.probe_model)  # older checkpoints: the probe just fitted
    log.info("resumed from %s (epoch %d done)", path, state.epoch)
    print(f"resumed_from_epoch={state.epoch}", flush=True)


def interrupted(run: Run, epoch: int) -> Interrupted:
    """The reason of a SIGTERM during ``epoch``: what is kept, and what a restart redoes."""
    kept = f"epoch {epoch - 1} is the last checkpoint in {run.config.checkpoint_dir}" if epoch > 1 else "no epoch had finished"
    return Interrupted(f"stopped by SIGTERM during epoch {epoch}; {kept}: a restart of this job redoes epoch {epoch}")
