"""Training faults: SIGKILL at a random moment then a rerun ends where an uninterrupted run ends; a
truncated checkpoint falls back to the previous one; a full disk is a clear reason; bad hyperparameters
fail at once, before any data is read."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time

import pytest

from dogbreed import metrics
from dogbreed.local import channels_for, entry_command, flags_to_hyperparameters, layout, local_train, train_env

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

FLAGS = ["--model", "resnet18", "--pretrained-weights", "none", "--input-size", "64", "--epochs", "3",
         "--batch-size", "25", "--lr", "0.003", "--patience", "0", "--num-workers", "1", "--precision", "fp32",
         "--profile", "false", "--seed", "7"]


def _summary(work):
    return json.loads((work / "opt_ml/output/data/metrics.json").read_text())


def test_sigkill_at_a_random_moment_then_rerun_matches_an_uninterrupted_run(sample_dir, tmp_path, record):
    reference = tmp_path / "reference"
    code, _ = local_train(sample_dir, reference, FLAGS, stdout=subprocess.DEVNULL)
    assert code == 0
    work = tmp_path / "killed"
    base = layout(work, channels_for(sample_dir), flags_to_hyperparameters(FLAGS))
    process = subprocess.Popen(entry_command(), env=train_env(base), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 300
    while not list((base / "checkpoints").glob("checkpoint-*.pth")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    delay = random.Random().uniform(0, 4)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    resumed_log = tmp_path / "resumed.log"
    with open(resumed_log, "w") as handle:
        code, _ = local_train(sample_dir, work, FLAGS, stdout=handle)
    assert code == 0
    text = resumed_log.read_text()
    found = re.search(r"resumed_from_epoch=(\d+)", text)
    resumed_from = int(found.group(1)) if found else 0
    expected, got = _summary(reference), _summary(work)
    record("faults", f"SIGKILL {delay:.1f} s after the first checkpoint: resumed after epoch", resumed_from, resumed_from >= 1)
    assert resumed_from >= 1
    assert got["test_acc"] == pytest.approx(expected["test_acc"], abs=0.021)
    assert got["best_valid_loss"] == pytest.approx(expected["best_valid_loss"], rel=0.02)
    record("faults", "SIGKILL + rerun: |test_acc - uninterrupted|", round(abs(got["test_acc"] - expected["test_acc"]), 4))


def test_a_truncated_checkpoint_is_detected_and_the_previous_one_used(sample_dir, tmp_path, record):
    flags = [f for f in FLAGS]
    flags[flags.index("--epochs") + 1] = "2"
    work = tmp_path / "w"
    assert local_train(sample_dir, work, flags, stdout=subprocess.DEVNULL)[0] == 0
    newest = work / "opt_ml/checkpoints/checkpoint-0002.pth"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    log = tmp_path / "log"  # the same job again (same settings: a changed one would be refused)
    with open(log, "w") as handle:
        code, _ = local_train(sample_dir, work, flags, stdout=handle, extra_env={"PYTHONUNBUFFERED": "1"})
    assert code == 0
    text = log.read_text()
    assert "resumed_from_epoch=1" in text and metrics.parse(text, "epoch") == [2.0]
    record("faults", "truncated checkpoint: resumed from the previous one", "epoch 1")


def test_a_full_disk_while_saving_fails_with_a_clear_reason(sample_dir, tmp_path, record):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.fail("cannot mount a tmpfs here (needs root); CI runs as root")
    try:
        flags = [f for f in FLAGS]
        flags[flags.index("--epochs") + 1] = "1"
        code, _ = local_train(sample_dir, tmp_path / "w", flags + ["--checkpoint-dir", str(mount)], stdout=subprocess.DEVNULL)
        failure = (tmp_path / "w/opt_ml/output/failure").read_text()
        assert code != 0
        assert "could not write" in failure and "No space left on device" in failure, failure
        assert not [p for p in mount.iterdir() if p.name.endswith(".tmp")]  # no torn temporary file left behind
        record("faults", "full disk while checkpointing: clear reason", "No space left", True)
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("flag,value,needle", [("--lr", "-0.1", "--lr"), ("--model", "resnet5000", "unknown model"),
                                               ("--batch-size", "0", "--batch-size")])
def test_bad_hyperparameters_fail_at_once_before_data_is_read(tmp_path, flag, value, needle, record):
    empty = tmp_path / "no-data-at-all"
    empty.mkdir()
    code, _ = local_train(empty, tmp_path / "w", ["--pretrained-weights", "none", flag, value], stdout=subprocess.DEVNULL)
    failure = (tmp_path / "w/opt_ml/output/failure").read_text()
    assert code != 0 and needle in failure and "split" not in failure  # refused before looking for data
    record("faults", f"bad hyperparameter {flag} {value}: refused before data", "yes")


def test_model_archives_that_escape_are_refused_by_local_serve(tmp_path, trained, record):
    import io
    import sys
    import tarfile

    cases = {}
    escape = tmp_path / "escape.tar.gz"
    with tarfile.open(escape, "w:gz") as tar:
        data = b"owned"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    cases["path traversal"] = escape
    link = tmp_path / "link.tar.gz"
    with tarfile.open(link, "w:gz") as tar:
        info = tarfile.TarInfo("model.pth")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(info)
    cases["symlink out"] = link
    for name, archive in cases.items():
        done = subprocess.run([sys.executable, "-m", "dogbreed.cli", "local-serve", "--model", str(archive), "--port", "29999"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode != 0 and "model archive refused" in done.stderr, done.stderr
        record("hostile input", f"model archive with a {name}: refused", "yes")
    assert not list(tmp_path.parent.rglob("escaped.txt"))
    shutil.rmtree(tmp_path / "w", ignore_errors=True)


@pytest.mark.timeout(420)
def test_a_failing_spawned_rank_ends_the_job_with_its_reason(sample_dir, tmp_path, record):
    """Two gloo ranks spawned as on a multi-GPU host; rank 0 fails from outside (its profile folder is a file): the
    parent stops rank 1, which would otherwise wait in its next collective until gloo's timeout (600 s), and the
    failure file holds rank 0's own reason, not "a process exited with code 1"."""
    from tests.conftest import free_port

    base = layout(tmp_path / "work", channels_for(sample_dir), {})
    (base / "output/data/profile").write_text("a file where the profiler wants its folder")
    flags = [f for f in FLAGS if f != "--profile" and f != "false"] + ["--profile", "true"]
    flags[flags.index("--epochs") + 1] = "2"
    env = train_env(base, {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "GLOO_SOCKET_IFNAME": "lo",
                           "OMP_NUM_THREADS": "1", "SM_NUM_GPUS": "0"})
    script = "import sys; from dogbreed.training import entry; sys.exit(entry.run(sys.argv[1:], nprocs=2)[0])"
    log = open(tmp_path / "train.log", "w")
    started = time.monotonic()
    process = subprocess.Popen([entry_command()[0], "-c", script, *flags], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        code = process.wait(timeout=300)
    finally:
        process.kill()
    output = (tmp_path / "train.log").read_text()
    failure = (base / "output/failure").read_text().strip()
    record("faults", "a failing spawned rank (of 2): seconds to the job's end", round(time.monotonic() - started))
    assert code == 1, output
    assert failure.startswith("rank 0: FileExistsError") and "profile" in failure, (failure, output)
    assert not (base / "model/model.pth").exists()
