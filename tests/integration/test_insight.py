"""Debugger and profiler insight from real runs: an smdebug trial, the rules, the profile report."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import threading
import time

import pytest

from dogbreed.local import channels_for, entry_command, flags_to_hyperparameters, layout, local_train, train_env
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

FLAGS = ["--model", "resnet18", "--pretrained-weights", "none", "--input-size", "64", "--epochs", "4",
         "--batch-size", "25", "--patience", "0", "--num-workers", "1", "--progress", "lines"]
STEPS_PER_EPOCH = 8  # the sample's 200 training images in batches of 25
HEAVY_EVERY = 16  # resnet18's weights and gradients are ~90 MB a step: saved at steps 0 and 16 only
BROKEN_JOB = "dogbreed-train-broken"


def _hook_config(out_dir) -> dict:
    """The healthy run's Debugger set-up, as SageMaker's DebuggerHookConfig hands it over: the loss at every
    step (the loss rules and plot need each one), weights, gradients and biases every HEAVY_EVERY steps
    (enough for the gradient and initialisation rules, without gigabytes of tensors)."""
    heavy = {"save_interval": str(HEAVY_EVERY)}
    return {"LocalPath": str(out_dir), "HookParameters": {"save_interval": "1"},
            "CollectionConfigurations": [{"CollectionName": "losses", "CollectionParameters": {"save_interval": "1"}}]
            + [{"CollectionName": name, "CollectionParameters": heavy} for name in ("weights", "gradients", "biases")]}


def _timed_train(sample_dir, work, flags, hook_config) -> dict:
    """The train entry, run as local_train runs it, with every output line stamped by this process when it
    arrives: the wall time the profile report is checked against, measured from outside the training."""
    base = layout(work, channels_for(sample_dir), flags_to_hyperparameters(flags))
    (base / "input" / "config" / "debughookconfig.json").write_text(json.dumps(hook_config))
    lines: list[tuple[float, str, str]] = []
    start = time.perf_counter()
    process = subprocess.Popen(entry_command(), env=train_env(base), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, bufsize=1)

    def read(stream, name):
        for line in stream:
            lines.append((time.perf_counter() - start, name, line.rstrip("\n")))

    readers = [threading.Thread(target=read, args=(process.stdout, "stdout")),
               threading.Thread(target=read, args=(process.stderr, "stderr"))]
    for reader in readers:
        reader.start()
    code = process.wait(timeout=1200)
    wall = time.perf_counter() - start
    for reader in readers:
        reader.join()
    return {"code": code, "wall_s": wall, "lines": sorted(lines)}


@pytest.fixture(scope="module")
def runs(sample_dir, tmp_path_factory):
    """A healthy run and a deliberately broken one (a huge learning rate), each with an smdebug trial; the
    healthy one timed from outside. The trials are removed afterwards."""
    result = {}
    healthy = tmp_path_factory.mktemp("healthy")
    timed = _timed_train(sample_dir, healthy, FLAGS + ["--lr", "0.003"], _hook_config(healthy / "debug"))
    failure = healthy / "opt_ml/output/failure"
    assert timed["code"] == 0, failure.read_text() if failure.exists() else "\n".join(line for _, _, line in timed["lines"][-30:])
    result["healthy"], result["healthy_timing"] = healthy, timed
    broken = tmp_path_factory.mktemp("broken")
    # as a job launched without the Debugger service: the trial beside the job's checkpoints; only its losses
    # are looked at (no weights or gradients). A learning rate of 1e30 breaks the model at its first update, every
    # time: the job stops on the non-finite loss (a failure, never a success) and its trial holds that loss. A merely
    # large rate (5) diverges and then recovers, and whether two windows of 10 steps then fall is up to chance.
    code, _ = local_train(sample_dir, broken, FLAGS + ["--lr", "1e30"], stdout=subprocess.DEVNULL,
                          extra_env={"TRAINING_JOB_NAME": BROKEN_JOB, "DOGBREED_DEBUG_COLLECTIONS": "losses=1"})
    failure = broken / "opt_ml/output/failure"
    assert code != 0 and failure.is_file(), code
    assert not (broken / "model.tar.gz").exists() and not (broken / "opt_ml/model/model.pth").exists()
    result["broken"] = broken
    yield result
    for work in (healthy, broken):  # the trials, and the checkpoints of every epoch
        shutil.rmtree(work / "debug", ignore_errors=True)
        shutil.rmtree(work / "opt_ml" / "checkpoints", ignore_errors=True)


def _trial(run):
    """The healthy run's trial is where its debughookconfig.json put it; the broken one's beside its checkpoints."""
    beside = run / "opt_ml" / "checkpoints" / BROKEN_JOB / "debug"
    return beside if beside.is_dir() else run / "debug"


def _report(run, out):
    done = run_cli("debug", "report", str(_trial(run)), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return json.loads((out / "rules.json").read_text()), done.stdout


def test_loss_plot_has_both_modes_and_healthy_run_passes_loss_not_decreasing(runs, tmp_path):
    verdicts, stdout = _report(runs["healthy"], tmp_path / "healthy")
    assert verdicts["steps"]["train"] >= 20 and verdicts["steps"]["eval"] >= 4  # training and validation losses
    png = tmp_path / "healthy" / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert verdicts["rules"]["LossNotDecreasing"]["fired"] is False
    assert verdicts["rules"]["VanishingGradient"]["fired"] is False
    assert not any("error" in verdict for verdict in verdicts["rules"].values()), verdicts["rules"]
    assert set(verdicts["rules"]) == {"VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization",
                                      "LossNotDecreasing"}
    assert "LossNotDecreasing: ok" in stdout


def test_a_huge_learning_rate_fires_loss_not_decreasing(runs, tmp_path):
    verdicts, stdout = _report(runs["broken"], tmp_path / "broken")
    assert verdicts["rules"]["LossNotDecreasing"]["fired"] is True
    assert re.search(r"LossNotDecreasing: FIRED at step \d+", stdout)


def test_debug_report_on_a_folder_without_a_trial_answers_at_once_with_the_trial_nearby(runs, tmp_path):
    started = time.monotonic()
    done = run_cli("debug", "report", str(runs["broken"]), "--out", str(tmp_path / "none"), timeout=60)
    assert done.returncode != 0 and time.monotonic() - started < 30  # smdebug alone polls for a trial forever
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"dogbreed: error: no smdebug trial at {runs['broken']} (looked for its index/ and collections/")
    assert f"trials nearby: {runs['broken'] / 'opt_ml/checkpoints' / BROKEN_JOB / 'debug'}" in line


def _moto_s3(url):
    import boto3

    s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=url, aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    try:
        s3.create_bucket(Bucket="dogbreed-reports", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    return s3


def _upload_tree(s3, folder, bucket, prefix) -> int:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    for path in files:
        s3.upload_file(str(path), bucket, f"{prefix}{path.relative_to(folder).as_posix()}")
    return len(files)


def test_reports_on_a_job_find_its_trial_and_profile_in_s3(runs, moto_endpoint, tmp_path):
    """A job launched by `dogbreed train` (no Debugger service); its trial and output.tar.gz put where SageMaker
    would (the checkpoint prefix's <job>/debug/, the output path's <job>/output/): the reports find them from
    the job's description alone."""
    import tarfile

    from tests.conftest import moto_env

    s3, env = _moto_s3(moto_endpoint), moto_env(moto_endpoint)
    (tmp_path / "dogbreed.toml").write_text('''region = "eu-west-1"
role = "arn:aws:iam::123456789012:role/dogbreed-sagemaker"
bucket = "dogbreed-reports"
prefix = "runs"
train_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-train:abc123"
''')
    job = f"{BROKEN_JOB}-{int(time.time() * 1000) % 10**9}"
    done = run_cli("train", "--job-name", job, "--detach", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"checkpoints=s3://dogbreed-reports/runs/checkpoints/{job}/" in done.stdout
    # SageMaker syncs /opt/ml/checkpoints, where the program writes in its job's sub-folder
    assert _upload_tree(s3, _trial(runs["broken"]), "dogbreed-reports", f"runs/checkpoints/{job}/{job}/debug/") > 3
    archive = tmp_path / "output.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # SM_OUTPUT_DATA_DIR, as SageMaker packs it
        tar.add(runs["healthy"] / "opt_ml/output/data/profile", arcname="profile")
    s3.upload_file(str(archive), "dogbreed-reports", f"runs/models/{job}/output/output.tar.gz")

    done = run_cli("debug", "report", job, "--out", str(tmp_path / "debug"), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"trial of {job}: s3://dogbreed-reports/runs/checkpoints/{job}/{job}/debug/" in done.stdout
    assert re.search(r"LossNotDecreasing: FIRED at step \d+", done.stdout)
    assert json.loads((tmp_path / "debug" / "rules.json").read_text())["rules"]["LossNotDecreasing"]["fired"] is True

    done = run_cli("profile", "report", job, "--out", str(tmp_path / "profile"), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    split = json.loads((tmp_path / "profile" / "profile-summary.json").read_text())["split"]
    assert split["steps"] == 4 * STEPS_PER_EPOCH
    assert 'id="ops"' in (tmp_path / "profile" / "profile-report.html").read_text()

    other = f"{job}-none"  # a job with nothing uploaded: what was looked for, at once
    assert run_cli("train", "--job-name", other, "--detach", env=env, cwd=tmp_path).returncode == 0
    done = run_cli("debug", "report", other, "--out", str(tmp_path / "none"), env=env, cwd=tmp_path, timeout=60)
    assert done.returncode != 0
    assert f"has no smdebug trial yet: looked under s3://dogbreed-reports/runs/checkpoints/{other}/{other}/debug/" in done.stderr


SLACK_S = 0.5  # per interval: how late this process may see a line the training wrote


def _seen_from_outside(timing) -> dict:
    """From the healthy run's output as this test saw it arrive: each training step's end (a progress line
    per step), each epoch's metric line, and when the hooks were made (the smdebug hook's log line)."""
    ends, epochs, hooks_made = {}, {}, None
    for t, stream, line in timing["lines"]:
        if match := re.match(r"\[progress\] e(\d+) (\d+)/(\d+) ", line):
            ends.setdefault(int(match[1]), []).append((int(match[2]), t))
        elif stream == "stdout" and (match := re.match(r"epoch=(\d+) ", line)):
            epochs[int(match[1])] = t
        elif "smdebug hook" in line and hooks_made is None:
            hooks_made = t
    assert hooks_made is not None and sorted(epochs) == [1, 2, 3, 4], "the training output lacks its markers"
    assert all([step for step, _ in ends[e]] == list(range(1, STEPS_PER_EPOCH + 1)) for e in epochs), ends
    return {"ends": ends, "epochs": epochs, "hooks_made": hooks_made}


def test_profile_report_figures_match_the_wall_time_measured_from_outside(runs, tmp_path):
    done = run_cli("profile", "report", str(runs["healthy"]), "--out", str(tmp_path / "profile"))
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "profile" / "profile-report.html").read_text()
    assert 'id="split"' in page and 'id="ops"' in page and 'id="wall"' in page and page.count("data:image/png;base64,") == 2
    split = json.loads((tmp_path / "profile" / "profile-summary.json").read_text())["split"]
    seen = _seen_from_outside(runs["healthy_timing"])
    ends, epochs = seen["ends"], seen["epochs"]
    assert split["steps"] == sum(len(e) for e in ends.values()) == 4 * STEPS_PER_EPOCH

    # Within an epoch, the time between two steps' ends is the later step's data wait plus compute: from the
    # first step's end to the last one's, the outside clock sees all of an epoch's steps but its first.
    inner = sum(e[-1][1] - e[0][1] for e in ends.values())
    # Each epoch's first step lies after the previous epoch's metric line (the hooks' creation for the first).
    first_windows = sum(ends[e][0][1] - (epochs[e - 1] if e > 1 else seen["hooks_made"]) for e in ends)
    slack = SLACK_S * len(ends)
    assert inner - slack <= split["total_s"] <= inner + first_windows + slack, (split, inner, first_windows)
    assert split["data_s"] >= 0 and split["compute_s"] > 0

    # The median step: the outside clock times every step but each epoch's first (somewhere in the order), so
    # the report's median lies between the middle ranks of the timed steps with those first steps all below
    # them and with them all above.
    between = sorted(b[1] - a[1] for e in ends.values() for a, b in zip(e[:-1], e[1:], strict=True))
    untimed, n = len(ends), len(between) + len(ends)
    lowest = statistics.mean([between[(n - 1) // 2 - untimed], between[n // 2 - untimed]])
    highest = statistics.mean([between[(n - 1) // 2], between[n // 2]])
    assert 0.85 * lowest - 0.05 <= split["median_step_ms"] / 1e3 <= 1.15 * highest + 0.05, (split, between)

    # the profiled job: it holds everything from the end of the first step to the last epoch's metric line,
    # and lies within the process's lifetime
    assert epochs[4] - ends[1][0][1] - SLACK_S <= split["wall_s"] <= runs["healthy_timing"]["wall_s"], split

    summary = json.loads((tmp_path / "profile" / "profile-summary.json").read_text())
    assert summary["top_ops"] and "conv" in " ".join(o["name"] for o in summary["top_ops"])
    assert (runs["healthy"] / "opt_ml/output/data/profile/trace.json").stat().st_size > 1000
