"""``make bench-tune``: a 12-trial head-only local tuning with the frozen-feature cache beside the same without it.

Both arms run the same trials (same seed, same ranges, same runner) on ../shared/data/dogs10 with the
offline tf_efficientnet_lite0 weights; the only difference is --feature-cache. Target: >= 10x faster,
the same best validation accuracy within 1 point.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from dogbreed.launch.local_tuning import tune

from . import report

DATA = Path("../shared/data/dogs10")
WEIGHTS = Path("../shared/weights/tf_efficientnet_lite0.in1k.pth")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Local tuning, head-only: the frozen-feature cache beside the same trials without it")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("BENCH_TUNE_EPOCHS", 2)))
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args(argv)
    if not DATA.is_dir() or not WEIGHTS.is_file():
        print("bench-tune needs ../shared/data/dogs10 and ../shared/weights (absent here)", file=sys.stderr)
        return 1
    ranges = {"lr": {"min": 0.001, "max": 0.1, "scaling": "Logarithmic"}, "batch-size": {"values": [32, 64, 128, 256, 512]}}
    fixed = {"model": "tf_efficientnet_lite0", "pretrained-weights": str(WEIGHTS.resolve()), "train-layers": "head",
             "augment": "false", "epochs": args.epochs, "patience": 0, "profile": "false", "num-workers": 1}
    results = {}
    work = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    try:
        # Each factor alone: the cache with the same runner as no cache (a process per trial), then the cache with
        # the in-process runner that cached trials use by default.
        for arm, cache, in_process in (("cached, in process", "yes", "auto"), ("cached, a process per trial", "yes", "no"),
                                       ("uncached, a process per trial", "no", "no")):
            result = tune(DATA, work / arm.replace(" ", "_").replace(",", ""), ranges, fixed, objective="valid_loss",
                          max_trials=args.trials, parallel=args.parallel, strategy="Bayesian", use_docker="no",
                          feature_cache=cache, seed=0, in_process=in_process)
            best = result["records"][0] if result["records"] and result["records"][0]["state"] == "complete" else {}
            results[arm] = {"wall_s": result["wall_s"], "best_valid_acc": best.get("valid_acc"),
                            "best_valid_loss": best.get("valid_loss"),
                            "best": result["best"], "trials": len(result["records"]),
                            "stopped_early": sum(r["state"] == "stopped early" for r in result["records"])}
            print(f"{arm}: {result['wall_s']:.0f} s, best valid_acc {best.get('valid_acc')}, best {result['best']}", flush=True)
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
    report.save("tune", {
        "title": "Local tuning: head-only, 12 trials, frozen-feature cache vs none",
        "headers": ["arm", "wall s", "trials", "stopped early", "best valid_acc", "best valid_loss"],
        "rows": rows, "results": results,
        "notes": [f"dogs10 (1,500 train / 400 valid / 600 test real photos), tf_efficientnet_lite0 with the offline "
                  f"ImageNet weights, head only, no augmentation, {args.epochs} epochs per trial, Bayesian (TPE) search "
                  f"over lr 0.001-0.1 (log) and batch size 32-512, median early stopping, {args.parallel} trial(s) at a time, "
                  "seed 0."],
    })
    print(f"speed-up {speedup:.1f}x, best valid_acc gap {100 * gap:.1f} points; wrote {report.REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
