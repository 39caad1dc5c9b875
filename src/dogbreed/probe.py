"""The linear probe: multinomial logistic regression on frozen features, fitted by L-BFGS.

A convex problem: on cached features it takes seconds and reaches its optimum, where a fresh head trained
for a few dozen SGD/AdamW steps stays underfit. Its L2 strength is chosen by k-fold cross-validation on train +
valid together (at 5 shots the valid split alone holds 2 images a class: a handful of images would decide), leaning
to the stronger strength within the estimate's noise (the one-standard-error rule).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .calibration import fit_temperature, unfit_reason

# L2 strengths (on the mean loss, standardized features) tried: from nearly none (much data) to strong (5 images a class).
L2_GRID = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
# L-BFGS iterations per strength: the later ones start warm; test accuracy on dogs10 moved < 0.2 point beyond 30.
MAX_ITER = 100
# Folds of the cross-validation that picks L2 (fewer where a class has fewer images than this).
FOLDS = 5


@dataclass
class ProbeFit:
    weight: torch.Tensor  # (classes, features): applies to the raw features, as the model's head does
    bias: torch.Tensor
    l2: float
    train_loss: float
    valid_loss: float
    valid_acc: float
    seconds: float
    choice: dict  # how the L2 was chosen: {"by", and where cross-validated, "folds" and each strength's loss and SE}
    # Where cross-validated: the same L2 fitted on train + valid (what the recipe ships if it keeps the probe), and
    # the temperature fitted on the out-of-fold logits (honest ones: the refit has seen every valid image).
    refit: tuple[torch.Tensor, torch.Tensor] | None = None
    refit_temperature: float | None = None

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features.float() @ self.weight.T + self.bias

    def as_dict(self) -> dict:
        return {"l2": self.l2, "train_loss": self.train_loss, "valid_loss": self.valid_loss, "valid_acc": self.valid_acc,
                "valid_images": self.valid_images, "l2_choice": self.choice, "seconds": round(self.seconds, 2)}

    @property
    def valid_images(self) -> int:
        return int(self.choice.get("valid_images", 0))


def standardize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, mean, std). Standardizing only conditions the problem: L-BFGS converges in far fewer steps.
    The clone: features computed under inference_mode are no tensors autograd may save."""
    x = x.clone().float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    return (x - mean) / std, mean, std


