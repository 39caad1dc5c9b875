"""The run configuration: the flags and the environment resolved once into a frozen value, passed down.

:func:`build` is the only place where a default that depends on another flag or on SageMaker's environment is
chosen (the epochs and label smoothing of the recipe, the paths, the channels, the workers); nothing changes the
configuration afterwards (``dataclasses.FrozenInstanceError``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..distributed import DistInfo
from ..env import SageMakerEnv
from .errors import TrainingError

# Default epochs: from scratch or one learning rate; and LP-FT's fine-tuning, which starts from a fitted head and only
# adjusts the features: two epochs (a warm-up, a decay) of gentle steps; each epoch costs about 90 s on dogs10 on 2 cores.
EPOCHS, LP_FT_EPOCHS = 10, 2
LABEL_SMOOTHING = 0.1
# Below this many images per batch and process, batch statistics are too noisy to replace the pretrained ones.
BN_BATCH = 64

# Flags that change where things go or how they are shown, not what is trained: a resume may differ in these.
NOT_TRAINING = frozenset({"num_workers", "progress", "profile", "debug_out", "debug_interval", "debug_collections",
                          "data_dir", "model_dir", "output_data_dir", "checkpoint_dir", "resume", "resume_from",
                          "feature_cache", "is_main", "channels"})


@dataclass(frozen=True)
class LoopSettings:
    """What one epoch of :func:`.loop.train_one_epoch` needs to know of the run."""

    max_steps_per_epoch: int = 0
    progress: str = "none"
    show: bool = True  # this process reports progress (the main rank)
    freeze_bn: bool = False  # batch-norm statistics stay as pretrained


@dataclass(frozen=True)
class RunConfig:
    """One training run's settings: every flag (defaults resolved), the paths and channels, the processes."""

    # the flags, in the parser's order
    model: str
    pretrained_weights: str  # 'imagenet', 'none' or a file (the 'pretrained' channel's, where there is one)
    train_layers: str
    epochs: int
    batch_size: int
    lr: float
    backbone_lr_ratio: float
    freeze_bn: str
    weight_decay: float
    optimizer: str
    momentum: float
    label_smoothing: float
    warmup_epochs: float
    data_fraction: float
    seed: int
    patience: int
    num_workers: int | None  # as given; ``workers`` is what runs
    precision: str
    input_size: int | None
    augment: bool
    min_crop_scale: float
    gpu_decode: str  # 'auto' (on a CUDA device) or 'false'
    max_steps_per_epoch: int
    data_dir: str | None
    model_dir: Path
    output_data_dir: Path
    checkpoint_dir: Path
    resume: bool
    resume_from: str | None
    progress: str
    profile: bool
    debug_out: str | None
    debug_interval: int
    debug_collections: str
    feature_cache: str | None
    # resolved from the environment
    channels: Mapping[str, Path]
    smenv: SageMakerEnv
    dist: DistInfo
    use_cuda: bool
    workers: int
    # the float flags' values as typed (``1e30``, not ``1e+30``), for the reasons that name them
    as_typed: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def lp_ft(self) -> bool:
        """The default recipe (LP-FT) runs where there are pretrained features to probe: linear probe, then
        fine-tuning (:mod:`.setup` drops it for a model whose head is not one Linear layer)."""
        return self.train_layers == "auto" and self.pretrained_weights.lower() not in ("none", "")

    @property
    def layers(self) -> str:
        """What trains by gradient: ``auto`` fine-tunes all layers (after the probe where there are weights)."""
        return "all" if self.train_layers == "auto" else self.train_layers

    @property
    def bn_frozen(self) -> bool:
        if self.freeze_bn == "auto":
            return self.lp_ft and self.batch_size < BN_BATCH
        return self.freeze_bn == "true"

    @property
    def loop(self) -> LoopSettings:
        return LoopSettings(self.max_steps_per_epoch, self.progress, self.is_main, self.bn_frozen)

    def hyperparameters(self) -> dict:
        """The flags as metrics.json records them: the plain values (paths and channels left out)."""
        found = {name: getattr(self, name) for name in FLAGS}
        found = {k: v for k, v in found.items() if v is None or isinstance(v, (int, float, str, bool))}
        return {**found, "is_main": self.is_main}

    def training_settings(self) -> dict:
        """The settings that change what training computes, sorted: a checkpoint's fingerprint."""
        return {k: v for k, v in sorted(self.hyperparameters().items()) if k not in NOT_TRAINING}


