"""On a real CUDA GPU: the paths the other tests drive only by mocking the device's capabilities.

Skipped, with the reason, where torch sees no GPU (CI, this project's CPU machines). On a GPU machine:
``python -m pytest tests/gpu`` (no docker, no AWS, no sagemaker-training: the training program runs as
``python -m dogbreed.train``, the module the image's toolkit entry calls).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from dogbreed import accel, models
from dogbreed.sample import make_sample

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch here")]

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--model", "resnet18", "--input-size", "64", "--batch-size", "25", "--lr", "0.003", "--patience", "0",
         "--num-workers", "2", "--profile", "false"]


def _native_bf16() -> bool:
    return torch.cuda.get_device_capability(0) >= (8, 0)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample") / "dogImages"
    make_sample(root, classes=5, size=96, seed=0)
    return root


def _env(work: Path, **extra) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", SAGEMAKER_BASE_DIR=str(work / "opt_ml"))
    env.update(extra)
    return env


def train(sample: Path, work: Path, *flags: str) -> dict:
    """The training program on ``sample``; returns metrics.json (asserting a clean exit)."""
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "dogbreed.train", "--data-dir", str(sample), "--model-dir", str(work / "model"),
               "--output-data-dir", str(work / "out"), "--checkpoint-dir", str(work / "checkpoints"), *QUICK, *flags]
    done = subprocess.run(command, env=_env(work), capture_output=True, text=True, timeout=900)
    (work / "train.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((work / "out" / "metrics.json").read_text())


def test_auto_precision_is_the_gpus_native_one_and_an_amp_step_learns():
    acc = accel.pick("auto", training=True)
    assert acc.device.type == "cuda"
    assert acc.precision == ("bf16" if _native_bf16() else "fp16"), acc.reason
    for precision in ("auto", "fp16"):
        acc = accel.pick(precision, training=True)
        scaler = acc.grad_scaler()
        assert scaler.is_enabled() == (acc.precision == "fp16")  # bf16 has fp32's range: no loss scaling
        torch.manual_seed(0)
        net = acc.prepare_model(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
                                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                                    torch.nn.Linear(8, 4)))
        optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
        y = torch.arange(32, device=acc.device) % 4
        x = torch.randn(32, 3, 16, 16, device=acc.device)
        x[:, 0] += y.view(-1, 1, 1) - 1.5  # a class one channel's brightness tells: learnable in a few steps
        losses = []
        for _ in range(30):
            optimizer.zero_grad()
            with acc.autocast():
                out = net(acc.prepare_batch(x))
                loss = torch.nn.functional.cross_entropy(out.float(), y)
            assert out.dtype == acc.autocast_dtype
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
        assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] * 0.9, losses


@pytest.mark.parametrize("precision", ["auto", "fp16", "fp32"])
def test_training_on_the_gpu_writes_a_model_a_cpu_serves_alike(sample, tmp_path, precision):
    metrics = train(sample, tmp_path, "--pretrained-weights", "none", "--epochs", "2", "--precision", precision)
    chosen = metrics["precision"]
    assert chosen["device"].startswith("cuda"), chosen
    assert chosen["precision"] == {"auto": "bf16" if _native_bf16() else "fp16"}.get(precision, precision), chosen
    losses = [e["train_loss"] for e in metrics["history"]]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), metrics["history"]
    # saved as CPU tensors: a CPU-only serving host (ml.c5, serverless) loads it without CUDA
    state = torch.load(tmp_path / "model" / "model.pth", weights_only=True)
    assert state and {t.device.type for t in state.values()} == {"cpu"}
    _same_answers_on_gpu_and_cpu(tmp_path / "model", sample, tmp_path)


CPU_PROBS = """
import sys, torch
from pathlib import Path
from PIL import Image
from dogbreed.serving.predictor import Predictor
assert not torch.cuda.is_available()
p = Predictor(Path(sys.argv[1]), precision="fp32", graph="eager")
torch.save(p.probabilities([Image.open(x).convert("RGB") for x in sys.argv[3:]]), sys.argv[2])
"""


def _same_answers_on_gpu_and_cpu(model_dir: Path, sample: Path, tmp_path: Path) -> None:
    from dogbreed.serving.predictor import Predictor

    paths = sorted(str(p) for p in (sample / "test").glob("*/*"))[:20]
    gpu = Predictor(model_dir)
    assert gpu.acc.device.type == "cuda"
    got = gpu.probabilities([Image.open(p).convert("RGB") for p in paths])
    out = tmp_path / "cpu.pt"
    subprocess.run([sys.executable, "-c", CPU_PROBS, str(model_dir), str(out), *paths], check=True, timeout=300,
                   env=_env(tmp_path, CUDA_VISIBLE_DEVICES=""))
    want = torch.load(out)
    # bf16/fp16 round the logits; fp32 convolutions run in TF32 on sm_80+ (cuDNN's default in torch)
    tolerance = 3e-2
    assert (got - want).abs().max().item() < tolerance
    clear = (want.topk(2).values[:, 0] - want.topk(2).values[:, 1]) > 2 * tolerance
    assert torch.equal(got.argmax(1)[clear], want.argmax(1)[clear])


def test_the_default_recipe_runs_its_probe_and_fine_tuning_on_the_gpu(sample, tmp_path):
    torch.manual_seed(1)
    weights = tmp_path / "pretrained.pth"
    torch.save(models.build("resnet18", 1000).state_dict(), weights)
    metrics = train(sample, tmp_path / "run", "--pretrained-weights", str(weights))
    recipe = metrics["recipe"]
    assert recipe["name"] == "lp-ft" and recipe["kept"] in ("probe", "fine-tuned", "mixed"), recipe
    assert len(recipe["mixes"]) == 3, recipe  # the probe/fine-tuned weight mixes, scored on the GPU
    assert math.isfinite(recipe["probe"]["valid_loss"]), recipe
    assert metrics["precision"]["device"].startswith("cuda")
    tuned = metrics["history"]
    assert tuned and all(math.isfinite(e["train_loss"]) for e in tuned), tuned
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["trained"]["recipe"]["kept"] == recipe["kept"]


def test_the_engine_batches_on_the_gpu_and_answers_as_the_in_process_model(sample, tmp_path):
    from dogbreed.serving.engine import EngineClient
    from dogbreed.serving.predictor import Predictor
    from dogbreed.serving.supervisor import engine_listening

    train(sample, tmp_path / "run", "--pretrained-weights", "none", "--epochs", "1")
    model_dir = tmp_path / "run" / "model"
    socket_path, log_path = tmp_path / "engine.sock", tmp_path / "engine.log"
    with open(log_path, "w") as log:
        engine = subprocess.Popen([sys.executable, "-m", "dogbreed.serving.batcher", "--model-dir", str(model_dir),
                                   "--socket", str(socket_path), "--max-batch", "8", "--threads", "2"],
                                  stdout=log, stderr=subprocess.STDOUT, env=_env(tmp_path))
        try:
            deadline = time.monotonic() + 300
            while not engine_listening(socket_path):
                assert engine.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            assert re.search(r"device=cuda", log_path.read_text()), log_path.read_text()
            local = Predictor(model_dir)
            images = [Image.open(p).convert("RGB") for p in sorted((sample / "test").glob("*/*"))[:12]]
            got = EngineClient(str(socket_path)).top_k(local.tensor(images), 3)  # 12 > --max-batch: two chunks
            want = local.top_k(images, 3)
            assert [[a["index"] for a in row] for row in got] == [[a["index"] for a in row] for row in want]
            for row_got, row_want in zip(got, want, strict=True):
                for a, b in zip(row_got, row_want, strict=True):
                    assert a["probability"] == pytest.approx(b["probability"], abs=1e-2)
        finally:
            engine.terminate()
            engine.wait(timeout=60)


def test_jpegs_decode_and_crop_on_the_gpu_as_the_cpu_path_does(sample):
    from dogbreed import data, gpu_decode
    from dogbreed.presets import Preprocessing

    prep = Preprocessing(input_size=64, resize=73)
    paths = sorted((sample / "valid").rglob("*.jpg"))[:8]
    samples = [(path, 0) for path in paths]
    dataset = gpu_decode.EncodedSamples(samples)
    encoded, labels, _, indices, seeds = gpu_decode.collate_encoded([dataset[i] for i in range(len(samples))])
    device = torch.device("cuda", 0)
    assert gpu_decode.decodes_on_gpu(device)
    images, kept, lost = gpu_decode.BatchDecoder(prep, device, augment=False)(encoded, labels, indices, seeds)
    assert images.device.type == "cuda" and images.shape == (8, 3, 64, 64) and not lost
    cpu = torch.stack([data.ImageSamples(samples, prep.eval_transform(False))[i][0] for i in range(8)])
    assert (images.cpu().float() - cpu.float()).abs().mean() < 6  # nvJPEG's and libjpeg's IDCTs, two resizers apart
