"""``make bench-accuracy``: test accuracy and wall time of the default recipe beside the linear probe, same run;
its choices at few shots beside a fixed plain probe; the calibration figures of every run.

The default recipe (``--train-layers auto`` with pretrained weights: LP-FT) fits the linear probe as its first
stage and scores it on the test split before fine-tuning; so every row's probe and final model come from one run
on the same features, splits and seed. Accuracy rows: dogs10 in full and the synthetic sample of ``make-sample``.
Few-shot rows: five seeded 5-shot subsets of dogs10 (5 train and 2 valid photos per breed drawn from its train
split; its test split whole), each run through the recipe and, on the recipe's own cached frozen features of the
same training photos, a plain L-BFGS probe with one fixed L2 and no standardization; then their mean.
Calibration rows: the test ECE and NLL before and after the temperature, from each run's metrics.json.
Only the model and its weights are given: everything else is the training program's default.

``--quick`` (what CI runs): a tiny synthetic sample and one 2-shot subset of it, ResNet18 with randomly initialised
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

import torch

from dogbreed import probe
from dogbreed.data import write_few_shot
from dogbreed.local import local_train
from dogbreed.sample import make_sample

from . import notdog_bench, report

DATA = Path("../shared/data/dogs10")
WEIGHTS = Path("../shared/weights/tf_efficientnet_lite0.in1k.pth")
MODEL = "tf_efficientnet_lite0"
SEEDS = (0, 1, 2, 3, 4)
# The plain probe's L2, fixed a priori (never tuned on these splits): scikit-learn's LogisticRegression default, C=1,
# on 5-shot dogs10's 50 training photos (its summed loss + |W|^2/2 is mean loss + l2/2 |W|^2 with l2 = 1/(C n)).
FIXED_L2 = 0.02


def datasets(work: Path, dogs10: Path) -> list[tuple[str, Path]]:
    sample = work / "sample"
    make_sample(sample)
    return [("dogs10", dogs10), ("synthetic sample (make-sample)", sample)]


def few_shot_sets(work: Path, source: Path, shots: int, valid_shots: int, seeds) -> list[tuple[int, Path]]:
    return [(seed, write_few_shot(source, work / f"few_shot{seed}", shots, valid_shots, seed)) for seed in seeds]


def quick_setup(work: Path, seed: int) -> tuple[list[tuple[str, Path]], list[tuple[int, Path]], list[str]]:
    """--quick's data sets and flags: no ../shared, a weights file of an untrained ResNet18 (LP-FT needs one)."""
    from dogbreed import models

    sample = work / "sample"
    make_sample(sample, classes=3, size=80, per_split={"train": 6, "valid": 2, "test": 2})
    weights = work / "resnet18-untrained.pth"
    torch.manual_seed(seed)
    torch.save(models.build("resnet18", 1000).state_dict(), weights)
    few = few_shot_sets(work, sample, 2, 1, (seed,))  # one split: two runs in all, as fast as a try-out can be
    return [("synthetic sample, tiny (--quick)", sample)], few, [
        "--model", "resnet18", "--pretrained-weights", str(weights), "--input-size", "64", "--epochs", "1",
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
    fitted = recipe["probe"]
    verdict = "**≥ probe**" if summary["test_acc"] >= fitted["test_acc"] else "below the probe"
    cells = [name, f"{images['train']}/{images['valid']}/{images['test']}", f"{fitted['test_acc']:.3f}",
             f"{fitted['seconds']:.0f}", f"**{summary['test_acc']:.3f}**", f"{summary['seconds']:.0f}",
             f"{result['wall_s']:.0f}", recipe["kept"], verdict]
    record = {"images": images, "probe_test_acc": fitted["test_acc"], "probe_s": fitted["seconds"],
              "test_acc": summary["test_acc"], "training_s": summary["seconds"], "wall_s": result["wall_s"],
              "kept": recipe["kept"], "reason": recipe["reason"], "epochs_run": summary["epochs_run"],
              "precision": summary["precision"]}
    return cells, record


def fixed_probe_acc(cache: Path) -> float:
    """Test accuracy of the plain probe (:data:`FIXED_L2`, raw features) fitted on the run's training photos, from
    the frozen features the recipe cached: the same photos, crop and precision as the recipe's own probe."""
    (path,) = cache.glob("features-*.pt")
    cached = torch.load(path, map_location="cpu", weights_only=True)
    train, test = cached["train"], cached["test"]
    classes = int(max(train["labels"].max(), test["labels"].max())) + 1
    weight, bias = probe.fit_unstandardized(train["features"], train["labels"], classes, FIXED_L2)
    return probe.score(weight, bias, test["features"], test["labels"])[1]


def few_shot_row(seed: int, result: dict, fixed: float) -> tuple[list, dict]:
    summary = result["summary"]
    recipe = summary["recipe"]
    choice = recipe["probe"].get("l2_choice", {})
    delta = summary["test_acc"] - fixed
    cells = [f"seed {seed}", f"{recipe['probe']['l2']:g} ({choice.get('by', 'valid split').split(',')[0]})",
             recipe["kept"], f"{recipe['probe']['test_acc']:.3f}", f"**{summary['test_acc']:.3f}**", f"{fixed:.3f}",
             f"{delta:+.3f}", "**≥ fixed probe**" if delta >= 0 else "below the fixed probe"]
    return cells, {"seed": seed, "test_acc": summary["test_acc"], "fixed_probe_test_acc": fixed,
                   "probe": recipe["probe"], "kept": recipe["kept"], "reason": recipe["reason"]}


def mean_row(records: list[dict]) -> list:
    recipe = sum(r["test_acc"] for r in records) / len(records)
    fixed = sum(r["fixed_probe_test_acc"] for r in records) / len(records)
    held = sum(r["test_acc"] >= r["fixed_probe_test_acc"] for r in records)
    return ["mean", "", f"{held} of {len(records)} splits ≥ fixed", "", f"**{recipe:.3f}**", f"{fixed:.3f}",
            f"{recipe - fixed:+.3f}", "**≥ fixed probe**" if recipe >= fixed else "below the fixed probe"]


def calibration_row(name: str, summary: dict) -> list:
    found = summary.get("calibration") or {}
    if "test_ece_before" not in found:
        return [name, "", "", "", "", "", "no test calibration figures"]
    return [name, f"{found['temperature']:.3f}", f"{found['test_ece_before']:.4f}", f"**{found['test_ece_after']:.4f}**",
            f"{found['test_nll_before']:.4f}", f"{found['test_nll_after']:.4f}",
            f"{found['valid_images']} valid images; {found['temperature_source']}"]


def run_few_shot(few: list, work: Path, flags: list[str]) -> list:
    """[(seed, result, the fixed probe's test accuracy)]: the recipe with its features cached, then the plain probe."""
    done = []
    for seed, data in few:
        cache = work / f"features{seed}"
        result = measure(data, work / f"few{seed}", flags + ["--feature-cache", str(cache)])
        done.append((seed, result, fixed_probe_acc(cache)))
        print(f"seed {seed}: recipe {result['summary']['test_acc']:.3f}, fixed probe {done[-1][2]:.3f}", flush=True)
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Test accuracy of the default recipe beside the linear probe")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="--quick's seed (the few-shot splits are seeds 0-4)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"dogs10 (default: {DATA})")
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help=f"the backbone's weights (default: {WEIGHTS})")
    parser.add_argument("--precision", default="auto", help="--precision of every run (auto: measured per run)")
    parser.add_argument("--load", default="", help="what else ran on the machine meanwhile, for the notes")
    report.add_arguments(parser, "a tiny synthetic sample and a 2-shot subset, ResNet18 untrained at 64 px, 1 epoch")
    args = parser.parse_args(argv)
    where = report.destination(args)
    if not args.quick and (not args.data.is_dir() or not args.weights.is_file()):
        print(f"bench-accuracy needs {args.data} and {args.weights} (absent here; --quick needs neither)",
              file=sys.stderr)
        return 1
    args.data = args.data.resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-accuracy-"))
    try:
        if args.quick:
            runs, few, flags = quick_setup(work, args.seed)
        else:
            runs, few = datasets(work, args.data), few_shot_sets(work, args.data, args.shots, 2, SEEDS)
            flags = ["--model", MODEL, "--pretrained-weights", str(args.weights.resolve())]
            flags += ["--precision", args.precision] if args.precision != "auto" else []
        # the few-shot rows first, saved at once: the longest run (dogs10 in full) comes last
        done = {"few_shot": run_few_shot(few, work, flags), "accuracy": []}
        save_few_shot(args, done["few_shot"], where)
        save_calibration(args, done, where)
        for index, (name, data) in enumerate(runs):
            done["accuracy"].append((name, measure(data, work / f"run{index}", flags)))
            print(name, "done", flush=True)
        if not args.quick:  # the not-a-dog rows (a section of their own), on the model run0 trained on dogs10
            notdog_bench.save(notdog_bench.measure(work / "run0/opt_ml/model"), where)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save_accuracy(args, flags, done["accuracy"], where)
    written = save_calibration(args, done, where)
    print(f"wrote {written}")
    return 0