def _lbfgs(z, y, num_classes: int, l2: float, max_iter: int, start: tuple | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimizes mean cross-entropy + l2/2 |W|^2 on standardized features; ``start``: a neighbouring solution."""
    if start is None:
        start = (torch.zeros(num_classes, z.shape[1]), torch.zeros(num_classes))
    weight, bias = (t.clone().requires_grad_(True) for t in start)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-7, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def fold_weights(weight, bias, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """A standardized-space solution as weights that apply to the raw features (what the model's head reads)."""
    weight = weight / std
    return weight.float(), (bias - weight @ mean).float()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float,
                 max_iter: int = MAX_ITER) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias (for the raw features) of the L2-regularized logistic regression of ``y`` on ``x``."""
    z, mean, std = standardize(x)
    return fold_weights(*_lbfgs(z, y.clone(), num_classes, l2, max_iter, None), mean, std)


def fit_unstandardized(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float,
                       max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain L-BFGS probe: the penalty on the raw features' weights, no standardization, one fixed L2 (what the
    recipe's probe is measured against; ill-conditioned, hence more iterations)."""
    return _lbfgs(x.clone().float(), y.clone(), num_classes, l2, max_iter, None)


@torch.no_grad()
def score(weight, bias, x, y, dtype=None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of a linear head on features. ``dtype``: the autocast dtype the model's head
    will run in (bf16 rounds the logits: the probe is scored as the model that ships it computes)."""
    dtype = dtype or torch.float32
    logits = (x.to(dtype) @ weight.to(dtype).T + bias.to(dtype)).float()
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def stratified_folds(labels: torch.Tensor, folds: int = FOLDS, seed: int = 0) -> torch.Tensor | None:
    """The fold of every image: each class's images shuffled (seeded) and dealt round-robin, so every fold holds
    every class. As many folds as the rarest class has images, up to ``folds``; None below 2 (nothing to hold out)."""
    counts = torch.bincount(labels)
    k = min(folds, int(counts[counts > 0].min())) if len(labels) else 0
    if k < 2:
        return None
    g = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(labels), dtype=torch.int64)
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        fold[members] = torch.arange(len(members)) % k
    return fold


def cross_validate(x: torch.Tensor, y: torch.Tensor, num_classes: int, fold: torch.Tensor, grid=L2_GRID) -> dict:
    """{l2: (mean held-out cross-entropy, its standard error, the out-of-fold logits)}; each image's loss and logits
    come from the probe fitted without its fold (strengths from strong to weak, each starting from the previous one)."""
    held_out = {l2: torch.empty(len(y)) for l2 in grid}
    logits_of = {l2: torch.empty(len(y), num_classes) for l2 in grid}
    for k in range(int(fold.max()) + 1):
        train, test = fold != k, fold == k
        z, mean, std = standardize(x[train])
        solution = None
        for l2 in sorted(grid, reverse=True):
            solution = _lbfgs(z, y[train].clone(), num_classes, l2, MAX_ITER, solution)
            weight, bias = fold_weights(*solution, mean, std)
            with torch.no_grad():
                logits = x[test].float() @ weight.T + bias
                held_out[l2][test] = F.cross_entropy(logits, y[test], reduction="none")
                logits_of[l2][test] = logits
    n = len(y)
    return {l2: (losses.mean().item(), (losses.std().item() / n ** 0.5) if n > 1 else 0.0, logits_of[l2])
            for l2, losses in held_out.items()}


def choose_l2(cv: dict) -> float:
    """The one-standard-error rule: the strongest L2 whose held-out loss is within one standard error of the
    lowest. A weaker one that wins by less than the estimate's noise is not trusted over the simpler model."""
    best = min(cv, key=lambda l2: cv[l2][0])
    ceiling = cv[best][0] + cv[best][1]
    return max(l2 for l2, found in cv.items() if found[0] <= ceiling)


def _choose(x: torch.Tensor, y: torch.Tensor, num_classes: int, grid) -> tuple[dict, torch.Tensor | None]:
    """How this probe's L2 is chosen, and the chosen strength's out-of-fold logits: cross-validated on train + valid
    (``x``, ``y``) where every class has 2 images or more."""
    fold = stratified_folds(y)
    if fold is None or len(grid) == 1:
        return {"by": "fixed" if len(grid) == 1 else "valid split", "l2": grid[0] if len(grid) == 1 else None}, None
    cv = cross_validate(x, y, num_classes, fold, grid)
    l2 = choose_l2(cv)
    return {"by": f"{int(fold.max()) + 1}-fold cross-validation on train + valid, one-standard-error rule",
            "l2": l2, "folds": int(fold.max()) + 1,
            "cv_loss": {f"{k:g}": round(found[0], 4) for k, found in sorted(cv.items())},
            "cv_se": {f"{k:g}": round(found[1], 4) for k, found in sorted(cv.items())}}, cv[l2][2]


def fit(train: tuple, valid: tuple, num_classes: int, grid=L2_GRID, dtype=None) -> ProbeFit:
    """The probe on ``train`` with the L2 strength :func:`_choose` picks (``train``, ``valid``: (features, labels)).
    It is fitted on train alone, so that its valid scores stay honest: the recipe compares them with fine-tuned
    epochs'; ``refit`` is the same strength on train + valid. Without a cross-validation (a class with one image),
    the strength with the lowest valid loss, and no refit."""
    start = time.perf_counter()
    x, y = torch.cat([train[0], valid[0]]), torch.cat([train[1], valid[1]])
    choice, out_of_fold = _choose(x, y, num_classes, grid)
    choice["valid_images"] = int(len(valid[1]))
    z, mean, std = standardize(train[0])
    labels = train[1].clone()
    best, solution = None, None
    for l2 in sorted(grid, reverse=True):
        if choice["l2"] is not None and l2 < choice["l2"]:
            break
        solution = _lbfgs(z, labels, num_classes, l2, MAX_ITER, solution)
        if choice["l2"] is not None and l2 != choice["l2"]:
            continue  # a warm start on the way to the chosen strength
        weight, bias = fold_weights(*solution, mean, std)
        valid_loss, valid_acc = score(weight, bias, *valid, dtype)
        if best is None or valid_loss < best[2]:
            best = (weight, bias, valid_loss, valid_acc, l2)
    weight, bias, valid_loss, valid_acc, l2 = best
    train_loss, _ = score(weight, bias, *train, dtype)
    refit = temperature = None
    if out_of_fold is not None:  # more images than train alone: at 5 shots, 7 a class instead of 5
        refit = fit_logistic(x, y, num_classes, l2)
        temperature = fit_temperature(out_of_fold.numpy(), y.numpy())
        choice["refit_temperature_source"] = unfit_reason(out_of_fold.numpy(), y.numpy()) or "out-of-fold logits"
    return ProbeFit(weight, bias, l2, train_loss, valid_loss, valid_acc, time.perf_counter() - start,
                    {**choice, "l2": l2}, refit, temperature)
