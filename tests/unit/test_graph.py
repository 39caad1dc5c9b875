"""The frozen TorchScript graph serves only where it answers as the model does."""

from __future__ import annotations

import torch
from torch import nn

from dogbreed import models
from dogbreed.serving import graph


def test_a_frozen_resnet_gives_the_models_answers_on_any_batch_size():
    torch.manual_seed(0)
    model = models.build("resnet18", 7).eval()
    frozen = graph.freeze(model, 64, channels_last=True)
    assert frozen is not None and isinstance(frozen, torch.jit.ScriptModule)
    x = torch.randn(5, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected, got = model(x), frozen(x)
    assert torch.allclose(got, expected, atol=1e-3, rtol=1e-3)
    assert torch.equal(got.argmax(1), expected.argmax(1))


class _BatchDependent(nn.Module):
    """Python control flow on the batch size: a trace bakes in one branch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        pooled = x.mean(dim=(2, 3))
        return self.fc(pooled) if x.shape[0] == 1 else -self.fc(pooled)


def test_a_graph_that_disagrees_with_the_model_is_not_served():
    assert graph.freeze(_BatchDependent().eval(), 16, channels_last=False) is None