def _command(args, flags: list[str]) -> str:
    if args.quick:
        return f"`dogbreed local-train {' '.join(flags)}`"
    precision = f" --precision {args.precision}" if args.precision != "auto" else ""
    return f"`dogbreed local-train --model {MODEL} --pretrained-weights {WEIGHTS}{precision}`"


def _load_note(args) -> list[str]:
    return [f"Load on the machine during this run: {args.load}."] if args.load else []


def save_accuracy(args, flags: list[str], runs: list, where) -> Path:
    rows, results = [], {}
    for name, result in runs:
        cells, results[name] = row(name, result)
        rows.append(cells)
    return report.save("accuracy", {
        "title": "Accuracy: the default recipe beside the linear probe",
        "headers": ["data", "images train/valid/test", "linear probe test acc", "probe s", "default recipe test acc",
                    "training s", "wall s (process)", "kept", "verdict"],
        "rows": rows,
        "results": results,
        "notes": [
            f"{_command(args, flags)} and nothing else: the default "
            "recipe (LP-FT). The linear probe is its first stage, measured in the same run: L-BFGS multinomial "
            "logistic regression on the frozen backbone's pooled features of the center crop, L2 chosen by k-fold "
            "cross-validation on train + valid (the strongest within one standard error of the best), fitted on train; "
            "'probe s' is its feature pass plus fit. The recipe then fine-tunes every layer (head at "
            "--lr, backbone at a tenth of it, batch-norm statistics frozen below 64 images a batch), mixes the last "
            "epoch's weights with the probe's at 0.25/0.5/0.75, and keeps a fine-tuned epoch or a mix only where it "
            "beats the probe (and the best so far) on the valid split in loss and in accuracy, the accuracy by more "
            "than the valid split's binomial standard error ('kept').",
            "'training s': from the training program's start to its artifacts (metrics.json 'seconds'); 'wall s': "
            "the whole process, start-up included.",
        ] + _load_note(args),
    }, where)


