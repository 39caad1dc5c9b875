"""The epoch loop: ``train_one_epoch`` and ``evaluate`` (torchvision's names), and the progress display."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .. import accel, distributed, models
from ..common import steps_per_epoch
from .config import LoopSettings
from .errors import TrainingError


class Progress:
    """A tqdm bar in an interactive terminal, a few plain lines otherwise; updated once per logging interval."""

    def __init__(self, mode: str, total: int, epoch: int, enabled: bool):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode if enabled else "none"
        self.total, self.epoch, self.bar, self.shown = total, epoch, None, 0
        if self.mode == "bar":
            from tqdm import tqdm  # only for an interactive terminal

            self.bar = tqdm(total=total, desc=f"epoch {epoch}", leave=False, file=sys.stderr)

    def update(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.shown)
            self.bar.set_postfix(loss=f"{loss:.4f}")
        elif self.mode == "lines":
            print(f"[progress] e{self.epoch} {step}/{self.total} loss {loss:.4f}", file=sys.stderr, flush=True)
        self.shown = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def log_interval(steps: int) -> int:
    """Steps between the host's looks at the device (loss check, progress, the SIGTERM vote): about 5 an epoch."""
    return max(1, min(50, steps // 5))


def _placeholder_batch(input_size: int):
    """What a DDP rank whose batch lost every image trains on: one black image whose loss counts zero.
    Every rank must take the same steps, or the gradient all-reduce waits forever."""
    return torch.zeros(1, 3, input_size, input_size, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), 0.0


def _two_at_least(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of one image as two copies of it: batch norm in training cannot normalize one value per channel (a
    ResNet's last stage at 32 px is 1x1). The loader drops a nominal last batch of one (setup.drops_last_batch); this
    is for a batch that unreadable images cut to one, and a DDP rank's placeholder. The mean loss, and so the
    gradient, are the one image's."""
    if labels.size(0) != 1:
        return images, labels
    return images.repeat(2, *([1] * (images.dim() - 1))), labels.repeat(2)


def _look(loss_sum: torch.Tensor, first_bad: torch.Tensor, seen: int, epoch: int, advice: str) -> float:
    """The one host sync of a logging interval: the mean loss so far, and the first step whose loss was not finite
    (every step is checked on the device, -1: none); ``advice``: the flags to lower (:attr:`Trainer.diverged`)."""
    total, bad = torch.stack([loss_sum, first_bad.double()]).tolist()
    mean = total / max(1, seen)
    if bad >= 0 or not math.isfinite(mean):
        raise TrainingError(f"the train loss became {mean} at epoch {epoch} step {int(bad)}: {advice}")
    return mean


@dataclass(frozen=True)
class Trainer:
    """What one optimizer step runs on: the model as it trains (DDP-wrapped where several processes train), its loss,
    the optimizer, the schedule, the grad scaler, the accelerator, and the batches' normalization and crop size."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: object
    acc: accel.Accelerator
    normalize: Callable | None = None
    input_size: int = 224
    # what a loss or weight that stopped being finite asks of the user: the flags that scale the steps, as typed
    diverged: str = "lower --lr or --weight-decay"


def train_one_epoch(trainer: Trainer, loader, epoch: int, settings: LoopSettings, stop, hooks=()):
    """One pass over ``loader``. Returns (mean loss over all ranks, images seen, unreadable indices, seconds).

    The host waits for the device once per logging interval, never per step, so a GPU's queue stays full."""
    model, acc = trainer.model, trainer.acc
    model.train()
    models.frozen_modules_eval(models.unwrap(model))
    if settings.freeze_bn:  # small batches: the pretrained statistics are better estimates than each batch's
        models.batchnorm_eval(models.unwrap(model))
    steps = steps_per_epoch(len(loader), settings.max_steps_per_epoch)
    every = log_interval(steps)
    progress = Progress(settings.progress, steps, epoch, enabled=settings.show)
    loss_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
    first_bad = torch.full((), -1, dtype=torch.long, device=acc.device)  # the first step with a non-finite loss
    seen, step, unreadable, weight = 0, 0, [], 1.0
    start = time.perf_counter()
    for images, labels, lost in loader:
        unreadable.extend(lost)
        if labels.numel() == 0:
            if not distributed.is_enabled():
                continue
            images, labels, weight = _placeholder_batch(trainer.input_size)
        for hook in hooks:
            hook.begin_step()
        counted = int(labels.size(0) * weight)
        images, labels = _two_at_least(images, labels)
        images = acc.prepare_batch(images)
        images = trainer.normalize(images) if trainer.normalize else images
        labels = labels.to(acc.device, non_blocking=True)
        with acc.autocast():
            loss = trainer.criterion(model(images), labels)
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss * weight).backward()
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()
        trainer.scheduler.step()
        loss_sum += loss.detach().double() * counted
        seen, step, weight = seen + counted, step + 1, 1.0
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
        for hook in hooks:
            hook.end_step(loss.detach())
        if step % every == 0 or step >= steps:
            progress.update(step, _look(loss_sum, first_bad, seen, epoch, trainer.diverged))
            if distributed.broadcast_flag(stop.requested, acc.device):
                stop.requested = True
                break
        if step >= steps:
            break
    progress.close()
    _look(loss_sum, first_bad, seen, epoch, trainer.diverged)
    elapsed = time.perf_counter() - start
    sums = distributed.all_reduce_sum([loss_sum.item(), seen], acc.device)
    return sums[0] / max(1, sums[1]), int(sums[1]), unreadable, elapsed


@dataclass
class Evaluation:
    """One pass over a split (all ranks): its loss, accuracy, unreadable indices (this rank's), the confusion matrix
    where asked, and this rank's logits and labels where asked (``keep_logits``: the calibration's fit and the
    report reuse the pass that scored the split). Unpacks as (loss, accuracy, unreadable, confusion)."""

    loss: float
    accuracy: float
    unreadable: list
    confusion: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def __iter__(self):
        return iter((self.loss, self.accuracy, self.unreadable, self.confusion))


@torch.inference_mode()
def evaluate(model, criterion, loader, acc, num_classes: int, with_confusion: bool = False, normalize=None,
             keep_logits: bool = False, split: str | None = None) -> Evaluation:
    """The whole split over all ranks (``split``: its name, for the reason). Sums (and kept logits) stay on the device
    until the end: one host sync per evaluation. Raises TrainingError where no rank read one image: the scores of
    no image are no scores, and a loss of 0 would look perfect."""
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=acc.device)
    correct = torch.zeros((), dtype=torch.int64, device=acc.device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=acc.device)
    seen, unreadable, kept, kept_labels = 0, [], [], []
    for images, labels, lost in loader:
        unreadable.extend(lost)
        if labels.numel() == 0:
            continue
        images = acc.prepare_batch(images)
        images = normalize(images) if normalize else images
        labels = labels.to(acc.device, non_blocking=True)
        with acc.autocast():
            output = model(images)
        output = output.float()
        total_loss += criterion(output, labels).double() * labels.size(0)
        predicted = output.argmax(dim=1)
        correct += (predicted == labels).sum()
        seen += labels.size(0)
        if with_confusion:
            confusion += torch.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
        if keep_logits:
            kept.append(output)
            kept_labels.append(labels)
    sums = distributed.all_reduce_sum([total_loss.item(), correct.item(), seen], acc.device)
    matrix = None
    if with_confusion:
        matrix = distributed.all_reduce_tensor(confusion).cpu().view(num_classes, num_classes)
    seen = sums[2]
    if seen == 0:  # every rank has the same sums: all stop together
        where = f"the {split!r} split" if split else "the split"
        raise TrainingError(f"{where}: not one image could be read, so the model cannot be scored (a loss over no "
                            f"image would read 0); replace the unreadable files")
    result = Evaluation(sums[0] / seen, sums[1] / seen, unreadable, matrix)
    if keep_logits:
        result.logits = torch.cat(kept).cpu() if kept else torch.zeros(0, num_classes)
        result.labels = torch.cat(kept_labels).cpu() if kept_labels else torch.zeros(0, dtype=torch.int64)
    return result
