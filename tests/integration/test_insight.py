"""Debugger and profiler insight from real runs: an smdebug trial, the rules, the profile report."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from dogbreed.local import local_train
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

FLAGS = ["--model", "resnet18", "--pretrained-weights", "none", "--input-size", "64", "--epochs", "4",
         "--batch-size", "25", "--patience", "0", "--num-workers", "1", "--debug-interval", "1"]


@pytest.fixture(scope="module")
def runs(sample_dir, tmp_path_factory):
    """A healthy run and a deliberately broken one (a huge learning rate), each with an smdebug trial."""
    result = {}
    for name, lr in (("healthy", "0.003"), ("broken", "5")):
        work = tmp_path_factory.mktemp(name)
        code, _ = local_train(sample_dir, work, FLAGS + ["--lr", lr, "--debug-out", str(work / "debug")],
                              stdout=subprocess.DEVNULL)
        assert code == 0, (work / "opt_ml/output/failure").read_text() if (work / "opt_ml/output/failure").exists() else code
        result[name] = work
    return result


def _report(run, out):
    done = run_cli("debug", "report", str(run / "debug"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return json.loads((out / "rules.json").read_text()), done.stdout


def test_loss_plot_has_both_modes_and_healthy_run_passes_loss_not_decreasing(runs, tmp_path):
    verdicts, stdout = _report(runs["healthy"], tmp_path / "healthy")
    assert verdicts["steps"]["train"] >= 20 and verdicts["steps"]["eval"] >= 4  # training and validation losses
    png = tmp_path / "healthy" / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert verdicts["rules"]["LossNotDecreasing"]["fired"] is False
    assert verdicts["rules"]["VanishingGradient"]["fired"] is False
    assert set(verdicts["rules"]) == {"VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization", "LossNotDecreasing"}
    assert "LossNotDecreasing: ok" in stdout


def test_a_huge_learning_rate_fires_loss_not_decreasing(runs, tmp_path):
    verdicts, stdout = _report(runs["broken"], tmp_path / "broken")
    assert verdicts["rules"]["LossNotDecreasing"]["fired"] is True
    assert re.search(r"LossNotDecreasing: FIRED at step \d+", stdout)


def test_profile_report_holds_the_step_split_and_plots(runs, tmp_path):
    done = run_cli("profile", "report", str(runs["healthy"]), "--out", str(tmp_path / "profile"))
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "profile" / "profile-report.html").read_text()
    assert 'id="split"' in page and 'id="ops"' in page and page.count("data:image/png;base64,") == 2
    summary = json.loads((tmp_path / "profile" / "profile-summary.json").read_text())
    split = summary["split"]
    assert split["steps"] == 32
    assert split["data_s"] + split["compute_s"] == pytest.approx(split["total_s"], rel=1e-9)
    steps = [json.loads(line) for line in (runs["healthy"] / "opt_ml/output/data/profile/steps.jsonl").read_text().splitlines()]
    assert sum(s["data_s"] + s["compute_s"] for s in steps if s["mode"] == "train") == pytest.approx(split["total_s"], rel=1e-6)
    assert summary["top_ops"] and "conv" in " ".join(o["name"] for o in summary["top_ops"])
    assert (runs["healthy"] / "opt_ml/output/data/profile/trace.json").stat().st_size > 1000
