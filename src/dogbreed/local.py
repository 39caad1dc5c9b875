"""Local runs without docker: an ``/opt/ml`` tree in a work directory, the image's ``train`` entry, a model.tar.gz.

The tree is what SageMaker (and the SDK's local mode) lay out: ``input/config/*.json``, one folder per
data channel under ``input/data``, ``model/``, ``output/``, ``checkpoints/``. The entry run is the same
module that ``container/train`` execs, so what passes here is what runs in the image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from . import env as envnames
from .data import SPLITS


def channels_for(data: Path) -> dict[str, Path]:
    data = Path(data).resolve()
    if all((data / split).is_dir() for split in ("train", "valid")):
        return {split: data / split for split in SPLITS if (data / split).is_dir()}
    return {"train": data}


def _resumes(hyperparameters: dict) -> bool:
    """Whether the run will resume from its checkpoints (``--resume``, default true; a value the program will refuse
    keeps them: nothing is removed on a guess)."""
    text = str(hyperparameters.get("resume", "true")).strip().lower()
    return text not in ("0", "false", "no", "n", "off")


def clear_previous_run(work: Path, resume: bool) -> None:
    """Remove what an earlier run in ``work`` left that would pass for this run's: model.tar.gz, the model folder,
    the output data (SageMaker gives every job a fresh /opt/ml/model and output), and, where this run does not
    resume, the checkpoints (a newer epoch of the earlier run would otherwise outlive this run's own)."""
    work = Path(work).resolve()
    (work / "model.tar.gz").unlink(missing_ok=True)
    folders = ["model", "output/data"] + ([] if resume else ["checkpoints"])
    for folder in folders:
        path = work / "opt_ml" / folder
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)


def layout(work: Path, channels: dict[str, Path], hyperparameters: dict, hosts=("localhost",), current_host="localhost") -> Path:
    """The /opt/ml tree of one run in ``work``, the previous run's outputs removed (:func:`clear_previous_run`)."""
    clear_previous_run(work, _resumes(hyperparameters))
    base = Path(work).resolve() / "opt_ml"
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    data_root = base / "input" / "data"
    data_root.mkdir(parents=True, exist_ok=True)
    for name, path in channels.items():
        link = data_root / name
        if link.is_symlink():
            link.unlink()
        if not link.exists():  # a real folder already there (e.g. mounted by docker) is left as it is
            link.symlink_to(Path(path).resolve(), target_is_directory=True)
    for folder in ("model", "output/data", "checkpoints", "code"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    failure = base / "output" / "failure"
    failure.unlink(missing_ok=True)
    # SageMaker hands every hyperparameter over as a JSON string.
    (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}, indent=2))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": current_host, "hosts": list(hosts), "network_interface_name": "lo"})
    )
    (config / "inputdataconfig.json").write_text(
        json.dumps({name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"} for name in channels})
    )
    return base


def flags_to_hyperparameters(argv: list[str]) -> dict:
    """``['--lr', '0.01', '--epochs', '2']`` -> ``{'lr': '0.01', 'epochs': '2'}``."""
    result: dict = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ValueError(f"unexpected argument {token!r}: training flags are --name value")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        else:
            key = token[2:]
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                value = "true"
                i += 1
            else:
                value = argv[i + 1]
                i += 2
        result[key] = value
    return result


def pack_model(model_dir: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        for child in sorted(Path(model_dir).iterdir()):
            tar.add(child, arcname=child.name)
    return target


def entry_command() -> list[str]:
    return [sys.executable, "-m", "dogbreed.toolkit_entry"]


def train_env(base: Path, extra: dict | None = None) -> dict:
    environ = dict(os.environ)
    environ[envnames.SAGEMAKER_BASE_DIR] = str(base)
    environ.setdefault("PYTHONUNBUFFERED", "1")
    for name in (envnames.SM_MODEL_DIR, envnames.SM_OUTPUT_DATA_DIR, envnames.SM_OUTPUT_DIR, envnames.SM_CHANNELS,
                 envnames.SM_HOSTS, envnames.SM_CURRENT_HOST, envnames.SM_HPS, envnames.SM_TRAINING_ENV):
        environ.pop(name, None)
    for name in list(environ):
        if name.startswith(envnames.SM_CHANNEL_PREFIX):
            environ.pop(name)
    environ.update(extra or {})
    return environ


def local_train(data: Path, work: Path, training_flags: list[str], extra_env: dict | None = None,
                stdout=None) -> tuple[int, Path]:
    """Run the image's train entry on an /opt/ml tree in ``work``; returns (exit code, model.tar.gz path)."""
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = layout(work, channels_for(data), flags_to_hyperparameters(training_flags))
    process = subprocess.run(entry_command(), env=train_env(base, extra_env), stdout=stdout, check=False)
    target = work / "model.tar.gz"
    if process.returncode == 0 and (base / "model" / "model.pth").is_file():
        pack_model(base / "model", target)
    return process.returncode, target


def failure_reason(work: Path) -> str | None:
    path = Path(work).resolve() / "opt_ml" / "output" / "failure"
    return path.read_text().strip() if path.is_file() else None
