"""``make bench-accuracy``: test accuracy and wall time of the default recipe beside the linear probe, same run.

The default recipe (``--train-layers auto`` with pretrained weights: LP-FT) fits the linear probe as its first
stage and scores it on the test split before fine-tuning; so every row's probe and final model come from one run
on the same features, splits and seed. Rows: dogs10 in full, a 5-shot subset of it (5 train and 2 valid photos per
breed drawn from its train split, seeded; its test split whole), and the synthetic sample of ``make-sample``.
Only the model and its weights are given: everything else is the training program's default.

``--quick`` (what CI runs): a tiny synthetic sample and a 2-shot subset of it, ResNet18 with randomly initialised
"pretrained" weights (a file, so the recipe still fits its probe first) at 64 px for 1 epoch, the report in a
temporary file; it needs no ../shared and checks that the bench runs, its numbers are not figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dogbreed.data import write_few_shot
from dogbreed.local import local_train
from dogbreed.sample import make_sample

from . import notdog_bench, report

DATA = Path("../shared/data/dogs10")
WEIGHTS = Path("../shared/weights/tf_efficientnet_lite0.in1k.pth")
MODEL = "tf_efficientnet_lite0"


def datasets(work: Path, shots: int, seed: int) -> list[tuple[str, Path]]:
    sample = work / "sample"
    make_sample(sample)
    return [("dogs10", DATA.resolve()),
            (f"dogs10, {shots}-shot (seed {seed})", write_few_shot(DATA, work / "few_shot", shots, 2, seed)),
            ("synthetic sample (make-sample)", sample)]


def quick_setup(work: Path, seed: int) -> tuple[list[tuple[str, Path]], list[str]]:
    """--quick's data sets and flags: no ../shared, a weights file of an untrained ResNet18 (LP-FT needs one)."""
    import torch  # only to write the stand-in weights

    from dogbreed import models

    sample = work / "sample"
    make_sample(sample, classes=3, size=80, per_split={"train": 6, "valid": 2, "test": 2})
    weights = work / "resnet18-untrained.pth"
    torch.manual_seed(seed)
    torch.save(models.build("resnet18", 1000).state_dict(), weights)
    data = [("synthetic sample, tiny (--quick)", sample),
            (f"its 2-shot subset (seed {seed})", write_few_shot(sample, work / "few_shot", 2, 1, seed))]
    return data, ["--model", "resnet18", "--pretrained-weights", str(weights), "--input-size", "64", "--epochs", "1",
                  "--precision", "fp32"]  # no precision probe: seconds of a minute


def measure(data: Path, work: Path, flags: list[str]) -> dict:
    """One default-recipe run: its metrics.json, and the wall time of the whole process (start-up included)."""
    work.mkdir(parents=True)
    start = time.perf_counter()
    with open(work / "stdout.log", "w") as log:
        code, _ = local_train(data, work, flags, stdout=log)
    wall = time.perf_counter() - start
    if code:
        raise SystemExit(f"training on {data} failed (exit {code}); see {work / 'stdout.log'}")
    summary = json.loads((work / "opt_ml/output/data/metrics.json").read_text())
    return {"wall_s": wall, "summary": summary}


def row(name: str, result: dict) -> tuple[list, dict]:
    summary = result["summary"]
    recipe, images = summary["recipe"], summary["images"]
    probe = recipe["probe"]
    verdict = "**≥ probe**" if summary["test_acc"] >= probe["test_acc"] else "below the probe"
    cells = [name, f"{images['train']}/{images['valid']}/{images['test']}", f"{probe['test_acc']:.3f}",
             f"{probe['seconds']:.0f}", f"**{summary['test_acc']:.3f}**", f"{summary['seconds']:.0f}",
             f"{result['wall_s']:.0f}", recipe["kept"], verdict]
    record = {"images": images, "probe_test_acc": probe["test_acc"], "probe_s": probe["seconds"],
              "test_acc": summary["test_acc"], "training_s": summary["seconds"], "wall_s": result["wall_s"],
              "kept": recipe["kept"], "reason": recipe["reason"], "epochs_run": summary["epochs_run"],
              "precision": summary["precision"]}
    return cells, record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Test accuracy of the default recipe beside the linear probe")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load", default="", help="what else ran on the machine meanwhile, for the notes")
    report.add_arguments(parser, "a tiny synthetic sample and its 2-shot subset, ResNet18 untrained at 64 px, 1 epoch")
    args = parser.parse_args(argv)
    where = report.destination(args)
    if not args.quick and (not DATA.is_dir() or not WEIGHTS.is_file()):
        print("bench-accuracy needs ../shared/data/dogs10 and ../shared/weights (absent here; --quick needs neither)",
              file=sys.stderr)
        return 1
    flags = ["--model", MODEL, "--pretrained-weights", str(WEIGHTS.resolve())]
    work = Path(tempfile.mkdtemp(prefix="bench-accuracy-"))
    rows, results = [], {}
    try:
        runs, flags = quick_setup(work, args.seed) if args.quick else (datasets(work, args.shots, args.seed), flags)
        for index, (name, data) in enumerate(runs):
            cells, results[name] = row(name, measure(data, work / f"run{index}", flags))
            rows.append(cells)
            print(" | ".join(str(c) for c in cells), flush=True)
        if not args.quick:  # the not-a-dog rows (a section of their own), on the model run0 trained on dogs10
            notdog_bench.save(notdog_bench.measure(work / "run0/opt_ml/model"), where)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shots, valid_shots, source = (2, 1, "the sample") if args.quick else (args.shots, 2, "dogs10")
    written = report.save("accuracy", {
        "title": "Accuracy: the default recipe beside the linear probe",
        "headers": ["data", "images train/valid/test", "linear probe test acc", "probe s", "default recipe test acc",
                    "training s", "wall s (process)", "kept", "verdict"],
        "rows": rows,
        "results": results,
        "notes": [
            f"`dogbreed local-train {' '.join(flags) if args.quick else f'--model {MODEL} --pretrained-weights {WEIGHTS}'}` "
            "and nothing else: the default "
            "recipe (LP-FT). The linear probe is its first stage, measured in the same run: L-BFGS multinomial "
            "logistic regression on the frozen backbone's pooled features of the center crop, L2 chosen on the "
            "valid split; 'probe s' is its feature pass plus fit. The recipe then fine-tunes every layer (head at "
            "--lr, backbone at a tenth of it, batch-norm statistics frozen below 64 images a batch), mixes the last "
            "epoch's weights with the probe's at 0.25/0.5/0.75, and keeps a fine-tuned epoch or a mix only where it "
            "beats the probe (and the best so far) on the valid split in both loss and accuracy ('kept').",
            f"'training s': from the training program's start to its artifacts (metrics.json 'seconds'); 'wall s': "
            f"the whole process, start-up included. The {shots}-shot subset: {shots} train and {valid_shots} valid "
            f"photos per breed drawn from {source}'s train split; its test split is {source}'s, untouched.",
        ] + ([f"Load on the machine during this run: {args.load}."] if args.load else []),
    }, where)
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
