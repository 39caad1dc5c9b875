"""Weight-space ensembles of the linear probe and the fine-tuned model (WiSE-FT).

Wortsman et al., 2022, "Robust fine-tuning of zero-shot models": the straight line between a model that
kept its pretrained features (here: the probe's, LP-FT's first stage) and the same model fine-tuned often
holds weights better than either end, in and out of distribution. Both ends start from the same weights,
so their average is a model of the same shape and cost; the mixing share is chosen on the valid split.
"""

from __future__ import annotations

import torch

# Shares of the fine-tuned weights tried between the probe (0) and the fine-tuned model (1), both scored already.
ALPHAS = (0.25, 0.5, 0.75)


def mix(probe_state: dict, tuned_state: dict, alpha: float) -> dict:
    """(1 - alpha) x probe + alpha x fine-tuned, tensor by tensor. Counters (BatchNorm's num_batches_tracked) and
    other integer buffers are the fine-tuned model's: they are no weights to average."""
    if probe_state.keys() != tuned_state.keys():
        raise ValueError("the probe and the fine-tuned model hold different tensors: not one architecture")
    mixed = {}
    for name, tuned in tuned_state.items():
        probe = probe_state[name].to(tuned.device)
        mixed[name] = torch.lerp(probe.float(), tuned.float(), alpha).to(tuned.dtype) if tuned.is_floating_point() else tuned
    return mixed
