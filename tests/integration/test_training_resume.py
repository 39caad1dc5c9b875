"""Spot interruptions and repeated jobs: SIGTERM mid-epoch, resume within a job or on request, the resume
fingerprint, per-job checkpoint folders, DDP ranks on an uneven split, SIGTERM reaching spawned workers."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from dogbreed import checkpoint, metrics, models
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow

FLAGS = ["--model", "resnet18", "--pretrained-weights", "none", "--input-size", "32", "--epochs", "3",
         "--batch-size", "10", "--lr", "0.003", "--patience", "0", "--num-workers", "1", "--precision", "fp32",
         "--profile", "false", "--seed", "7", "--progress", "lines"]


def _program(data: Path, out: Path, flags: list[str], env: dict | None = None, **popen) -> subprocess.Popen:
    """The training program itself, on plain folders (no toolkit), one thread: runs are comparable bit for bit."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "dogbreed.train", "--data-dir", str(data), "--model-dir", str(out / "model"),
            "--output-data-dir", str(out / "output"), *flags]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "TRAINING_JOB", "DOGBREED_", "RANK"))}
    environ.update({"DOGBREED_THREADS": "1", "OMP_NUM_THREADS": "1", "SAGEMAKER_BASE_DIR": str(out / "opt_ml"),
                    "PYTHONUNBUFFERED": "1", **(env or {})})
    return subprocess.Popen(argv, env=environ, cwd=ROOT, **popen)


def _run(data, out, flags, env=None, timeout=600) -> tuple[int, str]:
    with open(out.parent / f"{out.name}.log", "w") as log:
        process = _program(data, out, flags, env, stdout=log, stderr=subprocess.STDOUT)
        code = process.wait(timeout=timeout)
    return code, (out.parent / f"{out.name}.log").read_text()


def _metric_lines(text: str) -> list[str]:
    """Metric lines without their throughput (the only figure that may differ between two equal runs)."""
    lines = [line for line in text.splitlines() if re.match(r"^(epoch|test_loss)=", line)]
    return [re.sub(r" images_per_sec=\S+", "", line) for line in lines]


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0 for k in a)