def save_few_shot(args, runs: list, where) -> Path:
    rows, records = [], []
    for seed, result, fixed in runs:
        cells, record = few_shot_row(seed, result, fixed)
        rows.append(cells)
        records.append(record)
    rows.append(mean_row(records))
    shots, valid_shots, source = (2, 1, "the sample") if args.quick else (args.shots, 2, "dogs10")
    return report.save("fewshot", {
        "title": f"Few shots: the recipe's choices beside a fixed plain probe ({shots}-shot, seeded splits)",
        "headers": ["split", "recipe's probe L2 (chosen by)", "kept", "recipe's probe test acc",
                    "default recipe test acc", f"plain probe, L2 {FIXED_L2:g} fixed, test acc", "recipe - plain",
                    "verdict"],
        "rows": rows,
        "results": records,
        "notes": [
            f"Each split: {shots} train and {valid_shots} valid photos per breed drawn (seeded: `data.write_few_shot`) "
            f"from {source}'s train split; the test split is {source}'s, whole. The recipe: {_command(args, [])} "
            "(the default recipe, as above), with --feature-cache so that its frozen features are read back.",
            f"The plain probe: L-BFGS multinomial logistic regression on the same frozen features of the same "
            f"training photos (train split only), raw features (no standardization), mean loss + l2/2 |W|^2 with "
            f"l2 = {FIXED_L2:g} on every split, fixed before any run: scikit-learn's default C = 1 at 50 photos.",
            "The recipe must not fall below the plain probe in the mean and in at least 4 of the 5 splits.",
        ] + _load_note(args),
    }, where)


def save_calibration(args, done: dict, where) -> Path:
    runs = [(name, result) for name, result in done["accuracy"]]
    runs += [(f"{args.shots if not args.quick else 2}-shot, seed {seed}", result) for seed, result, _ in done["few_shot"]]
    return report.save("calibration", {
        "title": "Calibration: test ECE and NLL before and after the temperature (default recipe)",
        "headers": ["data", "temperature", "test ECE before", "test ECE after", "test NLL before", "test NLL after",
                    "temperature fitted on"],
        "rows": [calibration_row(name, result["summary"]) for name, result in runs],
        "results": {name: result["summary"].get("calibration") for name, result in runs},
        "notes": ["From each run's metrics.json ('calibration'): one temperature fitted at the end of training on the "
                  "kept model's valid-split logits, or, for a kept probe refitted on train + valid, on the "
                  "cross-validation's out-of-fold logits; ECE with 15 equal-width confidence bins. Target: test "
                  "ECE ≤ 0.03 on dogs10."] + _load_note(args),
    }, where)


if __name__ == "__main__":
    sys.exit(main())
