"""``make bench-tune``: a 12-trial head-only local tuning with the frozen-feature cache beside the same without it.

Both arms run the same trials (same seed, same ranges, same runner) on ../shared/data/dogs10 with the
offline tf_efficientnet_lite0 weights; the only difference is --feature-cache. Target: >= 10x faster,
the same best validation accuracy within 1 point.

``--quick`` (what CI runs): 1 trial of 1 epoch per arm, ResNet18 without pretrained weights at 64 px on a tiny
synthetic sample, the report in a temporary file; it checks that the bench runs, its numbers are not figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from dogbreed.launch.local_tuning import tune
from dogbreed.sample import make_sample

from . import report

DATA = Path("../shared/data/dogs10")
WEIGHTS = Path("../shared/weights/tf_efficientnet_lite0.in1k.pth")


# (arm, --feature-cache, in_process): each factor alone, the cache with the same runner as no cache (a process per
# trial), then the cache with the in-process runner that cached trials use by default.
ARMS = (("cached, in process", "yes", "auto"), ("cached, a process per trial", "yes", "no"),
        ("uncached, a process per trial", "no", "no"))


def setup(args, work: Path) -> tuple[Path, dict, dict, str]:
    """(the data, the search ranges, the fixed hyperparameters, what they are in words) of a full or quick run."""
    fixed = {"train-layers": "head", "augment": "false", "epochs": args.epochs, "patience": 0, "profile": "false",
             "num-workers": 1}
    if args.quick:
        make_sample(work / "sample", classes=2, size=80, per_split={"train": 8, "valid": 2, "test": 1})
        fixed.update({"model": "resnet18", "pretrained-weights": "none", "input-size": 64})
        return (work / "sample", {"lr": {"min": 0.001, "max": 0.1, "scaling": "Logarithmic"},
                                  "batch-size": {"values": [4, 8]}}, fixed,
                "The synthetic sample (2 classes, 16 train / 4 valid images at 80 px), resnet18 without pretrained "
                "weights at 64 px")
    fixed.update({"model": "tf_efficientnet_lite0", "pretrained-weights": str(WEIGHTS.resolve())})
    return (DATA, {"lr": {"min": 0.001, "max": 0.1, "scaling": "Logarithmic"},
                   "batch-size": {"values": [32, 64, 128, 256, 512]}}, fixed,
            "dogs10 (1,500 train / 400 valid / 600 test real photos), tf_efficientnet_lite0 with the offline ImageNet weights")


def run_arms(args, work: Path) -> tuple[dict, str]:
    data, ranges, fixed, what = setup(args, work)
    results = {}
    for arm, cache, in_process in ARMS:
        result = tune(data, work / arm.replace(" ", "_").replace(",", ""), ranges, fixed, objective="valid_loss",
                      max_trials=args.trials, parallel=args.parallel, strategy="Bayesian", use_docker="no",
                      feature_cache=cache, seed=0, in_process=in_process)
        best = result["records"][0] if result["records"] and result["records"][0]["state"] == "complete" else {}
        results[arm] = {"wall_s": result["wall_s"], "best_valid_acc": best.get("valid_acc"),
                        "best_valid_loss": best.get("valid_loss"),
                        "best": result["best"], "trials": len(result["records"]),
                        "stopped_early": sum(r["state"] == "stopped early" for r in result["records"])}
        print(f"{arm}: {result['wall_s']:.0f} s, best valid_acc {best.get('valid_acc')}, best {result['best']}", flush=True)
    return results, what


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Local tuning, head-only: the frozen-feature cache beside the same trials without it")
    parser.add_argument("--trials", type=int, default=None, help="trials per arm (default: 12; --quick: 1)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per trial (default: $BENCH_TUNE_EPOCHS or 2; --quick: 1)")
    parser.add_argument("--parallel", type=int, default=1)
    report.add_arguments(parser, "1 trial of 1 epoch per arm, ResNet18 untrained at 64 px on a tiny synthetic sample")
    args = parser.parse_args(argv)
    args.trials = args.trials or (1 if args.quick else 12)
    args.epochs = args.epochs or (1 if args.quick else int(os.environ.get("BENCH_TUNE_EPOCHS", 2)))
    where = report.destination(args)
    if not args.quick and (not DATA.is_dir() or not WEIGHTS.is_file()):
        print("bench-tune needs ../shared/data/dogs10 and ../shared/weights (absent here; --quick needs neither)",
              file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    try:
        results, what = run_arms(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    uncached, same_runner, default = (results[a] for a in ("uncached, a process per trial", "cached, a process per trial",
                                                           "cached, in process"))
    speedup = uncached["wall_s"] / default["wall_s"]
    cache_alone = uncached["wall_s"] / same_runner["wall_s"]
    runner_alone = same_runner["wall_s"] / default["wall_s"]
    gap = abs((default["best_valid_acc"] or 0) - (uncached["best_valid_acc"] or 0))
    rows = [[arm, f"{r['wall_s']:.0f}", r["trials"], r["stopped_early"], f"{r['best_valid_acc']}",
             f"{r['best_valid_loss']:.4f}" if r["best_valid_loss"] else ""]
            for arm, r in results.items()]
    rows.append(["the cache alone (same runner)", f"**{cache_alone:.1f}x**", "", "", "", ""])
    rows.append(["the in-process runner alone (both cached)", f"**{runner_alone:.1f}x**", "", "", "", ""])
    rows.append(["both (the default)", f"**{speedup:.1f}x** faster", "", "", f"gap {100 * gap:.1f} points", ""])
    written = report.save("tune", {
        "title": f"Local tuning: head-only, {args.trials} trial{'s' * (args.trials != 1)}, frozen-feature cache vs none",
        "headers": ["arm", "wall s", "trials", "stopped early", "best valid_acc", "best valid_loss"],
        "rows": rows, "results": results,
        "notes": [f"{what}, head only, no augmentation, {args.epochs} epochs per trial, Bayesian (TPE) search "
                  f"over lr 0.001-0.1 (log) and batch size {'4-8' if args.quick else '32-512'}, median early stopping, "
                  f"{args.parallel} trial(s) at a time, "
                  "seed 0."],
    }, where)
    print(f"speed-up {speedup:.1f}x, best valid_acc gap {100 * gap:.1f} points; wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
