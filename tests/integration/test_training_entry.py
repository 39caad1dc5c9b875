"""The image's train entry (the sagemaker-training toolkit running our program) on temporary /opt/ml trees."""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from PIL import Image

from dogbreed import metrics
from dogbreed.local import channels_for, entry_command, flags_to_hyperparameters, layout, local_train, train_env
from dogbreed.serving.predictor import Predictor
from tests.conftest import QUICK_FLAGS, free_port

pytestmark = pytest.mark.slow


def test_entry_trains_and_writes_artifacts_that_reload_and_predict(trained, sample_dir):
    meta = json.loads((trained["model_dir"] / "model.json").read_text())
    assert meta["arch"] == "resnet18" and meta["num_classes"] == 5
    assert meta["class_names"] == ["Affenpinscher", "Beagle", "Border collie", "Dalmatian", "Golden retriever"]
    assert meta["input_size"] == 64 and len(meta["mean"]) == 3
    # SageMaker hands hyperparameters over as strings: the entry parsed them
    hps = json.loads((trained["work"] / "opt_ml/input/config/hyperparameters.json").read_text())
    assert all(isinstance(v, str) for v in hps.values()) and hps["epochs"] == "3"
    predictor = Predictor(trained["model_dir"])
    images, labels = [], []
    for index, folder in enumerate(sorted((sample_dir / "test").iterdir())):
        for path in sorted(folder.iterdir())[:6]:
            images.append(Image.open(path).convert("RGB"))
            labels.append(index)
    predicted = [rows[0]["index"] for rows in predictor.top_k(images, k=1)]
    accuracy = sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels)
    assert accuracy > 0.4, f"accuracy {accuracy} is not well above chance (0.2)"
    assert (trained["archive"]).is_file()


def test_metric_lines_match_the_sagemaker_regexes(trained):
    log = trained["stdout"]
    for definition in metrics.metric_definitions():
        assert metrics.parse(log, definition["Name"]), f"{definition['Name']} not found in the real log"
    assert metrics.parse(log, "epoch") == [1.0, 2.0, 3.0]
    summary = json.loads((trained["output"] / "metrics.json").read_text())
    assert metrics.last(log, "test_acc") == pytest.approx(summary["test_acc"], abs=1e-4)


def test_per_class_and_confusion_tables(trained):
    rows = list(csv.DictReader(open(trained["output"] / "per_class.csv")))
    assert len(rows) == 5 and sum(int(r["support"]) for r in rows) == 50
    confusion = list(csv.reader(open(trained["output"] / "confusion.csv")))
    assert sum(int(x) for row in confusion[1:] for x in row[1:]) == 50


def test_training_writes_the_evaluation_report_from_its_one_test_pass(trained):
    """report.html beside metrics.json (output.tar.gz on SageMaker), drawn from the logits of the pass that scored
    the test split: the same top-1 and the same calibration figures as metrics.json."""
    html = (trained["output"] / "report.html").read_text()
    summary = json.loads((trained["output"] / "metrics.json").read_text())
    assert f"{summary['test_acc']:.4f}" in html
    calibration = summary["calibration"]
    assert f"{calibration['temperature']:.4f}" in html and f"{calibration['test_ece_after']:.4f}" in html
    assert "data:image/jpeg;base64," in html or "No errors." in html  # the worst errors' thumbnails
    assert "resnet18" in html and "Golden retriever" in html


def test_a_report_that_cannot_be_written_is_a_warning_not_a_failed_training(tmp_path, sample_dir):
    flags = [f for f in QUICK_FLAGS]
    flags[flags.index("--epochs") + 1] = "1"
    base = layout(tmp_path, channels_for(sample_dir), flags_to_hyperparameters(flags))  # local_train's tree
    (base / "output/data/report.html").mkdir()  # where the file should go: a folder
    run = subprocess.run(entry_command(), env=train_env(base), capture_output=True, text=True, check=False)
    log = run.stdout + run.stderr  # the log lines: on stderr
    assert run.returncode == 0 and (base / "model/model.pth").is_file(), log[-3000:]
    assert "no evaluation report: IsADirectoryError" in log
    assert (base / "output/data/metrics.json").is_file()


def test_missing_valid_split_fails_with_a_readable_reason(tmp_path, sample_dir):
    data = tmp_path / "data"
    shutil.copytree(sample_dir / "train", data / "train")
    code, _ = local_train(data, tmp_path / "work", QUICK_FLAGS, stdout=subprocess.DEVNULL)
    assert code != 0
    failure = (tmp_path / "work/opt_ml/output/failure").read_text()
    assert "missing 'valid' split" in failure and "Traceback" not in failure


def test_corrupt_jpeg_is_skipped_and_counted(tmp_path, sample_dir):
    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), "red").save(buffer, "JPEG")
    (data / "train/001.Affenpinscher/corrupt.jpg").write_bytes(buffer.getvalue()[:60])
    flags = [f for f in QUICK_FLAGS]
    flags[flags.index("--epochs") + 1] = "1"
    log = tmp_path / "log.txt"
    with open(log, "w") as handle:
        code, _ = local_train(data, tmp_path / "work", flags, stdout=handle, extra_env={"PYTHONUNBUFFERED": "1"})
    assert code == 0
    summary = json.loads((tmp_path / "work/opt_ml/output/data/metrics.json").read_text())
    assert summary["skipped_images"] == 1
    assert summary["images"]["train"] == 201  # listed, then skipped when it would not decode


