"""An evaluation scores the images it read: over none it is a failure naming the split, never a loss of 0."""

from __future__ import annotations

import pytest
import torch

from dogbreed import accel
from dogbreed.training.errors import TrainingError
from dogbreed.training.loop import evaluate

ACC = accel.pick("fp32", use_cuda=False)


def _batches(*counts):
    """What the loaders yield: (uint8 images, labels, unreadable indices); a batch of 0 lost every image."""
    return [(torch.zeros(n, 3, 8, 8, dtype=torch.uint8), torch.zeros(n, dtype=torch.long), () if n else (7,))
            for n in counts]


def _model():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))


def test_an_evaluation_over_no_readable_image_fails_naming_the_split():
    with pytest.raises(TrainingError, match=r"the 'valid' split: not one image could be read"):
        evaluate(_model(), torch.nn.CrossEntropyLoss(), _batches(0, 0), ACC, 2, split="valid")


def test_an_evaluation_scores_the_images_it_read():
    model = _model()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0]))
    loss, accuracy, unreadable, _ = evaluate(model, torch.nn.CrossEntropyLoss(), _batches(0, 3), ACC, 2,
                                              normalize=lambda images: images.float(), split="valid")
    assert accuracy == 1.0 and unreadable == [7]
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))))
