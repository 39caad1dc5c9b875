"""The ``train`` entry of the image: the sagemaker-training toolkit, running our training program.

``container/train`` execs this module. The toolkit reads ``/opt/ml`` (or ``SAGEMAKER_BASE_DIR``),
exports the ``SM_*`` variables and calls :func:`main` (``SAGEMAKER_TRAINING_MODULE``); we turn the
hyperparameters into the training program's flags. A failure is raised as the toolkit's
ClientError so that the failure file holds our readable reason, not a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import env as envnames

ENTRY = "dogbreed.toolkit_entry:main"


def hyperparameters_to_argv(hyperparameters: dict) -> list[str]:
    """SageMaker hands every hyperparameter over as a string; the toolkit JSON-decodes them."""
    argv: list[str] = []
    for key, value in sorted(hyperparameters.items()):
        if key.startswith("sagemaker_") or key.startswith("_"):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            value = "true" if value else "false"
        argv += [flag, str(value)]
    return argv


def as_typed(hyperparameters: dict, written: Path) -> dict:
    """The hyperparameters with each number and boolean as it was typed. SageMaker writes every value as a string
    (``written``: hyperparameters.json), and the toolkit JSON-decodes them: ``"1e9"`` becomes ``1000000000.0``, which
    a message would then show. Strings stay as the toolkit decoded them (their JSON quotes removed)."""
    try:
        raw = json.loads(written.read_text())
    except (OSError, ValueError):
        return dict(hyperparameters)
    return {key: raw[key] if isinstance(raw.get(key), str) and not isinstance(value, str) else value
            for key, value in hyperparameters.items()}


def main() -> None:
    from sagemaker_training import environment, errors  # in the training image only

    from .training.entry import run  # torch loads in the process that trains, not in the toolkit's launcher

    env = environment.Environment()
    os.environ.update(env.to_env_vars())
    typed = as_typed(env.hyperparameters, Path(env.input_config_dir) / "hyperparameters.json")
    code, reason = run(hyperparameters_to_argv(typed))
    if code:
        raise errors.ClientError(reason or f"training exited with code {code}")


def run_toolkit() -> None:
    """What ``docker run IMAGE train`` runs: the toolkit's trainer with our module as the framework."""
    os.environ.setdefault(envnames.SAGEMAKER_TRAINING_MODULE, ENTRY)
    from sagemaker_training.cli import train as toolkit_train  # in the training image only

    toolkit_train.main()


if __name__ == "__main__":
    run_toolkit()
    sys.exit(0)