_FIELDS = [f.name for f in dataclasses.fields(RunConfig)]
FLAGS = tuple(_FIELDS[:_FIELDS.index("channels")])  # one field a flag (a unit test compares them with the parser)


def _channels_and_resume(args: argparse.Namespace, smenv: SageMakerEnv) -> tuple[dict, str | None]:
    channels = dict(smenv.channels)
    resume_from = args.resume_from or (str(channels["resume"]) if "resume" in channels else None)
    channels.pop("resume", None)
    if args.data_dir:
        channels = {"train": Path(args.data_dir)}
    return channels, resume_from


def _weights(args: argparse.Namespace, channels: dict) -> str:
    """``imagenet`` with a 'pretrained' channel: the channel's weights file, not a download."""
    weights = str(args.pretrained_weights)
    if weights.lower() != "imagenet" or "pretrained" not in channels:
        return weights
    files = sorted(p for p in Path(channels["pretrained"]).rglob("*") if p.is_file() and p.suffix in (".pth", ".pt", ".bin"))
    if not files:
        raise TrainingError(f"the 'pretrained' channel {channels['pretrained']} holds no .pth/.pt file")
    return str(files[0])


def default_workers(smenv: SageMakerEnv, procs_per_host: int) -> int:
    """One worker per spare core (decoding runs beside the compute), at least one, at most 8."""
    per_process = max(1, smenv.num_cpus // max(1, procs_per_host))
    return max(1, min(8, per_process - 1)) if per_process > 1 else 1


def procs_per_host(smenv: SageMakerEnv, use_cuda: bool) -> int:
    return max(1, smenv.num_gpus) if use_cuda else 1


def build(args: argparse.Namespace, smenv: SageMakerEnv, dist: DistInfo, use_cuda: bool) -> RunConfig:
    """The configuration of one run from the checked flags (:func:`.args.parse_args`) and the environment.

    Paths come from the flags, else from SageMaker's environment. Checkpoints go under the job's own name:
    SageMaker restores a spot-interrupted job under that name, and a new job starts clean."""
    channels, resume_from = _channels_and_resume(args, smenv)
    if args.checkpoint_dir:
        checkpoints = Path(args.checkpoint_dir)
    else:
        checkpoints = smenv.checkpoint_dir / smenv.job_name if smenv.job_name else smenv.checkpoint_dir
    flags = {name: getattr(args, name) for name in FLAGS}
    lp_ft = args.train_layers == "auto" and str(args.pretrained_weights).lower() not in ("none", "")
    workers = args.num_workers if args.num_workers is not None else default_workers(smenv, procs_per_host(smenv, use_cuda))
    flags.update(
        pretrained_weights=_weights(args, channels),
        epochs=args.epochs if args.epochs is not None else (LP_FT_EPOCHS if lp_ft else EPOCHS),
        # LP-FT: smoothed targets would first pull the fitted head's logits in, and make the fine-tuned model's valid
        # loss (plain cross-entropy) an unfair comparison with the probe's.
        label_smoothing=args.label_smoothing if args.label_smoothing is not None else (0.0 if lp_ft else LABEL_SMOOTHING),
        model_dir=Path(args.model_dir or smenv.model_dir),
        output_data_dir=Path(args.output_data_dir or smenv.output_data_dir),
        checkpoint_dir=checkpoints, resume_from=resume_from)
    return RunConfig(**flags, channels=MappingProxyType(channels), smenv=smenv, dist=dist, use_cuda=use_cuda,
                     workers=workers, as_typed=MappingProxyType(dict(vars(args).get("as_typed", {}))))
