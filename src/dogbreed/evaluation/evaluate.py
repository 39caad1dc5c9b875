"""``dogbreed evaluate --model model.tar.gz|DIR --data DIR [--out DIR]``: the model over a labelled split, through
the serving code (the endpoint's decoding, preprocessing and :class:`~dogbreed.serving.predictor.Predictor`), written
up as ``report.html`` + ``confusion.csv`` + ``evaluation.json`` in the output folder.

DIR of ``--data``: a dogImages layout (its ``test/`` split is used) or one folder of breed folders.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import calibration
from ..data import IMAGE_EXTENSIONS, display_name, list_classes
from ..errors import DataError
from ..serving.archive import model_dir_from
from ..serving.decoders import decode_image
from ..serving.errors import RequestError
from ..serving.predictor import Predictor
from . import figures, metrics, report
from .arguments import HELP, add_arguments
from .explanations import add_overlays, dog_figures

BATCH = 16
CONFUSION_CSV = "confusion.csv"
RESULTS_JSON = "evaluation.json"
PAIRS, WORST, HEATMAP_BREEDS = 20, 12, 25


def split_dir(data_dir: Path) -> Path:
    """``data_dir/test`` where there is one (a dogImages layout), else ``data_dir`` itself (breed folders)."""
    data_dir = Path(data_dir)
    chosen = data_dir / "test" if (data_dir / "test").is_dir() else data_dir
    if not chosen.is_dir() or not list_classes(chosen):
        raise DataError(f"--data {data_dir}: neither a test/ split nor a folder of breed folders")
    return chosen


def labelled_images(folder: Path, class_names: list[str]) -> list[tuple[Path, int]]:
    """Every photo of the breed folders (``001.Affenpinscher`` or ``Affenpinscher``) with the model's label."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [f for f in list_classes(folder) if display_name(f) not in index]
    if unknown:
        raise DataError(f"{folder}: breeds the model does not know: {', '.join(unknown[:5])}")
    samples = [(path, index[display_name(f)]) for f in list_classes(folder) for path in sorted((folder / f).iterdir())
               if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()]
    if not samples:
        raise DataError(f"{folder} holds no photos")
    return samples


@dataclass
class Predictions:
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)  # raw logits (up to a constant per row), one per photo
    dog_scores: list[float] = field(default_factory=list)  # the served dog head's score, one per photo
    skipped: list[dict] = field(default_factory=list)


def _decode(predictor: Predictor, path: Path):
    """The endpoint's decoding of an uploaded photo; an unreadable one is noted, not fatal."""
    try:
        return decode_image(path.read_bytes(), predictor.draft_size), None
    except (RequestError, OSError) as exc:
        return None, str(exc).splitlines()[0][:200]


def _chunks(samples: list, size: int) -> Iterator[list]:
    for start in range(0, len(samples), size):
        yield samples[start:start + size]


def run_model(predictor: Predictor, samples: list[tuple[Path, int]], progress: bool = True) -> Predictions:
    """Decode in threads (Pillow releases the GIL), forward in batches of BATCH, with a progress bar."""
    found = Predictions()
    with ThreadPoolExecutor(max_workers=4) as pool, tqdm(total=len(samples), desc="evaluate", unit="photo",
                                                         disable=not progress) as bar:
        for chunk in _chunks(samples, BATCH):
            images, kept = [], []
            for (path, label), (image, reason) in zip(chunk, pool.map(lambda s: _decode(predictor, s[0]), chunk),
                                                      strict=True):
                if image is None:
                    found.skipped.append({"path": str(path), "reason": reason})
                else:
                    images.append(image)
                    kept.append((path, label))
            if images:
                logits, dogs = predictor.tensor_outputs(predictor.tensor(images))  # the logits before any temperature
                found.paths += [p for p, _ in kept]
                found.labels += [label for _, label in kept]
                found.scores += list(logits.float().numpy())
                found.dog_scores += dogs.tolist()
            bar.update(len(chunk))
    if not found.paths:
        raise DataError("no photo of the split could be read")
    return found


def scores_of(found: Predictions, class_names: list[str], temperature: float | None) -> dict:
    """Every figure of the report from the raw scores; probabilities are the served ones, after the temperature."""
    logits, labels = np.stack(found.scores).astype(np.float64), np.asarray(found.labels)
    source = "read from model.json (fitted on the valid split at the end of training)" if temperature else ""
    cal = calibration.calibrate(logits, labels, temperature, source)
    probs = calibration.probabilities(logits, cal.temperature)
    predicted = probs.argmax(axis=1)
    matrix = metrics.confusion(labels, predicted, len(class_names))
    worst = [{"path": str(found.paths[i]), "name": found.paths[i].name, "true": class_names[labels[i]],
              "predicted": class_names[predicted[i]], "confidence": float(probs[i, predicted[i]])}
             for i in metrics.worst_errors(probs, labels, WORST)]
    return {"top1": metrics.top_k_accuracy(probs, labels, 1), "top5": metrics.top_k_accuracy(probs, labels, 5),
            "images": len(labels), "skipped": found.skipped, "calibration": cal, "matrix": matrix,
            "per_breed": metrics.per_breed(labels, predicted, class_names),
            "pairs": metrics.confused_pairs(matrix, class_names, PAIRS), "worst_errors": worst}


