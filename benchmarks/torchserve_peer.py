"""The official AWS PyTorch serving stack as a peer for ``make bench-serve``.

sagemaker-pytorch-inference 2.0.25 on TorchServe 0.12.0, from PyPI, in a venv of its own
(``make torchserve-peer``; its pins would clash with ours), with its default handler and a TorchScript
model (``model.pt``), exactly as a SageMaker PyTorch endpoint would serve it. Its default handler takes
no images: its clients send the preprocessed tensor as ``application/x-npy`` and get the logits back.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from dogbreed.models import load_artifacts

VENV = Path(os.environ.get("TORCHSERVE_PEER_VENV", ".work/torchserve-peer"))
LAUNCHER = Path(__file__).with_name("torchserve_launcher.py")


class PeerUnavailable(RuntimeError):
    pass


def available() -> bool:
    return (VENV / "bin" / "python").is_file() and (VENV / "bin" / "torchserve").is_file()


def versions() -> str:
    done = subprocess.run([str(VENV / "bin" / "python"), "-c",
                           "from importlib.metadata import version as v; "
                           "print(f\"sagemaker-pytorch-inference {v('sagemaker-pytorch-inference')}, "
                           "torchserve {v('torchserve')}, torch {v('torch')}\")"],
                          capture_output=True, text=True, timeout=120)
    return done.stdout.strip() or "unknown versions"


def export_torchscript(model_dir: Path, base_dir: Path) -> Path:
    """Our trained model as the TorchScript ``model.pt`` the default handler loads, in ``base_dir/model``."""
    model, _, prep = load_artifacts(Path(model_dir))
    model = model.eval()
    example = torch.randn(1, 3, prep.input_size, prep.input_size)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    target = Path(base_dir) / "model" / "model.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(target))
    return target


def npy_body(tensor: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, tensor.numpy().astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


def start(base_dir: Path, port: int, workers: int | None, state_dir: Path, log_path: Path) -> subprocess.Popen:
    """Start the peer; ``workers=None`` leaves the count to TorchServe (one per core), as a SageMaker
    PyTorch endpoint does when SAGEMAKER_MODEL_SERVER_WORKERS is unset."""
    if not available():
        raise PeerUnavailable(f"no TorchServe peer venv at {VENV}: run make torchserve-peer")
    state_dir = Path(state_dir).resolve()
    (state_dir / "tmp").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({
        "PATH": f"{(VENV / 'bin').resolve()}:{env.get('PATH', '/usr/bin:/bin')}",
        "SAGEMAKER_BASE_DIR": str(Path(base_dir).resolve()),  # the model comes from BASE/model, as /opt/ml/model
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "TMPDIR": str(state_dir / "tmp"),  # TorchServe's pid file: one peer per directory
        "TEMP": str(state_dir / "tmp"),
    })
    if workers:
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(workers)
    handle = open(log_path, "w")
    return subprocess.Popen([str((VENV / "bin" / "python").absolute()), str(LAUNCHER), str(state_dir)], env=env,
                            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def logits(port: int, body: bytes, timeout: float = 60) -> list[float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, method="POST",
                                     headers={"Content-Type": "application/x-npy", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # nosec B310 - loopback
        return json.loads(response.read())[0]


def wait_ready(port: int, body: bytes, process: subprocess.Popen, expected: int, timeout: float = 300) -> float:
    """Cold start: seconds from now until the peer's first correct answer for ``body``, i.e. logits whose
    argmax is ``expected`` (the in-process model's top-1 for the same tensor); an answer with another
    top-1, or an error, does not count."""
    start, last = time.perf_counter(), "no answer"
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise PeerUnavailable(f"the TorchServe peer exited with {process.returncode}")
        try:
            answer = logits(port, body, timeout=60)
        except (OSError, ValueError, KeyError, IndexError, TypeError, http.client.HTTPException) as exc:
            last = f"{exc.__class__.__name__}: {exc}"
        else:
            top1 = int(np.argmax(answer)) if np.size(answer) else None
            if top1 == expected:
                return time.perf_counter() - start
            last = f"top-1 {top1}"
        time.sleep(0.25)
    raise PeerUnavailable(f"the TorchServe peer gave no correct answer (class {expected}) within {timeout:.0f} s; "
                          f"the last: {last}")


def stop(process: subprocess.Popen) -> None:
    """TorchServe's java frontend and its workers share the launcher's process group."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            time.sleep(1)  # the java frontend exits after the launcher
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
