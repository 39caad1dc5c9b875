"""The recipe: under LP-FT (the default with pretrained weights) a linear probe first, then epochs of gentle
fine-tuning, then weight mixes of the two (WiSE-FT), each kept only where the valid split prefers it; otherwise
epochs of one learning rate. Early stopping on the valid loss; a checkpoint after every epoch."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from .. import data, distributed, features, metrics, probe, wise
from .config import RunConfig
from .errors import Interrupted, TrainingError
from .loop import train_one_epoch
from .resume import FitState, interrupted, save_checkpoint
from .setup import Chosen, Inputs, Run

log = logging.getLogger("dogbreed.train")


def _probe_features(config: RunConfig, inputs: Inputs, model: nn.Module, acc) -> dict:
    """{split: (features, labels, skipped)} of the frozen backbone on the eval crop of every split (cached on disk
    where --feature-cache names a folder: tuning trials on the same data then share them)."""
    from .setup import cache_key

    prep = inputs.prep
    datasets = {split: data.ImageSamples(inputs.splits.samples[split], prep.eval_transform(False), prep.resize)
                for split in inputs.datasets}
    if config.feature_cache:
        return features.cached_features(Path(config.feature_cache), cache_key(config, inputs), model, datasets, acc,
                                        config.batch_size, config.workers, prep.normalize_batch)
    extractor = features.FeatureExtractor(model)
    return {split: features.compute(extractor, dataset, acc, config.batch_size, config.workers, prep.normalize_batch)
            for split, dataset in datasets.items()}


def fit_probe(config: RunConfig, inputs: Inputs, chosen: Chosen) -> dict | None:
    """LP-FT's first stage: the head fitted on frozen features (L-BFGS logistic regression, L2 chosen on the valid
    split), so that fine-tuning starts from a fitted head and does not distort the features chasing a random one.
    Every rank fits the same probe on the same features (deterministic): no broadcast needed. Returns its record."""
    if not chosen.lp_ft:
        return None
    start = time.perf_counter()
    computed = _probe_features(config, inputs, chosen.full_model, chosen.acc)
    extracted = time.perf_counter() - start
    # Scored in the precision the model's head runs in: the probe's valid numbers are compared with fine-tuned epochs'.
    dtype = chosen.acc.autocast_dtype
    fitted = probe.fit(computed["train"][:2], computed["valid"][:2], inputs.num_classes, dtype=dtype)
    if not math.isfinite(fitted.valid_loss):
        raise TrainingError(f"the linear probe's valid loss is {fitted.valid_loss}: the frozen features are not finite "
                            f"(check --pretrained-weights {config.pretrained_weights})")
    head = features.head_of(chosen.full_model)
    with torch.no_grad():
        head.weight.copy_(fitted.weight)
        head.bias.copy_(fitted.bias)
    images = sum(len(labels) for _, labels, _ in computed.values())
    record = {**fitted.as_dict(), "features_seconds": round(extracted, 2), "seconds": round(time.perf_counter() - start, 2)}
    if fitted.refit is not None:  # tensors: kept out of the JSON records (see probe_summary)
        record[REFIT] = {"head": fitted.refit, "temperature": fitted.refit_temperature}
        # its valid scores are no estimate (it has seen the valid split): recorded to check model.pth by, never to choose
        record["refit_valid_loss"], record["refit_valid_acc"] = probe.score(*fitted.refit, *computed["valid"][:2], dtype)
    if "test" in computed:  # reported beside the final model's test score, never used for a choice
        record["test_loss"], record["test_acc"] = probe.score(fitted.weight, fitted.bias, *computed["test"][:2], dtype)
    if config.is_main:
        metrics.write_line(metrics.format_line(epoch=0, train_loss=fitted.train_loss, valid_loss=fitted.valid_loss,
                                               valid_acc=fitted.valid_acc, lr=0.0,
                                               images_per_sec=images / max(extracted, 1e-9)))
    log.info("linear probe (L-BFGS logistic regression, l2=%g) in %.1f s: valid_acc %.4f, valid_loss %.4f; next: "
             "fine-tuning all layers, head lr %g, backbone lr %g, batch-norm statistics %s", fitted.l2,
             record["seconds"], fitted.valid_acc, fitted.valid_loss, config.lr, config.lr * config.backbone_lr_ratio,
             "frozen" if config.bn_frozen else "updated")
    return record


# The probe record's key for the probe refitted on train + valid: shipped if the probe is kept (ship_refit_probe).
REFIT = "refit"


def probe_summary(record: dict | None) -> dict | None:
    """The probe's record as metrics.json and model.json hold it: without the refitted head's tensors."""
    if record is None:
        return None
    return {k: v for k, v in record.items() if k != REFIT}


def ship_refit_probe(run: Run, state: FitState) -> None:
    """Where the probe is kept, its refit on train + valid in its place: at 5 shots 7 photos a breed instead of 5.
    The choice was made on the train-only probe's honest valid scores; the refit has seen the valid split, so
    its temperature comes from the cross-validation's out-of-fold logits (calibrate.py reads it from the record)."""
    refit = (run.probe or {}).get(REFIT)
    if refit is None or state.best_model is None or state.best_alpha is not None or state.best_epoch != 0:
        return
    head = features.head_of(run.model)
    name = next(n for n, module in run.model.named_modules() if module is head)
    weight, bias = refit["head"]
    state.best_model = {**state.best_model, f"{name}.weight": weight.clone(), f"{name}.bias": bias.clone()}
    run.probe["shipped"] = "refitted on train + valid with the chosen L2"
    run.probe["temperature"] = {"value": refit["temperature"],
                                "source": "fitted on the probe's out-of-fold logits over train + valid "
                                          f"({run.probe['l2_choice'].get('refit_temperature_source')})"}


