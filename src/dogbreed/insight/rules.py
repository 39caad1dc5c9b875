"""The seed's Debugger rules, run locally on an smdebug trial (smdebug's Rule / invoke_rule machinery).

SageMaker runs its built-in rules in a rule container; the same checks are written here on smdebug's
``Rule`` API, with the built-in rules' documented parameters and defaults, so that a local trial gets
the same verdicts: vanishing gradient, overfit, overtraining, poor weight initialization, loss not
decreasing.
"""

from __future__ import annotations

import logging

import numpy as np
from smdebug.core.modes import ModeKeys
from smdebug.exceptions import RuleEvaluationConditionMet, StepUnavailable, TensorUnavailableForStep
from smdebug.rules.rule import Rule
from smdebug.rules.rule_invoker import invoke_rule

log = logging.getLogger(__name__)


def _loss_name(trial) -> str:
    names = trial.tensor_names(collection="losses")
    if not names:
        raise ValueError("the trial has no losses collection")
    return names[0]


def _evals_until(trial, global_step):
    """Validation losses whose global step is at or before ``global_step``."""
    values = []
    for mode_step in trial.steps(mode=ModeKeys.EVAL):
        if trial.global_step(ModeKeys.EVAL, mode_step) <= global_step:
            value = _loss(trial, mode_step, ModeKeys.EVAL)
            if value is not None:
                values.append(value)
    return values


def _loss(trial, step, mode):
    try:
        return float(np.mean(trial.tensor(_loss_name(trial)).value(step, mode=mode)))
    except (TensorUnavailableForStep, StepUnavailable):
        return None


class VanishingGradient(Rule):
    """Fires when any gradient's mean absolute value falls below ``threshold`` (default 1e-7)."""

    def __init__(self, base_trial, threshold=1e-7):
        super().__init__(base_trial, action_str="")
        self.threshold = float(threshold)

    def invoke_at_step(self, step):
        for name in self.base_trial.tensor_names(collection="gradients"):
            try:
                value = self.base_trial.tensor(name).reduction_value(step, "mean", abs=True)
            except (TensorUnavailableForStep, StepUnavailable):
                continue
            if value is not None and value < self.threshold:
                log.info("vanishing gradient: %s mean |g| = %g at step %d", name, value, step)
                return True
        return False


class LossNotDecreasing(Rule):
    """Fires when the training loss has not fallen by ``diff_percent`` % over ``num_steps`` saved steps.

    Evaluated every ``num_steps`` saved steps, comparing the mean loss of the last ``num_steps`` with the
    mean of the ``num_steps`` before them (means, so that one noisy batch neither fires nor hides it).
    A non-finite loss fires at once."""

    def __init__(self, base_trial, num_steps=10, diff_percent=0.1, mode=ModeKeys.TRAIN):
        super().__init__(base_trial, action_str="")
        self.num_steps, self.diff_percent, self.mode = int(num_steps), float(diff_percent), mode

    def invoke_at_step(self, step):
        trial = self.base_trial
        steps = [s for s in trial.steps(mode=self.mode) if trial.global_step(self.mode, s) <= step]
        if not steps:
            return False
        latest = _loss(trial, steps[-1], self.mode)
        if latest is not None and not np.isfinite(latest):
            return True
        if len(steps) < 2 * self.num_steps or len(steps) % self.num_steps:
            return False
        values = [_loss(trial, s, self.mode) for s in steps[-2 * self.num_steps:]]
        if any(v is None for v in values):
            return False
        before, now = np.mean(values[: self.num_steps]), np.mean(values[self.num_steps:])
        return not now < before * (1 - self.diff_percent / 100)


