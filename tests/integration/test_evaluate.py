"""``dogbreed evaluate`` on the sample's test split with the model the real train entry made: the report holds its
figures, and its numbers are those of the serving predictor run photo by photo."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from dogbreed import calibration
from dogbreed.data import display_name, list_classes
from dogbreed.evaluation.evaluate import evaluate, main
from dogbreed.serving.decoders import decode_image
from dogbreed.serving.predictor import Predictor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluated(trained, sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    summary = evaluate(trained["model_dir"], sample_dir, out, progress=False)
    return {"summary": summary, "out": out, "html": (out / "report.html").read_text(), "model_dir": trained["model_dir"]}


@pytest.fixture(scope="module")
def direct(trained, sample_dir):
    """The predictor's probabilities photo by photo, as the endpoint answers one upload: (probs, labels)."""
    predictor = Predictor(trained["model_dir"])
    index = {name: i for i, name in enumerate(predictor.class_names)}
    probs, labels = [], []
    for folder in list_classes(sample_dir / "test"):
        for path in sorted((sample_dir / "test" / folder).glob("*.jpg")):
            image = decode_image(path.read_bytes(), predictor.draft_size)
            logits = predictor.tensor_logits(predictor.tensor([image]))  # before the model's temperature
            probs.append(torch.softmax(logits, dim=1)[0].numpy())
            labels.append(index[display_name(folder)])
    return np.stack(probs), np.asarray(labels)


def test_the_report_holds_the_figures_and_one_row_per_breed(evaluated, trained):
    html = evaluated["html"]
    classes = json.loads((trained["model_dir"] / "model.json").read_text())["class_names"]
    assert re.search(r'<img id="reliability-diagram"[^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', html)
    assert 'id="confusion-figure"' in html
    assert 'id="per-breed-table" class="sortable"' in html
    assert html.count('<tr class="breed-row">') == len(classes)
    for name in classes:
        assert f"<td>{name}</td>" in html
    assert 'href="confusion.csv"' in html and (evaluated["out"] / "confusion.csv").is_file()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched from the network
    assert 'id="explanations"' in html and 'id="not-a-dog"' in html  # the places later work fills


def test_the_numbers_are_the_predictors_own(evaluated, direct):
    probs, labels = direct
    summary = evaluated["summary"]
    assert summary["images"] == len(labels)
    top1 = float((probs.argmax(axis=1) == labels).mean())
    top5 = float(np.mean([label in np.argsort(-row)[:5] for row, label in zip(probs, labels, strict=True)]))
    assert summary["top1"] == pytest.approx(top1, abs=1e-9)
    assert summary["top5"] == pytest.approx(top5, abs=1e-9)
    assert f'id="top1">{top1:.4f}<' in evaluated["html"]
    cal = summary["calibration"]  # training fitted the temperature on the valid split: the report reads it
    assert "model.json" in cal["temperature_source"]
    temperature = json.loads((evaluated["model_dir"] / "model.json").read_text())["temperature"]
    assert cal["temperature"] == pytest.approx(temperature)
    assert cal["ece_before"] == pytest.approx(calibration.ece(probs, labels), abs=2e-3)
    log_p = np.log(np.clip(probs, 1e-38, None))
    assert cal["nll_before"] == pytest.approx(calibration.nll(log_p, labels), rel=1e-3)
    assert cal["nll_after"] <= cal["nll_before"] + 1e-9