def _start(work, data, flags, extra_env=None):
    base = layout(work, channels_for(data), __import__("dogbreed.local", fromlist=["x"]).flags_to_hyperparameters(flags))
    out = open(work / "stdout.log", "w")
    process = subprocess.Popen(entry_command(), env=train_env(base, extra_env), stdout=out, stderr=subprocess.STDOUT)
    return process, base


def _wait_for(path, needle, timeout=300, process=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and needle in path.read_text():
            return True
        if process is not None and process.poll() is not None:
            return False
        time.sleep(0.3)
    return False


def test_sigterm_leaves_a_checkpoint_and_the_next_run_resumes(tmp_path, sample_dir):
    flags = [f for f in QUICK_FLAGS]
    flags[flags.index("--epochs") + 1] = "4"
    work = tmp_path / "work"
    work.mkdir()
    process, base = _start(work, sample_dir, flags)
    assert _wait_for(work / "stdout.log", "epoch=1 ", process=process), (work / "stdout.log").read_text()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    assert "SIGTERM" in (base / "output/failure").read_text()
    checkpoints = sorted((base / "checkpoints").glob("checkpoint-*.pth"))
    assert checkpoints, "no checkpoint after SIGTERM"
    assert not (base / "model/model.pth").exists()
    code, archive = local_train(sample_dir, work, flags, stdout=open(work / "resume.log", "w"))
    resumed = (work / "resume.log").read_text()
    assert code == 0
    assert metrics.parse(resumed, "epoch")[0] > 1, "the rerun started over instead of resuming"
    assert "resumed_from_epoch=" in resumed
    assert archive.is_file()


@pytest.mark.parametrize("recipe", ["from scratch", "probe, then fine-tuning"])
def test_two_ddp_processes_train_one_model(tmp_path, sample_dir, recipe):
    hosts = ["127.0.0.1", "localhost"]  # two "hosts" on loopback, as SageMaker names them in resourceconfig.json
    port = str(free_port())
    flags = [f for f in QUICK_FLAGS]
    flags[flags.index("--epochs") + 1] = "2"
    if recipe != "from scratch":  # the default recipe: every rank fits the probe, then they fine-tune together
        import torch

        from dogbreed import models

        weights = tmp_path / "resnet18.pth"
        torch.save(models.build("resnet18", 1000).state_dict(), weights)
        flags[flags.index("--pretrained-weights") + 1] = str(weights)
    from dogbreed.local import flags_to_hyperparameters

    procs = []
    for host in hosts:
        work = tmp_path / host
        base = layout(work, channels_for(sample_dir), flags_to_hyperparameters(flags), hosts=hosts, current_host=host)
        env = train_env(base, {"MASTER_PORT": port, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"})
        out = open(work / "stdout.log", "w")
        procs.append((subprocess.Popen(entry_command(), env=env, stdout=out, stderr=subprocess.STDOUT), base, work))
    codes = [p.wait(timeout=600) for p, _, _ in procs]
    logs = [(w / "stdout.log").read_text() for _, _, w in procs]
    assert codes == [0, 0], logs
    (_, rank0, w0), (_, rank1, w1) = procs
    assert (rank0 / "model/model.pth").is_file()
    assert not (rank1 / "model/model.pth").exists(), "only rank 0 writes the model"
    assert (rank0 / "output/data/report.html").is_file() and not (rank1 / "output/data/report.html").exists()
    summary = json.loads((rank0 / "output/data/metrics.json").read_text())
    assert summary["world_size"] == 2
    epochs = [1.0, 2.0] if recipe == "from scratch" else [0.0, 1.0, 2.0]  # the probe's line is epoch 0
    assert metrics.parse(logs[0], "epoch") == epochs and metrics.parse(logs[1], "epoch") == []
    if recipe != "from scratch":
        assert summary["recipe"]["kept"] in ("probe", "fine-tuned", "mixed"), summary["recipe"]
        assert len(summary["recipe"]["mixes"]) == 3  # scored by both ranks together (a collective per mix)
    os.environ.pop("MASTER_PORT", None)


def test_head_only_training_reuses_cached_frozen_features(tmp_path, sample_dir):
    flags = ["--model", "resnet18", "--pretrained-weights", "none", "--input-size", "64", "--epochs", "2",
             "--batch-size", "25", "--train-layers", "head", "--augment", "false", "--num-workers", "1",
             "--feature-cache", str(tmp_path / "cache"), "--profile", "false"]
    results = []
    for run in ("first", "second"):
        log = tmp_path / f"{run}.log"
        with open(log, "w") as handle:
            code, archive = local_train(sample_dir, tmp_path / run, flags, stdout=handle, extra_env={"PYTHONUNBUFFERED": "1"})
        assert code == 0
        results.append((log.read_text(), json.loads((tmp_path / run / "opt_ml/output/data/metrics.json").read_text())))
    assert len(list((tmp_path / "cache").glob("features-*.pt"))) == 1  # computed once, by the first run
    (first_log, first), (second_log, second) = results
    assert second["test_acc"] == pytest.approx(first["test_acc"])
    assert second["best_valid_loss"] == pytest.approx(first["best_valid_loss"])
    predictor = Predictor(tmp_path / "second/opt_ml/model")  # the trained head went back into the whole model
    images = [Image.open(p) for p in sorted((sample_dir / "test/001.Affenpinscher").iterdir())[:3]]
    assert len(predictor.top_k(images, 2)) == 3