class Overfit(Rule):
    """Fires when the validation loss exceeds the training loss by more than ``ratio_threshold``
    for ``patience`` consecutive evaluations (the built-in rule compares the two modes' mean losses)."""

    def __init__(self, base_trial, start_step=0, patience=1, ratio_threshold=0.1):
        super().__init__(base_trial, action_str="")
        self.start_step, self.patience, self.ratio = int(start_step), int(patience), float(ratio_threshold)
        self.bad = 0

    def invoke_at_step(self, step):
        if step < self.start_step:
            return False
        trial = self.base_trial
        train = [s for s in trial.steps(mode=ModeKeys.TRAIN) if trial.global_step(ModeKeys.TRAIN, s) <= step]
        evals = _evals_until(trial, step)
        if not train or not evals:
            return False
        train_loss = np.mean([_loss(trial, s, ModeKeys.TRAIN) for s in train[-5:]])
        eval_loss = np.mean(evals[-3:])
        if train_loss > 0 and (eval_loss - train_loss) / train_loss > self.ratio:
            self.bad += 1
        else:
            self.bad = 0
        return self.bad >= self.patience


class Overtraining(Rule):
    """Fires when the training loss has not improved by ``delta`` in ``patience_train`` saved steps while
    it stays below the validation loss (training past the point where it helps)."""

    def __init__(self, base_trial, patience_train=5, patience_validation=10, delta=0.01):
        super().__init__(base_trial, action_str="")
        self.patience_train, self.patience_validation, self.delta = int(patience_train), int(patience_validation), float(delta)

    def invoke_at_step(self, step):
        trial = self.base_trial
        train = [s for s in trial.steps(mode=ModeKeys.TRAIN) if trial.global_step(ModeKeys.TRAIN, s) <= step]
        if len(train) <= self.patience_train:
            return False
        values = [_loss(trial, s, ModeKeys.TRAIN) for s in train]
        best_before = min(v for v in values[: -self.patience_train] if v is not None)
        recent = min(v for v in values[-self.patience_train:] if v is not None)
        evals = _evals_until(trial, step)
        stalled_validation = (len(evals) > self.patience_validation
                              and min(evals[-self.patience_validation:]) >= min(evals) + self.delta)
        return recent > best_before - self.delta and (stalled_validation or (evals and recent < min(evals)))


class PoorWeightInitialization(Rule):
    """Fires when, at the first saved step, the layers' weight standard deviations differ by more than
    ``threshold`` times, or a layer starts with (nearly) zero variance."""

    def __init__(self, base_trial, threshold=10.0, distribution_range=0.001):
        super().__init__(base_trial, action_str="")
        self.threshold, self.range = float(threshold), float(distribution_range)
        self.done = False

    def invoke_at_step(self, step):
        if self.done:
            return False
        self.done = True
        stds = []
        for name in self.base_trial.tensor_names(collection="weights"):
            try:
                value = self.base_trial.tensor(name).value(step)
            except (TensorUnavailableForStep, StepUnavailable):
                continue
            if value.ndim >= 2 and value.size > 1:  # convolution and linear weights, not norms
                stds.append(float(np.std(value)))
        if len(stds) < 2:
            return False
        if min(stds) < self.range * 1e-3:
            return True
        return max(stds) / max(min(stds), 1e-12) > self.threshold * 100


RULES = {
    "VanishingGradient": VanishingGradient,
    "Overfit": Overfit,
    "Overtraining": Overtraining,
    "PoorWeightInitialization": PoorWeightInitialization,
    "LossNotDecreasing": LossNotDecreasing,
}


def run_rules(trial, names=tuple(RULES)) -> dict[str, dict]:
    """Each rule over the trial's steps: {"fired": bool, "step": first step it fired at or None}."""
    verdicts = {}
    all_steps = sorted(set(trial.steps()))  # global steps
    for name in names:
        rule = RULES[name](trial)
        fired_at = None
        for step in all_steps:
            try:
                invoke_rule(rule, start_step=step, end_step=step + 1, raise_eval_cond=True)
            except RuleEvaluationConditionMet:
                fired_at = step
                break
            except Exception as exc:  # a rule that cannot be evaluated on this trial says so
                verdicts[name] = {"fired": False, "step": None, "error": f"{exc.__class__.__name__}: {exc}"}
                break
        verdicts.setdefault(name, {"fired": fired_at is not None, "step": fired_at})
    return verdicts