def test_per_breed_scores_and_the_confusion_csv_match_the_answers(evaluated, direct):
    probs, labels = direct
    predicted = probs.argmax(axis=1)
    with open(evaluated["out"] / "confusion.csv", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    matrix = np.array([[int(x) for x in row[1:]] for row in rows])
    expected = np.zeros_like(matrix)
    np.add.at(expected, (labels, predicted), 1)
    assert (matrix == expected).all()
    for i, row in enumerate(evaluated["summary"]["per_breed"]):
        support = int((labels == i).sum())
        assert row["support"] == support
        assert row["recall"] == pytest.approx(matrix[i, i] / support if support else 0.0)
        answered = int((predicted == i).sum())
        assert row["precision"] == pytest.approx(matrix[i, i] / answered if answered else 0.0)


def test_the_verb_reads_model_tar_gz(trained, sample_dir, tmp_path, capsys):
    assert main(["--model", str(trained["archive"]), "--data", str(sample_dir), "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert "report: " in capsys.readouterr().out
    assert (tmp_path / "report.html").is_file() and (tmp_path / "evaluation.json").is_file()


# --- the page in a real browser: Debian's chromium, headless (.ci/run: apt-get install chromium)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium)")


def open_in_chromium(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and every console message (chromium logs each one, errors and uncaught
    exceptions included, as an INFO:CONSOLE line on stderr)."""
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                           f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def with_script(evaluated, target: Path, script: str) -> Path:
    """A copy of the report with ``script`` run after the page's own (the test's action, from outside)."""
    target.write_text(evaluated["html"].replace("</body>", f"<script>{script}</script></body>"))
    return target


@needs_chromium
def test_the_report_opens_in_chromium_without_console_errors(evaluated, trained, tmp_path):
    dom, console = open_in_chromium(evaluated["out"] / "report.html", tmp_path / "profile")
    assert console == []
    classes = json.loads((trained["model_dir"] / "model.json").read_text())["class_names"]
    assert dom.count('class="breed-row"') == len(classes)
    assert 'id="reliability-diagram"' in dom and 'id="confusion-figure"' in dom


@needs_chromium
def test_the_console_check_sees_a_broken_page(evaluated, tmp_path):
    broken = with_script(evaluated, tmp_path / "broken.html", "undefinedFunction();")
    _, console = open_in_chromium(broken, tmp_path / "profile")
    assert any("undefinedFunction" in line for line in console)


@needs_chromium
def test_the_per_breed_table_sorts_in_chromium(evaluated, tmp_path):
    """A click on a heading sorts ascending, a second click descending: by name (text) and by recall (numbers)."""
    def rows_after(column: int, clicks: int) -> list[list[str]]:
        script = f"var th = document.querySelectorAll('#per-breed-table th')[{column}];" + "th.click();" * clicks
        page = with_script(evaluated, tmp_path / f"sorted{column}{clicks}.html", script)
        dom, console = open_in_chromium(page, tmp_path / f"profile{column}{clicks}")
        assert console == []
        rows = re.findall(r'<tr class="breed-row">(.*?)</tr>', dom, flags=re.S)
        return [[re.search(r"<td>(.*?)</td>", row).group(1), *re.findall(r'data-value="([^"]+)"', row)] for row in rows]

    names = [row[0] for row in rows_after(0, 2)]
    assert names == sorted(names, reverse=True) and names != sorted(names)
    recalls = [float(row[2]) for row in rows_after(2, 1)]
    assert recalls == sorted(recalls)


def test_a_folder_of_breed_folders_with_an_unreadable_photo(trained, sample_dir, tmp_path):
    """No test/ split: the folder itself holds the breeds; a broken photo is left out and listed, not fatal."""
    data = tmp_path / "photos"
    shutil.copytree(sample_dir / "test", data)
    first = sorted(data.iterdir())[0]
    (first / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    summary = evaluate(trained["model_dir"], data, tmp_path / "out", progress=False)
    photos = sum(1 for _ in (sample_dir / "test").glob("*/*.jpg"))
    assert summary["images"] == photos
    assert [Path(s["path"]).name for s in summary["skipped"]] == ["broken.jpg"]
    assert "broken.jpg" in (tmp_path / "out" / "report.html").read_text()


def test_the_worst_errors_and_confused_pairs_carry_the_endpoints_explanation_overlay(evaluated):
    html, summary = evaluated["html"], evaluated["summary"]
    assert summary["worst_errors"], "the quick model makes errors on the sample: something to explain"
    overlays = re.findall(r'<img class="overlay"\s+alt="why [^"]*"\s+src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', html)
    assert len(overlays) >= len(summary["worst_errors"]) + 1  # each worst error, and at least one confused pair
    assert "explanation" not in json.dumps(summary)  # the pictures stay in the report, not in evaluation.json


def test_the_not_a_dog_figures_are_the_served_verdicts(evaluated, sample_dir):
    predictor = Predictor(evaluated["model_dir"])
    paths = sorted((sample_dir / "test").rglob("*.jpg"))
    verdicts = [predictor.answer([decode_image(p.read_bytes(), predictor.draft_size)], 1)["dog"][0] for p in paths]
    dog = evaluated["summary"]["dog"]
    assert dog["images"] == len(paths) and dog["threshold"] == predictor.dog_check.threshold is not None
    assert dog["flagged"] == pytest.approx(np.mean([not v["is_dog"] for v in verdicts]))
    assert 'id="not-a-dog-figures"' in evaluated["html"]
