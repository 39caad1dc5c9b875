"""Backbones (torchvision ResNets, any timm model) with a new head; what to train; weights; artifacts."""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .errors import ModelError
from .presets import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

log = logging.getLogger(__name__)

TRAIN_LAYERS = ("head", "last", "all")
WEIGHTS_FILE = "model.pth"
META_FILE = "model.json"
# torchvision builds its own ResNet families (the seed's resnet50 and its weights); every other name goes to timm.
TORCHVISION_FAMILIES = ("resnet", "resnext", "wide_resnet")

# torchvision and timm are imported inside the functions that use them: each costs a second or more to import, and
# the serving and launcher processes that import this module for its artifact helpers often need neither.


def is_torchvision(arch: str) -> bool:
    import torchvision

    return arch.startswith(TORCHVISION_FAMILIES) and arch in torchvision.models.list_models(module=torchvision.models)


def is_known(arch: str) -> bool:
    if is_torchvision(arch):
        return True
    import timm

    return timm.is_model(arch)


def check_arch(arch: str) -> None:
    if not is_known(arch):
        raise ModelError(
            f"unknown model {arch!r}: use a torchvision ResNet (resnet18, resnet50, ...) or a timm model name"
        )


def head_name(model: nn.Module) -> str:
    # timm models name their classifier in pretrained_cfg ("head.fc", "classifier", ...); torchvision's ResNets use "fc"
    if hasattr(model, "pretrained_cfg") and model.pretrained_cfg.get("classifier"):
        name = model.pretrained_cfg["classifier"]
        # distilled models name two classifiers ("head", "head_dist"): the first is the head proper
        return name[0] if isinstance(name, (tuple, list)) else name
    return "fc"


def _replace_head(model: nn.Module, arch: str, num_classes: int) -> nn.Module:
    # A fresh head sized for the breeds; the backbone keeps whatever weights it was built with.
    if is_torchvision(arch):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        model.reset_classifier(num_classes)
    return model


def build(arch: str, num_classes: int, download_imagenet: bool = False) -> nn.Module:
    """The backbone with a ``num_classes`` head; ImageNet weights downloaded only when asked."""
    check_arch(arch)
    if is_torchvision(arch):
        import torchvision

        try:
            model = torchvision.models.get_model(arch, weights="DEFAULT" if download_imagenet else None)
        except Exception as exc:  # no network, hub refused: the user must give a file
            raise ModelError(
                f"could not download ImageNet weights for {arch} ({exc.__class__.__name__}: {exc}); "
                "pass --pretrained-weights FILE, a 'pretrained' channel, or --pretrained-weights none"
            ) from exc
        return _replace_head(model, arch, num_classes)
    import timm

    try:
        return timm.create_model(arch, pretrained=download_imagenet, num_classes=num_classes)
    except Exception as exc:
        if not download_imagenet:
            raise ModelError(f"could not build {arch}: {exc}") from exc
        raise ModelError(
            f"could not download ImageNet weights for {arch} ({exc.__class__.__name__}: {exc}); "
            "pass --pretrained-weights FILE, a 'pretrained' channel, or --pretrained-weights none"
        ) from exc


def load_backbone_weights(model: nn.Module, path: Path) -> list[str]:
    """Load an ImageNet (or any) state_dict into everything but the head; returns the keys left out.

    ``weights_only=True``: a pickle payload cannot run code. Every non-head key must match; a file
    for another architecture is refused rather than half-loaded.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read pretrained weights {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds no state_dict")
    own = model.state_dict()
    head = head_name(model) + "."  # ImageNet's 1000-class head is not ours: it is left out, never loaded
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not k.startswith(head)}
    missing = [k for k in own if k not in usable and not k.startswith(head)]
    if missing:
        raise ModelError(
            f"{path} does not fit this architecture: {len(missing)} backbone tensors missing or mis-shaped "
            f"(first: {missing[0]})"
        )
    # BatchNorm's step counters: some checkpoints carry them and some models lack them; they are not weights
    unexpected = [k for k in state if k not in own and not k.startswith(head) and not k.endswith("num_batches_tracked")]
    if unexpected:
        raise ModelError(
            f"{path} does not fit this architecture: {len(unexpected)} tensors it does not have (first: {unexpected[0]})"
        )
    model.load_state_dict(usable, strict=False)
    return [k for k in state if k not in usable]


def last_stage_prefix(model: nn.Module) -> str:
    """The parameter-name prefix of the backbone's last stage (ResNet layer4, timm blocks[-1]/stages[-1])."""
    for name in ("layer4", "stages", "blocks", "features", "layers"):
        module = getattr(model, name, None)
        if module is None:
            continue
        if name == "layer4":
            return "layer4."
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) > 0:
            return f"{name}.{len(module) - 1}."
    raise ModelError(f"cannot find the last stage of {model.__class__.__name__}; use --train-layers head or all")


