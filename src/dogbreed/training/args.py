"""The training program's flags: ``get_args_parser`` (torchvision's name) and the checks that need no data.

The flags are also SageMaker's hyperparameter names. A bad value raises :class:`TrainingError` at once, before
anything is read, so that its reason reaches the failure file. The namespace is never changed afterwards:
:mod:`.config` resolves the defaults that depend on other flags or on the environment.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch

from .. import accel, models
from .. import env as envnames
from ..common import str2bool
from ..errors import DogbreedError
from .errors import TrainingError

# The optimizer holds its hyperparameters as float32 scalars: a larger value fails inside torch ("value cannot be
# converted to type float without overflow"), naming no flag.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
# AdamW's first step is lr / (1 - beta1) = 10 x the learning rate (the bias correction), the largest it takes.
ADAMW_STEP = 10.0


class _AsTyped(float):
    """A float flag's value that remembers its text as typed (``1e30``, not ``1e+30``): :func:`parse_args` keeps the
    texts in ``args.as_typed`` and the namespace holds plain floats."""

    text: str


def _number(kind, value: str):
    """``value`` as ``kind``. A float must be finite (nan passes no range check and inf passes every lower bound) and
    fit a float32 (the optimizer's): refused here, with the value as typed (argparse names the flag)."""
    number = kind(value)
    if not isinstance(number, float):
        return number
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value!r}")
    if abs(number) > FLOAT32_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {FLOAT32_MAX:.4g} in size (the optimizer holds float32), "
                                         f"got {value!r}")
    typed = _AsTyped(number)
    typed.text = str(value).strip()
    return typed


def _named(parse, kind):
    parse.__name__ = kind.__name__  # argparse's "invalid int value: '1e9'"
    return parse


def _positive(kind):
    def parse(value):
        number = _number(kind, value)
        if not number > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value!r}")
        return number

    return _named(parse, kind)


def _non_negative(kind):
    def parse(value):
        number = _number(kind, value)
        if number < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {value!r}")
        return number

    return _named(parse, kind)


def _fraction(value):
    number = _number(float, value)
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value!r}")
    return number


def _smoothing(value):
    number = _number(float, value)
    if not 0 <= number < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value!r}")
    return number