def test_sigterm_mid_epoch_then_resume_ends_as_an_uninterrupted_run(sample_dir, tmp_path):
    ckpt = ["--checkpoint-dir"]
    code, reference = _run(sample_dir, tmp_path / "reference", FLAGS + ckpt + [str(tmp_path / "ref-ckpt")])
    assert code == 0, reference
    interrupted = tmp_path / "interrupted"
    checkpoints = tmp_path / "ckpt"
    log = tmp_path / "first.log"
    with open(log, "w") as handle:
        process = _program(sample_dir, interrupted, FLAGS + ckpt + [str(checkpoints)], stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while "[progress] e2 " not in log.read_text() and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        clean = checkpoints / "checkpoint-0001.pth"
        assert clean.is_file(), log.read_text()
        before = clean.read_bytes()
        process.send_signal(signal.SIGTERM)  # mid-epoch 2: some of its steps have run
        assert process.wait(timeout=120) == 143, log.read_text()
    first = log.read_text()
    assert "during epoch 2" in (interrupted / "opt_ml/output/failure").read_text()
    assert clean.read_bytes() == before, "the last clean checkpoint was overwritten by a half-trained epoch"
    assert [p.name for _, p in checkpoint.list_checkpoints(checkpoints)] == ["checkpoint-0001.pth"]
    code, resumed = _run(sample_dir, interrupted, FLAGS + ckpt + [str(checkpoints)])
    assert code == 0, resumed
    assert "resumed_from_epoch=1" in resumed
    assert _metric_lines(first) + _metric_lines(resumed) == _metric_lines(reference)
    difference = _max_difference(_weights(interrupted / "model/model.pth"), _weights(tmp_path / "reference/model/model.pth"))
    assert difference <= 1e-6


def test_sigterm_during_the_linear_probe_is_a_clean_stop(sample_dir, tmp_path):
    """A spot interruption while the default recipe sets up and its probe reads the images: exit 143 and a reason,
    not a death by the signal with no failure file. SIGTERM goes out as soon as the data is listed (the first log
    line after the handler is installed); the model build and the probe's pass over 300 images at 160 px follow."""
    weights = tmp_path / "resnet18.pth"
    torch.save(models.build("resnet18", 1000).state_dict(), weights)
    flags = [*FLAGS, "--pretrained-weights", str(weights), "--input-size", "160", "--checkpoint-dir", str(tmp_path / "ckpt")]
    log = tmp_path / "probe.log"
    with open(log, "w") as handle:
        process = _program(sample_dir, tmp_path / "run", flags, stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while "data: " not in log.read_text() and time.time() < deadline and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=300) == 143, log.read_text()
    text = log.read_text()
    assert "linear probe (L-BFGS" in text, "the probe was cut short instead of finishing its pass"
    reason = (tmp_path / "run/opt_ml/output/failure").read_text()
    assert "SIGTERM before the first epoch" in reason, reason
    assert not list((tmp_path / "ckpt").glob("checkpoint-*")), "no epoch ran, so no checkpoint may exist"


def test_resume_from_another_job_is_refused_when_its_settings_differ(sample_dir, tmp_path):
    short = FLAGS[:]
    short[short.index("--epochs") + 1] = "1"
    short += ["--max-steps-per-epoch", "3"]
    code, log = _run(sample_dir, tmp_path / "first", short + ["--checkpoint-dir", str(tmp_path / "jobs/first-job")])
    assert code == 0, log
    changed = short[:]
    changed[changed.index("--lr") + 1] = "0.01"
    code, log = _run(sample_dir, tmp_path / "second", changed + ["--checkpoint-dir", str(tmp_path / "second-ckpt"),
                                                                 "--resume-from", str(tmp_path / "jobs")])
    assert code == 1
    reason = (tmp_path / "second/opt_ml/output/failure").read_text()
    assert "refusing to resume" in reason and "lr: 0.003 -> 0.01" in reason
    same = short[:]
    same[same.index("--epochs") + 1] = "1"
    code, log = _run(sample_dir, tmp_path / "third", same + ["--checkpoint-dir", str(tmp_path / "third-ckpt"),
                                                             "--resume-from", str(tmp_path / "jobs")])
    assert code == 0 and "resumed_from_epoch=1" in log  # found under the other job's subfolder


def test_each_job_checkpoints_under_its_own_name_and_a_new_job_starts_clean(sample_dir, tmp_path):
    short = FLAGS[:]
    short[short.index("--epochs") + 1] = "1"
    short += ["--max-steps-per-epoch", "2"]
    shared = tmp_path / "opt-ml-checkpoints"  # what SageMaker restores: the job's S3 prefix
    env = {"DOGBREED_CHECKPOINT_DIR": str(shared)}
    code, log = _run(sample_dir, tmp_path / "a", short, {**env, "TRAINING_JOB_NAME": "dogbreed-a"})
    assert code == 0, log
    assert (shared / "dogbreed-a/checkpoint-0001.pth").is_file()
    code, log = _run(sample_dir, tmp_path / "b", short, {**env, "TRAINING_JOB_NAME": "dogbreed-b"})
    assert code == 0 and "resumed_from" not in log and "epoch=1 " in log  # trained, did not ship job a's model
    code, log = _run(sample_dir, tmp_path / "a2", short, {**env, "TRAINING_JOB_NAME": "dogbreed-a"})
    assert code == 0 and "resumed_from_epoch=1" in log  # the same job restarted (spot) resumes


def _corrupt_copy(sample_dir: Path, target: Path) -> Path:
    shutil.copytree(sample_dir, target)
    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), "red").save(buffer, "JPEG")
    (target / "train/001.Affenpinscher/corrupt.jpg").write_bytes(buffer.getvalue()[:60])
    return target


def test_an_unreadable_image_is_counted_once_over_epochs(sample_dir, tmp_path):
    data = _corrupt_copy(sample_dir, tmp_path / "data")
    flags = FLAGS[:]
    flags[flags.index("--epochs") + 1] = "2"
    flags[flags.index("--input-size") + 1] = "64"  # the last batch holds one image: batch norm needs 2x2 maps then
    code, log = _run(data, tmp_path / "run", flags + ["--checkpoint-dir", str(tmp_path / "ckpt")])
    assert code == 0, log
    summary = json.loads((tmp_path / "run/output/metrics.json").read_text())
    assert summary["unreadable_images"] == {"train": 1, "valid": 0, "test": 0} and summary["skipped_images"] == 1
    assert [h["new_unreadable"] for h in summary["history"]] == [1, 0]
    assert log.count("corrupt.jpg") == 1
    # the precision choice and its reason travel with the metrics and the model
    meta = json.loads((tmp_path / "run/model/model.json").read_text())
    for record in (summary["precision"], meta["precision"]):
        assert record["precision"] == "fp32" and record["device"] == "cpu" and record["grad_scaler"] is False
        assert record["reason"] == "fp32 asked for on the CPU"
    assert "fp32 asked for on the CPU" in log