def _settings(meta: dict, predictor: Predictor, model_source: Path, data: Path) -> list[tuple[str, str]]:
    """What the run used: the model's own record (model.json) and this evaluation's."""
    keys = ("arch", "num_classes", "input_size", "resize", "interpolation", "mean", "std", "temperature", "trained")
    rows = [(key, json.dumps(meta[key]) if not isinstance(meta[key], str) else meta[key]) for key in keys if key in meta]
    return rows + [("engine", predictor.describe()), ("model", str(model_source)), ("data", str(data)),
                   ("batch size", str(BATCH))]


def report_context(results: dict, class_names: list[str], settings: list, model: dict, data: dict) -> dict:
    cal: calibration.Calibration = results["calibration"]
    heatmap_breeds = metrics.most_confused_breeds(results["matrix"], HEATMAP_BREEDS)
    errors = [dict(e, thumbnail=figures.thumbnail(Path(e["path"]))) for e in results["worst_errors"]]
    return {"model": model, "data": dict(data, images=results["images"], skipped=results["skipped"]),
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "summary": {"top1": results["top1"], "top5": results["top5"]}, "calibration": cal.as_dict(),
            "reliability_png": figures.reliability_diagram(cal), "confusion_csv": CONFUSION_CSV,
            "heatmap_png": figures.confusion_heatmap(results["matrix"], class_names, heatmap_breeds),
            "pairs": results["pairs"], "errors": errors, "per_breed": results["per_breed"], "settings": settings,
            "dog": results.get("dog")}


def results_json(results: dict) -> dict:
    """``evaluation.json``: the figures without the pictures, for scripts and benchmarks."""
    kept = {k: v for k, v in results.items() if k not in ("calibration", "matrix")}
    pictures = ("explanation", "example")  # base64 PNGs: the report shows them
    for key in ("worst_errors", "pairs"):
        kept[key] = [{k: v for k, v in row.items() if k not in pictures} for row in kept[key]]
    return dict(kept, calibration=results["calibration"].as_dict())


def evaluate(model: Path, data_dir: Path, out_dir: Path, progress: bool = True) -> dict:
    """Run ``model`` (a model directory, a folder holding model.tar.gz, or the archive) over ``data_dir``'s test
    split; write report.html, confusion.csv and evaluation.json into ``out_dir``. Returns evaluation.json's dict
    with ``report``: the HTML file's path."""
    out_dir = Path(out_dir)
    folder = split_dir(data_dir)
    with tempfile.TemporaryDirectory(prefix="dogbreed-evaluate-") as scratch:
        model_dir = model_dir_from(Path(model), Path(scratch))
        predictor = Predictor(model_dir)
        samples = labelled_images(folder, predictor.class_names)
        found = run_model(predictor, samples, progress)
        meta = predictor.meta
        results = scores_of(found, predictor.class_names, meta.get("temperature"))
        results["dog"] = dog_figures(predictor.dog_check, found.dog_scores)
        predicted = np.stack(found.scores).argmax(axis=1)  # the temperature changes no answer
        add_overlays(model_dir, predictor, results, found.paths, np.asarray(found.labels), predicted)
        settings = _settings(meta, predictor, Path(model), folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics.write_confusion_csv(out_dir / CONFUSION_CSV, results["matrix"], predictor.class_names)
    context = report_context(results, predictor.class_names, settings,
                             {"arch": meta["arch"], "classes": len(predictor.class_names), "source": str(model),
                              "engine": predictor.describe()}, {"path": str(folder), "name": Path(data_dir).name})
    target = report.write(out_dir, context)
    summary = dict(results_json(results), report=str(target))
    (out_dir / RESULTS_JSON).write_text(json.dumps(summary, indent=2))
    return summary


def run(args: argparse.Namespace) -> int:
    summary = evaluate(Path(args.model), Path(args.data), Path(args.out), progress=not args.no_progress)
    cal = summary["calibration"]
    print(f"top1={summary['top1']:.4f} top5={summary['top5']:.4f} images={summary['images']} "
          f"ece_before={cal['ece_before']:.4f} ece_after={cal['ece_after']:.4f} temperature={cal['temperature']:.4f}")
    print(f"report: {summary['report']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The verb on its own (the ``dogbreed`` command wires :func:`add_arguments` and :func:`run`)."""
    parser = add_arguments(argparse.ArgumentParser(prog="dogbreed evaluate", description=HELP))
    return run(parser.parse_args(argv))