def set_trainable(model: nn.Module, train_layers: str) -> tuple[int, int]:
    """Freeze what is not trained. ``head``: the classifier; ``last``: the last stage and everything
    after it; ``all``: everything. Returns (trainable, total) parameter counts."""
    if train_layers not in TRAIN_LAYERS:
        raise ModelError(f"--train-layers must be one of {TRAIN_LAYERS}, not {train_layers!r}")
    # Parameters come in forward order: everything from the first parameter of the head (or the last stage) on trains.
    names = [name for name, _ in model.named_parameters()]
    if train_layers == "all":
        start = 0
    elif train_layers == "head":
        head = head_name(model) + "."
        start = next(i for i, n in enumerate(names) if n.startswith(head))
    else:
        prefix = last_stage_prefix(model)
        start = next(i for i, n in enumerate(names) if n.startswith(prefix))
    for index, (_, param) in enumerate(model.named_parameters()):
        param.requires_grad_(index >= start)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def frozen_modules_eval(model: nn.Module) -> None:
    """Keep BatchNorm of fully frozen modules in eval mode (running statistics are not retrained)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()


def default_preprocessing(arch: str, input_size: int | None = None) -> Preprocessing:
    # The weights were trained with a size, crop, mean/std and interpolation: training and serving must use the same.
    if is_torchvision(arch):
        base = Preprocessing(224, 256, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
        crop_pct = 224 / 256
    else:
        import timm

        cfg = timm.get_pretrained_cfg(arch)
        cfg = cfg.to_dict() if cfg is not None else {}
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
        crop_pct = float(cfg.get("crop_pct", 0.875))
        base = Preprocessing(
            size,
            int(round(size / crop_pct)),
            tuple(cfg.get("mean", IMAGENET_MEAN)),
            tuple(cfg.get("std", IMAGENET_STD)),
            cfg.get("interpolation", "bicubic") if cfg.get("interpolation") in ("bilinear", "bicubic", "nearest") else "bicubic",
        )
    if input_size and input_size != base.input_size:
        return Preprocessing(input_size, int(round(input_size / crop_pct)), base.mean, base.std, base.interpolation)
    return base


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def save_artifacts(model_dir: Path, model: nn.Module, arch: str, class_names: list[str], prep: Preprocessing, extra=None) -> None:
    """``model.pth`` (a state_dict, float32) and ``model.json`` (all that serving needs to rebuild it)."""
    import torchvision

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    # float32 on the CPU whatever precision and device trained it: serving picks its own
    state = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in unwrap(model).state_dict().items()}
    torch.save(state, model_dir / WEIGHTS_FILE)
    meta = {
        "arch": arch,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        **prep.to_json(),
        "versions": {
            "dogbreed": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
    }
    try:
        import timm

        meta["versions"]["timm"] = timm.__version__
    except ImportError:
        pass
    if extra:
        meta.update(extra)
    (model_dir / META_FILE).write_text(json.dumps(meta, indent=2))


def read_meta(model_dir: Path) -> dict:
    path = Path(model_dir) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"no {META_FILE} in {model_dir}: not a dogbreed model directory") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    for key in ("arch", "num_classes", "class_names", "input_size", "resize", "mean", "std"):
        if key not in meta:
            raise ModelError(f"{path} lacks {key!r}")
    if len(meta["class_names"]) != int(meta["num_classes"]):
        raise ModelError(f"{path}: {len(meta['class_names'])} class names for {meta['num_classes']} classes")
    return meta


def load_artifacts(model_dir: Path) -> tuple[nn.Module, dict, Preprocessing]:
    """Rebuild the trained model (eval mode, CPU) from ``model.pth`` + ``model.json``."""
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    model = build(meta["arch"], int(meta["num_classes"]))
    weights = model_dir / WEIGHTS_FILE
    try:  # weights_only: a model file from elsewhere cannot run code when it is loaded
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"no {WEIGHTS_FILE} in {model_dir}") from exc
    except Exception as exc:
        raise ModelError(f"refusing {weights}: not a plain tensor state_dict ({exc.__class__.__name__}: {exc})") from exc
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelError(f"{weights} does not match {meta['arch']} with {meta['num_classes']} classes: {exc}") from exc
    model.eval()
    return model, meta, Preprocessing.from_json(meta)


def batchnorm_eval(model: nn.Module) -> int:
    """Every BatchNorm in eval mode (its running statistics used and kept, its affine weights still trained);
    returns how many. For fine-tuning with small batches, whose own statistics are noisy."""
    found = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in found:
        module.eval()
    return len(found)