def test_two_ddp_ranks_on_an_uneven_split_take_every_step_together(sample_dir, tmp_path):
    # 201 train images (one unreadable) on 2 ranks, batch 1: the shards are uneven before padding, and a
    # rank meets a batch that lost its only image. Both ranks must take every step together.
    data = _corrupt_copy(sample_dir, tmp_path / "data")
    flags = FLAGS[:]
    flags[flags.index("--epochs") + 1] = "1"
    flags[flags.index("--batch-size") + 1] = "1"
    flags[flags.index("--input-size") + 1] = "64"  # batch norm needs more than one value per channel at 1 image
    port = str(free_port())
    processes = []
    for rank in (0, 1):
        env = {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "GLOO_SOCKET_IFNAME": "lo"}
        log = open(tmp_path / f"rank{rank}.log", "w")
        processes.append(_program(data, tmp_path / f"rank{rank}", flags + ["--checkpoint-dir", str(tmp_path / f"ckpt{rank}")],
                                  env, stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=600) for p in processes]
    finally:
        for p in processes:
            p.kill()
    logs = [(tmp_path / f"rank{r}.log").read_text() for r in (0, 1)]
    assert codes == [0, 0], logs
    # global rank 0 alone writes the checkpoint (every host syncs its folder to the one S3 prefix); both ranks took
    # every step together, or a collective would have hung or failed above
    assert _weights(tmp_path / "ckpt0/checkpoint-0001.pth")["model"]
    assert not list((tmp_path / "ckpt1").glob("checkpoint-*.pth")), "rank 1 wrote a checkpoint"
    summary = json.loads((tmp_path / "rank0/output/metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["unreadable_images"]["train"] == 1
    assert metrics.parse(logs[0], "epoch") == [1.0]


def _wait_for_sigterm(rank: int, folder: str) -> None:
    """A spawned worker: says it is ready, then waits for SIGTERM and records it."""
    def record(signum, frame):
        Path(folder, f"got-{rank}").write_text("SIGTERM")
        os._exit(143)

    signal.signal(signal.SIGTERM, record)
    Path(folder, f"ready-{rank}").write_text("")
    time.sleep(120)


def test_sigterm_to_the_parent_reaches_every_spawned_worker(tmp_path):
    script = ("import sys; from dogbreed import distributed; from tests.integration.test_training_resume import "
              "_wait_for_sigterm as fn; print(distributed.spawn_forwarding_sigterm(fn, (sys.argv[1],), 2).codes, flush=True)")
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.time() < deadline:
        time.sleep(0.1)
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=60)
    assert sorted(p.name for p in tmp_path.glob("got-*")) == ["got-0", "got-1"]
    assert out.strip() == "[143, 143]"


def _fail_or_wait_deaf(rank: int, folder: str) -> None:
    """A spawned worker: rank 1 fails at once; rank 0 waits deaf to SIGTERM, as a rank blocked in a collective."""
    if rank == 1:
        raise RuntimeError("rank 1 fails")
    signal.signal(signal.SIGTERM, lambda signum, frame: Path(folder, "rank0-got-sigterm").write_text(""))
    time.sleep(300)


@pytest.mark.timeout(120)
def test_a_failing_spawned_process_ends_the_others_promptly(tmp_path):
    script = ("import sys; from dogbreed import distributed; from tests.integration.test_training_resume import "
              "_fail_or_wait_deaf as fn; print(distributed.spawn_forwarding_sigterm(fn, (sys.argv[1],), 2), flush=True)")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=100).stdout
    assert out.strip() == "Exits(codes=[-9, 1], first_failed=1)"  # asked to stop, then killed: it never would
    assert (tmp_path / "rank0-got-sigterm").is_file()