def weights_of(model: nn.Module) -> dict:
    """A copy of the model's weights on the CPU: the best so far, the probe's, a mix kept."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def noise(accuracy: float, images: int) -> float:
    """The binomial standard error of an accuracy measured on ``images`` images: the valid split's noise. At 5 shots
    of 10 breeds (20 valid images) a probe right at 0.9 is 0.9 +- 0.067: one or two images either way."""
    if images <= 0:
        return 0.0
    p = min(max(accuracy, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / images)


def acc_to_beat(probe_acc: float, images: int) -> float:
    """The valid accuracy a fine-tuned epoch or a mix must exceed to replace the probe: the probe's plus the split's
    noise (the probe is the simpler model: a difference within noise keeps it)."""
    return probe_acc + noise(probe_acc, images)


def improved(lp_ft: bool, state: FitState, valid_loss: float, valid_acc: float, to_beat: float = 0.0) -> bool:
    """A lower valid loss; under LP-FT also an accuracy at least as high as the best so far (the probe at first)
    and above ``to_beat`` (:func:`acc_to_beat`): both measures must prefer the fine-tuned weights, by more than the
    valid split's noise over the probe's accuracy, so that a handful of images does not trade a sound probe for a
    worse fine-tuned model."""
    if not math.isfinite(valid_loss) or valid_loss >= state.best_valid_loss:
        return False
    return not lp_ft or (valid_acc >= state.best_valid_acc and valid_acc > to_beat)


def _to_beat(run: Run) -> float:
    return run.probe["valid_acc_to_beat"] if run.probe else 0.0


def initial_state(run: Run) -> FitState:
    """Where fitting starts: under LP-FT the probe is epoch 0, the model to beat."""
    state = FitState()
    if run.probe:
        # each rank fitted its own probe (GPU reductions may round differently): rank 0's scores, like its weights,
        # are the ones every rank compares fine-tuned epochs with
        loss, acc = distributed.from_rank_zero([run.probe["valid_loss"], run.probe["valid_acc"]], run.trainer.acc.device)
        state.best_valid_loss, state.best_valid_acc = loss, acc
        run.probe["valid_acc_to_beat"] = acc_to_beat(acc, run.probe.get("valid_images", 0))  # rank 0's: the same everywhere
        state.best_model = state.probe_model = weights_of(run.model)
    return state


def _set_hooks_mode(run: Run, mode: str) -> None:
    for hook in run.hooks:
        hook.set_mode(mode)


# Why fitting stopped before its last epoch: the valid loss stopped improving, or a hook asked (a pruned trial).
PATIENCE, HOOK = "patience", "hook"


def run_epoch(run: Run, state: FitState, epoch: int, stop) -> str | None:
    """Train and validate one epoch, keep the best weights, checkpoint. Returns why to stop early, or None."""
    config = run.config
    torch.manual_seed(config.seed + epoch)  # per-epoch seeds: a resumed run repeats the epoch it lost exactly
    run.train_sampler.set_epoch(epoch)
    _set_hooks_mode(run, "train")
    train_loss, seen, lost, seconds = train_one_epoch(run.trainer, run.loaders["train"], epoch, config.loop, stop,
                                                      run.hooks)
    if stop.requested:
        raise interrupted(run, epoch)
    new_unreadable = run.inputs.unreadable.note("train", lost)
    _set_hooks_mode(run, "eval")
    # The module itself, not its DDP wrapper: evaluation shards may be uneven, and the wrapper's buffer sync is a collective.
    # So the buffers are made equal here, once, by every rank together.
    distributed.broadcast_buffers(run.model)
    valid_loss, valid_acc, lost, _ = run.evaluate_on("valid")
    new_unreadable += run.inputs.unreadable.note("valid", lost)
    for hook in run.hooks:
        hook.record_eval(valid_loss)
    lr = run.trainer.optimizer.param_groups[0]["lr"]
    rate = seen / max(seconds, 1e-9)
    if config.is_main:
        metrics.write_line(metrics.format_line(epoch=epoch, train_loss=train_loss, valid_loss=valid_loss,
                                               valid_acc=valid_acc, lr=lr, images_per_sec=rate))
    record = {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, "valid_acc": valid_acc, "lr": lr,
              "images_per_sec": rate, "new_unreadable": new_unreadable}
    if not math.isfinite(valid_loss):  # every rank has the same (reduced) loss: all stop together
        raise TrainingError(f"the valid loss became {valid_loss} after epoch {epoch} (train loss {train_loss}): "
                            f"{run.trainer.diverged}")
    state.history.append(record)
    if improved(run.lp_ft, state, valid_loss, valid_acc, _to_beat(run)):
        state.best_valid_loss, state.best_valid_acc, state.best_epoch, state.bad_epochs = valid_loss, valid_acc, epoch, 0
        state.best_model = weights_of(run.model)
    else:
        state.bad_epochs += 1
    save_checkpoint(run, state, epoch)
    if stop.requested:  # SIGTERM during validation: the epoch is saved, stop now
        raise interrupted(run, epoch + 1)
    return _stops_early(run, state, record)


def _stops_early(run: Run, state: FitState, record: dict) -> str | None:
    """Early stopping on the valid loss, or a hook that wants no more epochs (local tuning's pruner)."""
    wanted = [hook.end_epoch(record) for hook in run.hooks]  # every hook sees every epoch
    if distributed.broadcast_flag(any(wanted), run.trainer.acc.device):  # every rank stops at the same epoch
        log.info("stopped after epoch %d: a training hook asked to", record["epoch"])
        return HOOK
    patience = run.config.patience
    if patience and state.bad_epochs >= patience:
        log.info("early stopping: valid_loss has not improved for %d epochs (best at epoch %d)", patience,
                 state.best_epoch)
        return PATIENCE
    return None


def fit(run: Run, state: FitState, stop) -> str | None:
    """The epochs; returns why they stopped early (:data:`PATIENCE`, :data:`HOOK`), or None."""
    try:
        for epoch in range(state.epoch + 1, run.config.epochs + 1):
            reason = run_epoch(run, state, epoch, stop)
            if reason:
                return reason
        return None
    finally:
        for hook in run.hooks:
            hook.close()


def ensemble_weights(run: Run, state: FitState, stop) -> None:
    """LP-FT's last steps: the weight mixes (:func:`mix_weights`), then the refitted probe where the probe is kept."""
    if run.lp_ft and state.probe_model is not None and state.history:
        mix_weights(run, state, stop)
    if run.lp_ft:
        ship_refit_probe(run, state)


def mix_weights(run: Run, state: FitState, stop) -> None:
    """Weights between the probe and the last fine-tuned epoch (WiSE-FT, :mod:`wise`), each
    kept under the rule epochs are kept by (:func:`improved`). Deterministic from the checkpointed state: a run
    restarted after its last epoch repeats it exactly. Every rank mixes the same weights (DDP broadcast rank 0's
    probe before fine-tuning) and scores them together."""
    model = run.model
    tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.mixes = []
    for alpha in wise.ALPHAS:
        if distributed.broadcast_flag(stop.requested, run.trainer.acc.device):
            last = state.history[-1]["epoch"]
            raise Interrupted(f"stopped by SIGTERM after the last epoch, while mixing the probe's and the fine-tuned "
                              f"weights; epoch {last} is the last checkpoint: a restart of this job redoes the mixes")
        model.load_state_dict(wise.mix(state.probe_model, tuned, alpha))
        valid_loss, valid_acc, _, _ = run.evaluate_on("valid", model)
        state.mixes.append({"alpha": alpha, "valid_loss": valid_loss, "valid_acc": valid_acc})
        if improved(run.lp_ft, state, valid_loss, valid_acc, _to_beat(run)):
            state.best_valid_loss, state.best_valid_acc, state.best_alpha, state.best_epoch = \
                valid_loss, valid_acc, alpha, None
            state.best_model = weights_of(model)
    model.load_state_dict(tuned)
    if run.config.is_main:
        log.info("probe/fine-tuned weight mixes on the valid split: %s", ", ".join(
            f"alpha {m['alpha']:g} {m['valid_acc']:.4f}/{m['valid_loss']:.4f}" for m in state.mixes))


def recipe_record(run: Run, state: FitState) -> dict:
    """What the recipe did and kept, for metrics.json and model.json; under LP-FT the choice is also logged in words."""
    config = run.config
    if not run.lp_ft:
        return {"name": "single-stage", "train_layers": config.layers, "kept": "trained"}
    kept = _kept_under_lp_ft(run, state)
    if config.is_main:
        log.info("kept the %s model: %s", kept[1], kept[2])
    return {"name": "lp-ft", "kept": kept[0], "reason": kept[2], "probe": probe_summary(run.probe), "mix_alpha": state.best_alpha,
            "mixes": state.mixes, "head_lr": config.lr, "backbone_lr": config.lr * config.backbone_lr_ratio,
            "batchnorm_frozen": config.bn_frozen}


def _kept_under_lp_ft(run: Run, state: FitState) -> tuple[str, str, str]:
    """(kept, the model in words, why): the probe, a fine-tuned epoch, or a mix of the probe and the last epoch."""
    probe_scores = f"{run.probe['valid_acc']:.4f}/{run.probe['valid_loss']:.4f}"
    kept_scores = f"valid_acc/valid_loss {state.best_valid_acc:.4f}/{state.best_valid_loss:.4f}"
    if state.best_alpha is not None:
        alpha = state.best_alpha
        return ("mixed", f"probe/fine-tuned mix (alpha {alpha:g})",
                f"{1 - alpha:g} x the probe's weights + {alpha:g} x the last fine-tuned epoch's beat the probe and every "
                f"fine-tuned epoch on the valid split: {kept_scores} (probe {probe_scores})")
    if state.best_epoch > 0:
        return ("fine-tuned", "fine-tuned", f"fine-tuning epoch {state.best_epoch} beat the linear probe on the valid "
                f"split: {kept_scores} (probe {probe_scores})")
    tried = [f"epoch {h['epoch']} {h['valid_acc']:.4f}/{h['valid_loss']:.4f}" for h in state.history]
    tried += [f"mix {m['alpha']:g} {m['valid_acc']:.4f}/{m['valid_loss']:.4f}" for m in state.mixes]
    shipped = f"; shipped {run.probe['shipped']}" if run.probe.get("shipped") else ""
    to_beat = f" (by more than the valid split's noise: above {_to_beat(run):.4f})" if run.probe else ""
    return ("probe", "linear-probe", f"no fine-tuned epoch or mix beat the linear probe on both valid_loss and "
            f"valid_acc{to_beat} (probe {probe_scores}; {', '.join(tried) or 'none ran'}){shipped}")
