"""The linear probe: multinomial logistic regression on frozen features, fitted by L-BFGS.

A convex problem: on cached features it takes seconds and reaches its optimum, where a fresh head trained
for a few dozen SGD/AdamW steps stays underfit. Its L2 strength is chosen on the validation split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# L2 strengths (on the mean loss, standardized features) tried: from nearly none (much data) to strong (5 images a class).
L2_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


@dataclass
class ProbeFit:
    weight: torch.Tensor  # (classes, features): applies to the raw features, as the model's head does
    bias: torch.Tensor
    l2: float
    train_loss: float
    valid_loss: float
    valid_acc: float
    seconds: float

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features.float() @ self.weight.T + self.bias

    def as_dict(self) -> dict:
        return {"l2": self.l2, "train_loss": self.train_loss, "valid_loss": self.valid_loss, "valid_acc": self.valid_acc,
                "seconds": round(self.seconds, 2)}


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float,
                 max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias minimizing mean cross-entropy + l2/2 |W|^2 on standardized features, folded back so that
    they apply to the raw ones (standardizing only conditions the problem: L-BFGS converges in far fewer steps)."""
    x, y = x.clone().double(), y.clone()  # features computed under inference_mode: autograd needs ordinary tensors
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    weight, bias = weight.detach() / std, bias.detach()
    return weight.float(), (bias - weight @ mean).float()


@torch.no_grad()
def score(weight, bias, x, y) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of a linear head on features."""
    logits = x.float() @ weight.T + bias
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def fit(train: tuple, valid: tuple, num_classes: int, grid=L2_GRID) -> ProbeFit:
    """The probe whose L2 strength gives the lowest validation loss (``train``, ``valid``: (features, labels))."""
    start = time.perf_counter()
    best = None
    for l2 in grid:
        weight, bias = fit_logistic(*train, num_classes, l2)
        valid_loss, valid_acc = score(weight, bias, *valid)
        if best is None or valid_loss < best[2]:
            best = (weight, bias, valid_loss, valid_acc, l2)
    weight, bias, valid_loss, valid_acc, l2 = best
    train_loss, _ = score(weight, bias, *train)
    return ProbeFit(weight, bias, l2, train_loss, valid_loss, valid_acc, time.perf_counter() - start)