# Default epochs: from scratch or one learning rate; and LP-FT's fine-tuning, which starts from a fitted head and only
# adjusts the features: two epochs (a warm-up, a decay) of gentle steps; each epoch costs about 90 s on dogs10 on 2 cores.
EPOCHS, LP_FT_EPOCHS = 10, 2
LABEL_SMOOTHING = 0.1
# Below this many images per batch and process, batch statistics are too noisy to replace the pretrained ones.
BN_BATCH = 64


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so a bad hyperparameter reaches the failure file."""

    def error(self, message):
        raise TrainingError(f"bad hyperparameter: {message}")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = _Parser(description="Train a dog breed classifier (SageMaker training program)", add_help=add_help)
    a = parser.add_argument
    a("--model", default="resnet50", help="torchvision ResNet or timm model name (default: resnet50)")
    a("--pretrained-weights", default="imagenet",
      help="'imagenet' (download; or the file in a 'pretrained' channel), 'none', or a state_dict file (default: imagenet)")
    a("--train-layers", default="auto", choices=("auto", *models.TRAIN_LAYERS),
      help="what trains: auto (with pretrained weights: the head fitted on frozen features, then all layers fine-tuned "
           "gently, kept only where the valid split says it is better; without: all layers), or the head only, the "
           "last stage + head, all layers, each at one learning rate (default: auto)")
    a("--epochs", type=_positive(int), default=None,
      help=f"number of epochs (default: {LP_FT_EPOCHS} of fine-tuning after the probe under --train-layers auto with "
           f"pretrained weights, else {EPOCHS})")
    a("--batch-size", type=_positive(int), default=32, help="images per batch and process (default: 32)")
    a("--lr", type=_positive(float), default=1e-3,
      help="peak learning rate; the head's under --train-layers auto, the backbone's is lr x --backbone-lr-ratio "
           "(default: 0.001)")
    a("--backbone-lr-ratio", type=_positive(float), default=0.1,
      help="--train-layers auto: the backbone's learning rate as a fraction of the head's (default: 0.1)")
    a("--freeze-bn", default="auto", choices=("auto", "true", "false"),
      help="keep batch-norm statistics as pretrained while training; auto: under --train-layers auto with fewer "
           f"than {BN_BATCH} images per batch and process (default: auto)")
    a("--weight-decay", type=_non_negative(float), default=1e-4, help="weight decay, not on biases and norms (default: 0.0001)")
    a("--optimizer", default="adamw", choices=("adamw", "sgd"), help="optimizer (default: adamw)")
    a("--momentum", type=_non_negative(float), default=0.9, help="SGD momentum, Nesterov where > 0 (default: 0.9)")
    a("--label-smoothing", type=_smoothing, default=None,
      help=f"label smoothing (default: {LABEL_SMOOTHING}; 0 under LP-FT, whose head was fitted to the plain loss)")
    a("--warmup-epochs", type=_non_negative(float), default=1.0,
      help="epochs of linear warm-up before the cosine decay (default: 1.0)")
    a("--data-fraction", type=_fraction, default=1.0, help="stratified, seeded subset of every split (default: 1.0)")
    a("--seed", type=int, default=42, help="seed of the subset, the shuffles and the weights (default: 42)")
    a("--patience", type=_non_negative(int), default=3, help="early stopping on valid_loss; 0 disables (default: 3)")
    a("--num-workers", type=_non_negative(int), default=None,
      help="data-loader workers per process (default: one per spare core, from SM_NUM_CPUS, at most 8)")
    a("--precision", default=os.environ.get(envnames.DOGBREED_PRECISION, "auto"), choices=accel.PRECISIONS,
      help=f"compute precision; auto measures what the hardware runs fastest (default: ${envnames.DOGBREED_PRECISION} or auto)")
    a("--input-size", type=_positive(int), default=None, help="crop size in pixels (default: the model's)")
    a("--augment", type=str2bool, default=True, help="random resized crop + flip for training (default: true)")
    a("--min-crop-scale", type=_fraction, default=0.08,
      help="the smallest share of an image's area a random crop may cover (default: 0.08, torchvision's)")
    a("--gpu-decode", default="auto", choices=("auto", "false"),
      help="auto: where the model is on a CUDA device, the loaders read bytes and the GPU decodes (nvJPEG) and crops "
           "them; false: Pillow in the loader workers everywhere (default: auto)")
    a("--max-steps-per-epoch", type=_non_negative(int), default=0, help="cap the steps of an epoch; 0: all (default: 0)")
    a("--data-dir", default=None, help="a folder holding train/ valid/ test/ (default: the SageMaker channels)")
    a("--model-dir", default=None, help="where model.pth and model.json go (default: SM_MODEL_DIR)")
    a("--output-data-dir", default=None, help="where metrics.json and the reports go (default: SM_OUTPUT_DATA_DIR)")
    a("--checkpoint-dir", default=None, help="where checkpoints go (default: /opt/ml/checkpoints/<job name>)")
    a("--resume", type=str2bool, default=True, help="resume from this job's newest checkpoint (default: true)")
    a("--resume-from", default=None,
      help="a folder of another run's checkpoints to start from, refused if its settings differ (default: the 'resume' channel)")
    a("--progress", default="auto", choices=("auto", "bar", "lines", "none"),
      help="progress display on stderr; auto: a bar in a terminal, else lines (default: auto)")
    a("--profile", type=str2bool, default=True,
      help="system use, step split and a torch.profiler trace in SM_OUTPUT_DATA_DIR/profile (default: true)")
    a("--debug-out", default=None,
      help="local runs: write an smdebug trial here (default: none; SageMaker: debughookconfig.json)")
    a("--debug-interval", type=_positive(int), default=10, help="smdebug save interval in steps (default: 10)")
    a("--debug-collections", default="losses,weights,gradients,biases",
      help="smdebug collections to save, comma-separated (default: losses,weights,gradients,biases)")
    a("--feature-cache", default=None,
      help="head-only training without augmentation: cache the frozen features in this folder (default: none)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The flags as typed, checked; defaults that depend on other flags are resolved by :mod:`.config`."""
    args = get_args_parser().parse_args(argv)
    args.as_typed = {name: value.text for name, value in vars(args).items() if isinstance(value, _AsTyped)}
    for name in args.as_typed:  # plain floats onward: a subclass would reach the checkpoints' pickles
        setattr(args, name, float(getattr(args, name)))
    validate(args)
    return args


def as_typed(args: argparse.Namespace, name: str) -> str:
    """A flag's value as it was typed (its default's text where it was not given)."""
    return vars(args).get("as_typed", {}).get(name, str(getattr(args, name)))


def _check_learning_rate(args: argparse.Namespace) -> None:
    """The largest step the optimizer takes (the backbone's rate where --backbone-lr-ratio exceeds 1; AdamW's first
    step is 10 x its rate) must fit its float32 scalars."""
    ratio = max(1.0, args.backbone_lr_ratio)
    if args.lr * ratio * (ADAMW_STEP if args.optimizer == "adamw" else 1.0) <= FLOAT32_MAX:
        return
    named = f"--lr {as_typed(args, 'lr')}" + (f" x --backbone-lr-ratio {as_typed(args, 'backbone_lr_ratio')}"
                                               if ratio > 1 else "")
    adamw = args.optimizer == "adamw"
    bound = FLOAT32_MAX / ratio / (ADAMW_STEP if adamw else 1.0)
    raise TrainingError(f"{named} is too large for the optimizer: its largest step{' (AdamW: 10 x the rate)' if adamw else ''}"
                        f" must fit a float32 (at most {FLOAT32_MAX:.4g}); keep --lr at most {bound:.4g}")


def validate(args: argparse.Namespace) -> None:
    """Checks that need no data: they fail at once, before anything is read."""
    try:
        models.check_arch(args.model)
    except DogbreedError as exc:
        raise TrainingError(str(exc)) from exc
    weights = str(args.pretrained_weights)
    if weights.lower() not in ("imagenet", "none", "") and not Path(weights).is_file():
        raise TrainingError(f"--pretrained-weights {weights}: no such file")
    _check_learning_rate(args)
    if args.precision == "fp16" and not torch.cuda.is_available():
        raise TrainingError("--precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
