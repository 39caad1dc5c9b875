"""Every SageMaker / dogbreed environment variable name, and one typed snapshot of them.

SageMaker (and the SDK's local mode) describe a job through ``SM_*`` variables and the JSON files
under ``/opt/ml``. The names live here and nowhere else; the rest of the package reads a
:class:`SageMakerEnv` snapshot.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

# --- names set by SageMaker / the sagemaker-training toolkit -------------------------------------
SAGEMAKER_BASE_DIR = "SAGEMAKER_BASE_DIR"  # moves /opt/ml (toolkit honours it; so do we)
SM_MODEL_DIR = "SM_MODEL_DIR"
SM_OUTPUT_DATA_DIR = "SM_OUTPUT_DATA_DIR"
SM_OUTPUT_DIR = "SM_OUTPUT_DIR"
SM_INPUT_DIR = "SM_INPUT_DIR"
SM_CHANNELS = "SM_CHANNELS"
SM_CHANNEL_PREFIX = "SM_CHANNEL_"
SM_HOSTS = "SM_HOSTS"
SM_CURRENT_HOST = "SM_CURRENT_HOST"
SM_NUM_GPUS = "SM_NUM_GPUS"
SM_NUM_CPUS = "SM_NUM_CPUS"
SM_NETWORK_INTERFACE_NAME = "SM_NETWORK_INTERFACE_NAME"  # the interface between the job's hosts (eth0)
SM_HPS = "SM_HPS"
SM_TRAINING_ENV = "SM_TRAINING_ENV"
SAGEMAKER_PROGRAM = "SAGEMAKER_PROGRAM"
SAGEMAKER_TRAINING_MODULE = "SAGEMAKER_TRAINING_MODULE"
TRAINING_JOB_NAME = "TRAINING_JOB_NAME"  # set in the container; a spot restart keeps it, a new job gets another

# --- serving (sagemaker-inference toolkit) -------------------------------------------------------
SAGEMAKER_MODEL_SERVER_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
SAGEMAKER_MODEL_SERVER_TIMEOUT = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
SAGEMAKER_BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
SAGEMAKER_MAX_REQUEST_SIZE = "SAGEMAKER_MAX_REQUEST_SIZE"  # our own: payload limit in bytes
SAGEMAKER_MAX_PAYLOAD_IN_MB = "SAGEMAKER_MAX_PAYLOAD_IN_MB"  # Batch Transform's MaxPayloadInMB (wins over the above)
SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"  # the answer type where Accept is */*
SAGEMAKER_BATCH = "SAGEMAKER_BATCH"  # "true" in a Batch Transform job's container

# --- dogbreed's own knobs --------------------------------------------------------------------------
DOGBREED_CHECKPOINT_DIR = "DOGBREED_CHECKPOINT_DIR"
DOGBREED_PRECISION = "DOGBREED_PRECISION"
# "losses=10,weights=100,...": an smdebug trial in debug/ beside the job's checkpoints (no Debugger service needed)
DOGBREED_DEBUG_COLLECTIONS = "DOGBREED_DEBUG_COLLECTIONS"
DOGBREED_THREADS = "DOGBREED_THREADS"  # compute threads of one training process (local tuning runs several)
DOGBREED_SERVE_THREADS = "DOGBREED_SERVE_THREADS"
DOGBREED_SERVE_ENGINE = "DOGBREED_SERVE_ENGINE"  # auto (on where there is no GPU), on, off: one batching model process
DOGBREED_SERVE_BATCH = "DOGBREED_SERVE_BATCH"  # most images in one forward pass of the engine
DOGBREED_ENGINE_SOCKET = "DOGBREED_ENGINE_SOCKET"  # set by the server for its workers
DOGBREED_SERVE_GRAPH = "DOGBREED_SERVE_GRAPH"  # auto (frozen TorchScript on fp32 CPUs), eager, frozen
DOGBREED_SERVE_TEMP = "DOGBREED_SERVE_TEMP"
DOGBREED_MMS_CONFIG = "DOGBREED_MMS_CONFIG"
DOGBREED_SERVER = "DOGBREED_SERVER"  # the HTTP front: native (uvicorn, the default) or mms
DOGBREED_NATIVE_PENDING = "DOGBREED_NATIVE_PENDING"  # most /invocations the native front holds at once; past it 503
DOGBREED_READ_TIMEOUT_S = "DOGBREED_READ_TIMEOUT_S"  # a request's head, then its body, must arrive within it; else 408
DOGBREED_MAX_HEAD_BYTES = "DOGBREED_MAX_HEAD_BYTES"  # request line + headers, in bytes; past it 431
DOGBREED_MAX_HEADERS = "DOGBREED_MAX_HEADERS"  # request headers, in number; past it 431
DOGBREED_MAX_CONNECTIONS = "DOGBREED_MAX_CONNECTIONS"  # connections open at once; past it 503 and close
DOGBREED_KEEP_ALIVE_S = "DOGBREED_KEEP_ALIVE_S"  # an idle connection is closed after it
DOGBREED_ENGINE_WAIT_S = "DOGBREED_ENGINE_WAIT_S"  # the longest a request waits for the engine (then a 503)
DOGBREED_SERVE_CPU_FALLBACK = "DOGBREED_SERVE_CPU_FALLBACK"  # serve on the CPU where CUDA cannot start
DOGBREED_PRECISION_CACHE = "DOGBREED_PRECISION_CACHE"  # the measured precision and layout, kept across starts

# --- torch.distributed -----------------------------------------------------------------------------
MASTER_ADDR = "MASTER_ADDR"
MASTER_PORT = "MASTER_PORT"
RANK = "RANK"
WORLD_SIZE = "WORLD_SIZE"
LOCAL_RANK = "LOCAL_RANK"
NCCL_SOCKET_IFNAME = "NCCL_SOCKET_IFNAME"  # the interface NCCL's and gloo's sockets use between hosts
GLOO_SOCKET_IFNAME = "GLOO_SOCKET_IFNAME"

DEFAULT_BASE_DIR = "/opt/ml"


def base_dir() -> Path:
    return Path(os.environ.get(SAGEMAKER_BASE_DIR, DEFAULT_BASE_DIR))


def _json_env(name: str, default):
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return default


def _resource_config(base: Path) -> dict:
    path = base / "input" / "config" / "resourceconfig.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@dataclass(frozen=True)
class SageMakerEnv:
    """What a training job is told by its environment (SM_* variables, then /opt/ml files)."""

    base: Path
    model_dir: Path
    output_data_dir: Path
    output_dir: Path
    checkpoint_dir: Path
    channels: dict[str, Path] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=lambda: ["localhost"])
    current_host: str = "localhost"
    num_gpus: int = 0
    num_cpus: int = 1
    job_name: str = ""

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def is_master_host(self) -> bool:
        return self.current_host == sorted(self.hosts)[0]

    @classmethod
    def from_environ(cls) -> SageMakerEnv:
        base = base_dir()
        env = os.environ
        channels: dict[str, Path] = {}
        for key, value in env.items():
            if key.startswith(SM_CHANNEL_PREFIX):
                channels[key[len(SM_CHANNEL_PREFIX):].lower()] = Path(value)
        data_dir = base / "input" / "data"
        if data_dir.is_dir():
            for child in sorted(data_dir.iterdir()):
                if child.is_dir() and child.name not in channels:
                    channels[child.name] = child
        resource = _resource_config(base)
        hosts = _json_env(SM_HOSTS, None) or resource.get("hosts") or ["localhost"]
        current = env.get(SM_CURRENT_HOST) or resource.get("current_host") or hosts[0]
        try:
            import torch

            detected_gpus = torch.cuda.device_count()
        except Exception:  # torch missing or broken CUDA: count none
            detected_gpus = 0
        return cls(
            base=base,
            model_dir=Path(env.get(SM_MODEL_DIR, base / "model")),
            output_data_dir=Path(env.get(SM_OUTPUT_DATA_DIR, base / "output" / "data")),
            output_dir=Path(env.get(SM_OUTPUT_DIR, base / "output")),
            checkpoint_dir=Path(env.get(DOGBREED_CHECKPOINT_DIR, base / "checkpoints")),
            channels=channels,
            hosts=list(hosts),
            current_host=current,
            num_gpus=int(env.get(SM_NUM_GPUS, detected_gpus)),
            num_cpus=int(env.get(SM_NUM_CPUS, os.cpu_count() or 1)),
            job_name=env.get(TRAINING_JOB_NAME, ""),
        )
