"""Every bench's ``--quick`` mode (``make bench BENCH_ARGS=--quick``) runs to its end and writes its table, so a bench
cannot break unnoticed: each runs as ``make`` runs it, a process of its own, on tiny synthetic data, and is checked
for the rows its report must hold, and for leaving the figures' report (BENCHMARKS.md) as it was."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FIGURES = "# Benchmarks\n\nthe figures of a full run, which a quick run must leave alone\n"
FRONTS = ("ours, multi-model-server front (JPEG in)", "ours, native front (JPEG in)")


def run_quick(bench: str, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict[str, list[list[str]]]]:
    """``python -m benchmarks.<bench> --quick --out <tmp>``, with the default report pointed at a stand-in for
    BENCHMARKS.md; returns the finished process and the report's tables by section title (rows of cells)."""
    figures, figures_dir = tmp_path / "BENCHMARKS.md", tmp_path / "figures"
    figures.write_text(FIGURES)
    out = tmp_path / "quick" / "report.md"
    env = {**os.environ, "DOGBREED_BENCH_REPORT": str(figures), "DOGBREED_BENCH_DIR": str(figures_dir)}
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{bench}", "--quick", "--out", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert figures.read_text() == FIGURES and not figures_dir.exists(), "a quick run wrote the figures' report"
    assert f"wrote {out}" in done.stdout
    return done, tables(out.read_text())


def tables(report: str) -> dict[str, list[list[str]]]:
    """Each ``## title`` section's first table, without its header, as rows of stripped cells."""
    found = {}
    for section in report.split("\n## ")[1:]:
        title, _, body = section.partition("\n")
        assert "Quick mode (--quick)" in body, f"{title}: not marked as a quick run"
        lines = body.splitlines()
        start = next(index for index, line in enumerate(lines) if line.startswith("|"))
        end = next((index for index in range(start, len(lines)) if not lines[index].startswith("|")), len(lines))
        found[title] = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[start + 2:end]]
    return found


def first_cells(rows: list[list[str]]) -> list[str]:
    return [row[0] for row in rows]


def free_base_port() -> int:
    """A port p with p, p+5, p+20 and p+25 free: the serve bench's two fronts, each started twice."""
    for base in range(30000 + os.getpid() % 1000 * 20, 60000, 40):
        if all(_free(base + offset) for offset in (0, 5, 20, 25)):
            return base
    raise RuntimeError("no free ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_train_bench_quick(tmp_path):
    _, found = run_quick("train_bench", tmp_path)
    train = found["Training throughput (whole step, data loading included)"]
    assert first_cells(train) == ["resnet18"]
    assert float(train[0][1]) > 0 and float(train[0][2]) > 0  # the seed's way and ours both trained
    loader = found["Input pipeline alone: can these CPUs keep a T4 fed?"]
    assert first_cells(loader) == ["CPU: Pillow in the workers", "GPU: nvJPEG + crops on the device"]
    assert float(loader[0][2]) > 0 and (loader[1][2] == "no GPU here") != torch.cuda.is_available()


def test_serve_bench_quick_runs_both_fronts_without_the_peer(tmp_path):
    done, found = run_quick("serve_bench", tmp_path, "--port", str(free_base_port()))
    assert "TorchServe peer: skipped" in done.stdout
    (title, rows), = found.items()
    assert title.startswith("Serving latency")
    load = [row for row in rows if row[0] in FRONTS]
    assert [(row[0], row[1]) for row in load] == [(front, c) for front in FRONTS for c in ("1", "4", "16")]
    assert all(row[5] == "0" for row in load), load  # no request failed
    assert first_cells(rows)[-1] == "in process: decode + preprocess + forward"


def test_tune_bench_quick(tmp_path):
    _, found = run_quick("tune_bench", tmp_path)
    (title, rows), = found.items()
    assert title == "Local tuning: head-only, 1 trial, frozen-feature cache vs none"
    arms = ["cached, in process", "cached, a process per trial", "uncached, a process per trial"]
    assert first_cells(rows) == arms + ["the cache alone (same runner)", "the in-process runner alone (both cached)",
                                        "both (the default)"]
    assert all(row[2] == "1" and 0 <= float(row[4]) <= 1 for row in rows[:3]), rows  # each arm's trial completed


def test_accuracy_bench_quick(tmp_path):
    _, found = run_quick("accuracy_bench", tmp_path)
    rows = found["Accuracy: the default recipe beside the linear probe"]
    assert first_cells(rows) == ["synthetic sample, tiny (--quick)"]
    for row in rows:  # the probe and the final model of one run, both scored on the test split
        assert 0 <= float(row[2]) <= 1 and 0 <= float(row[4].strip("*")) <= 1, row
    few = found["Few shots: the recipe's choices beside a fixed plain probe (2-shot, seeded splits)"]
    assert first_cells(few) == ["seed 0", "mean"]
    for row in few[:1]:  # the L2 cross-validated on train + valid (3 images a class: 3 folds); both probes scored
        assert "3-fold cross-validation" in row[1] and 0 <= float(row[5]) <= 1, row
    assert few[1][4:6] == few[0][4:6] and few[1][2] in ("1 of 1 splits ≥ fixed", "0 of 1 splits ≥ fixed")
    calibration = found["Calibration: test ECE and NLL before and after the temperature (default recipe)"]
    assert first_cells(calibration) == ["synthetic sample, tiny (--quick)", "2-shot, seed 0"]
    for row in calibration:
        assert float(row[1]) > 0 and 0 <= float(row[3].strip("*")) <= 1, row


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_transform_bench_quick(tmp_path, docker, compose):
    from tests.docker_support import build_cpu_image

    image = build_cpu_image()
    _, found = run_quick("transform_bench", tmp_path, "--image", image, "--port", str(free_base_port()))
    (title, rows), = found.items()
    assert title.startswith("Batch Transform beside the real-time endpoint")
    batch, *real = rows
    assert batch[0].startswith("Batch Transform") and float(batch[2]) > 0
    assert real and real[0][1] == "1" and all(float(row[2]) > 0 and row[5] == "0" for row in real), real
    # the same image, the same photos, one request at a time: the endpoint's top-1 answers are the transform's
    assert real[0][4] == "10/10" and real[0][3] == batch[3], rows
