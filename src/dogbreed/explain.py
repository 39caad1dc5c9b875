"""Why this breed: a Grad-CAM heatmap of the top breed over the photo, as a base64 PNG (issue 22 §4).

Captum's ``LayerGradCam`` on the backbone's last stage: the gradients of the breed's logit weight that stage's
feature maps. Gradients need the eager model, so the explainer holds its own fp32 copy (loaded on the first
request that asks: requests without ``explain`` cost nothing) and runs one un-batched pass a photo.
The evaluation report draws its thumbnails with the same code.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import dogness

OVERLAY_ALPHA = 0.45  # enough heat to read, enough photo to see what it covers


class NotExplainable(ValueError):
    """This model's last stage gives no feature maps (a vision transformer's tokens): Grad-CAM cannot draw it."""


def target_layer(model: nn.Module) -> nn.Module:
    """The backbone's last feature stage: timm names it in ``feature_info``, torchvision's ResNets call it layer4."""
    info = getattr(model, "feature_info", None)
    return model.get_submodule(info[-1]["module"] if info else "layer4")


class Explainer:
    """The served model's eager fp32 twin, with Grad-CAM on its last stage."""

    def __init__(self, model_dir: Path, device: torch.device | str = "cpu"):
        from captum.attr import LayerGradCam  # imported here: matplotlib and captum only for explanations

        model, _, self.prep = dogness.load_served(Path(model_dir))
        self.device = torch.device(device)
        self.model = model.float().to(self.device).eval()
        layer = target_layer(self.model)
        self._check_maps(layer)
        self.cam = LayerGradCam(self._breed_logits, layer)

    def _check_maps(self, layer: nn.Module) -> None:
        """One pass on a blank image: the stage must give NCHW maps, else every explanation would fail."""
        seen = []
        hook = layer.register_forward_hook(lambda _module, _inputs, output: seen.append(output))
        try:
            with torch.inference_mode():
                self.model(torch.zeros(1, 3, self.prep.input_size, self.prep.input_size, device=self.device))
        finally:
            hook.remove()
        shape = tuple(seen[0].shape) if seen and isinstance(seen[0], torch.Tensor) else None
        if shape is None or len(shape) != 4:
            raise NotExplainable(f"explain is not available for this model: its last stage gives {shape or 'no'} "
                                 "outputs, not feature maps (Grad-CAM needs N x C x H x W)")

    def _breed_logits(self, batch: torch.Tensor) -> torch.Tensor:
        return dogness.split(self.model(batch))[0]

    def heatmap(self, tensor: torch.Tensor, target: int) -> np.ndarray:
        """Grad-CAM of one normalized CHW image for class ``target``, upsampled to the image, in [0, 1]."""
        with torch.inference_mode(False), torch.enable_grad():
            x = tensor.detach().clone().float().unsqueeze(0).to(self.device).requires_grad_(True)
            cam = self.cam.attribute(x, target=int(target), relu_attributions=True).detach()
        cam = torch.nn.functional.interpolate(cam.float(), size=tuple(tensor.shape[-2:]), mode="bilinear",
                                              align_corners=False)[0, 0].cpu().numpy()
        peak = float(cam.max())
        return cam / peak if peak > 0 else cam  # all zero: nothing pushed this breed up, no heat drawn

    def photo(self, tensor: torch.Tensor) -> np.ndarray:
        """The normalized tensor back to the resized, cropped photo the model saw (HWC uint8)."""
        mean = torch.tensor(self.prep.mean).view(3, 1, 1)
        std = torch.tensor(self.prep.std).view(3, 1, 1)
        pixels = (tensor.detach().float().cpu() * std + mean).clamp(0, 1)
        return (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    def explain(self, batch: torch.Tensor, targets: list[int], class_names: list[str]) -> list[dict]:
        """One ``{"breed", "index", "heatmap_png"}`` a photo of ``batch`` (normalized NCHW), for its ``targets``."""
        return [{"breed": class_names[target], "index": int(target),
                 "heatmap_png": png_base64(overlay(self.photo(tensor), self.heatmap(tensor, target)))}
                for tensor, target in zip(batch, targets, strict=True)]


def overlay(photo: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """The heatmap in the jet colormap over the photo; where there is no heat, the photo shows through."""
    from matplotlib import colormaps

    colours = colormaps["jet"](heat)[..., :3]
    weight = alpha * heat[..., None] ** 0.5  # faint heat stays faint, the strongest covers at alpha
    mixed = photo.astype(np.float32) / 255 * (1 - weight) + colours * weight
    return Image.fromarray((mixed * 255).round().clip(0, 255).astype(np.uint8))


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
