"""``dogbreed tune --local``: hyperparameter tuning on this machine, with the same training entry.

Trials run the training image (``docker run IMAGE train``) where docker and the image are present,
else the same entry locally (``local-train``); the objective is read from each such trial's log with the
same metric regexes SageMaker uses. Cached head-only trials run :func:`dogbreed.training.entry.main` in this
process: its summary gives the objective, and a training hook sees every epoch. Search: Bayesian (optuna's
TPE) or random, over the same ranges as the SageMaker tuner; parallel trials bounded by the cores; hopeless
trials are stopped early (median rule on the per-epoch objective). Output: a leaderboard, a plot, and
``best_hyperparameters.json`` for ``dogbreed train --from-tuning FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import metrics
from ..common import LOG_FORMAT, format_table, hyperparameter_flags, str2bool
from ..env import DOGBREED_THREADS
from ..errors import describe
from ..local import channels_for, entry_command, flags_to_hyperparameters, layout, train_env
from ..training.hooks import Hook

log = logging.getLogger(__name__)


def suggest(trial, ranges: dict) -> dict:
    values = {}
    for name, spec in ranges.items():
        if "values" in spec:
            values[name] = trial.suggest_categorical(name, list(spec["values"]))
        elif isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int):
            values[name] = trial.suggest_int(name, spec["min"], spec["max"], log=spec.get("scaling") == "Logarithmic")
        else:
            values[name] = trial.suggest_float(name, float(spec["min"]), float(spec["max"]),
                                               log=spec.get("scaling") == "Logarithmic")
    return values


def docker_image_ready(image: str) -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# What a trial reports: the objectives (metrics.OBJECTIVES) of the model it kept.
REPORTED = tuple(metrics.OBJECTIVES)


@dataclass(frozen=True)
class TrialResult:
    code: int  # the training program's exit code
    stopped: bool  # stopped early by the pruner
    values: dict = field(default_factory=dict)  # objective -> the kept model's value (None: not reported)
    epochs: int = 0  # epoch lines (the probe's epoch 0 included)


def _epoch_values(line: str) -> dict:
    return {name: metrics.last(line, name) for name in REPORTED}


class TrialRunner:
    """Runs one trial of the training entry and streams its metric lines."""

    def __init__(self, data: Path, work: Path, image: str | None, threads: int):
        self.data, self.work, self.image, self.threads = Path(data).resolve(), Path(work), image, threads

    @property
    def kind(self) -> str:
        return "docker" if self.image else "local"

    def fresh_trial_dir(self, number: int) -> Path:
        trial_dir = self.work / f"trial-{number:03d}"
        if trial_dir.exists():
            shutil.rmtree(trial_dir)
        return trial_dir

    def command(self, number: int, hyperparameters: dict) -> tuple[list[str], dict, Path]:
        trial_dir = self.fresh_trial_dir(number)
        if self.image:
            base = layout(trial_dir, {}, hyperparameters)
            command = ["docker", "run", "--rm", f"--cpus={self.threads}", "-e", f"{DOGBREED_THREADS}={self.threads}",
                       "-v", f"{base}:/opt/ml"]
            for name, path in channels_for(self.data).items():
                command += ["-v", f"{path}:/opt/ml/input/data/{name}:ro"]
            # a feature cache shared by the trials, mounted at the same path inside
            cache = hyperparameters.get("feature-cache")
            if cache:
                command += ["-v", f"{cache}:{cache}"]
            return command + [self.image, "train"], dict(os.environ), trial_dir
        base = layout(trial_dir, channels_for(self.data), hyperparameters)
        return entry_command(), train_env(base, {DOGBREED_THREADS: str(self.threads),
                                                 "OMP_NUM_THREADS": str(self.threads)}), trial_dir

    def run(self, number: int, hyperparameters: dict, on_epoch) -> TrialResult:
        """Runs the trial's process; ``on_epoch(epoch, values)`` returns True to stop the trial. The values are read
        from its log with SageMaker's metric regexes, the kept model's last."""
        command, env, trial_dir = self.command(number, hyperparameters)
        trial_dir.mkdir(parents=True, exist_ok=True)
        log_path = trial_dir / "trial.log"
        lines: list[str] = []
        stopped = False
        with open(log_path, "w") as handle:
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       start_new_session=True)
            for line in process.stdout:
                handle.write(line)
                lines.append(line)
                if line.startswith("epoch="):
                    epoch = metrics.last(line, "epoch")
                    if not stopped and on_epoch(int(epoch), _epoch_values(line)):
                        stopped = True
                        try:
                            os.killpg(process.pid, signal.SIGTERM)
                        except ProcessLookupError:
                            pass
            code = process.wait()
        text = "".join(lines)
        return TrialResult(code, stopped, _epoch_values(text), len(metrics.parse(text, "epoch")))


class PrunerHook(Hook):
    """A training hook that shows each epoch's record to the pruner, and asks training to stop when it says so."""

    def __init__(self, on_epoch):
        self.on_epoch, self.epochs, self.stopped = on_epoch, 0, False

    def end_epoch(self, record: dict) -> bool:
        self.epochs += 1
        if not self.stopped and self.on_epoch(record["epoch"], record):
            self.stopped = True
        return self.stopped


def kept_values(summary: dict) -> dict:
    """The objectives of the model a finished run kept, from its summary (what metrics.json holds)."""
    recipe, history = summary.get("recipe") or {}, summary.get("history") or []
    valid_acc = None
    if recipe.get("mix_alpha") is not None:
        valid_acc = next(m["valid_acc"] for m in recipe["mixes"] if m["alpha"] == recipe["mix_alpha"])
    elif summary.get("best_epoch"):
        valid_acc = next(h["valid_acc"] for h in history if h["epoch"] == summary["best_epoch"])
    elif recipe.get("probe"):
        valid_acc = recipe["probe"]["valid_acc"]
    return {"valid_loss": summary.get("best_valid_loss"), "valid_acc": valid_acc, "test_acc": summary.get("test_acc"),
            "test_loss": summary.get("test_loss")}


class InProcessRunner(TrialRunner):
    """Runs cached head-only trials of the same training program (``dogbreed.training``) in this process.

    With the frozen features cached, a trial is a few seconds of Linear-head training; a new process
    per trial (interpreter, torch, the toolkit, the model) would cost more than the trial itself. Trials
    run one after another in the main thread, with explicit path flags instead of SM_* variables.
    """

    kind = "in-process"

    def run(self, number: int, hyperparameters: dict, on_epoch) -> TrialResult:
        from ..training import args, entry  # torch: only where trials run here

        trial_dir = self.fresh_trial_dir(number)
        trial_dir.mkdir(parents=True)
        argv = hyperparameter_flags(hyperparameters)
        argv += ["--data-dir", str(self.data), "--model-dir", str(trial_dir / "model"),
                 "--output-data-dir", str(trial_dir / "output"), "--checkpoint-dir", str(trial_dir / "checkpoints"),
                 "--progress", "none"]
        pruner, code, summary = PrunerHook(on_epoch), 0, {}
        with open(trial_dir / "trial.log", "w", buffering=1) as handle:
            file_log = logging.StreamHandler(handle)
            file_log.setFormatter(logging.Formatter(LOG_FORMAT))
            package = logging.getLogger("dogbreed")  # the trial's log gets what a training process logs
            saved = package.level, package.propagate
            package.setLevel(logging.INFO)
            package.propagate = False
            package.addHandler(file_log)
            try:
                with contextlib.redirect_stdout(handle):  # the metric lines into the trial's log, as a process's
                    summary = entry.main(args.parse_args(argv), hooks_factory=lambda *_: [pruner])
            except Exception as exc:  # a failed trial is a result of the search, not the end of it
                code = 1
                handle.write(f"training failed: {describe(exc)}\n")
            finally:
                package.removeHandler(file_log)
                package.setLevel(saved[0])
                package.propagate = saved[1]
        finished = summary and not summary.get("stopped_by_hook")
        return TrialResult(code, pruner.stopped, kept_values(summary) if finished else {}, pruner.epochs)


def tune(data: Path, work: Path, ranges: dict, fixed: dict, objective: str = "valid_loss", max_trials: int = 8,
         parallel: int = 2, strategy: str = "Bayesian", use_docker: str = "auto", image: str = "dogbreed-train:latest",
         feature_cache: str = "auto", seed: int = 0, in_process: str = "auto") -> dict:
    """Search ``ranges`` (SageMaker's range specs) with ``fixed`` hyperparameters on the data set in ``data``; the
    trials run under ``work`` (``in_process="no"``: a process per trial even where cached trials could run here).
    Returns the best hyperparameters, the leaderboard table and records, the saved
    ``best_hyperparameters.json``, the plot, the wall time and the runner's kind."""
    import optuna  # optional: only the local tuner needs it

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    fixed = dict(fixed)
    runner, parallel = _choose_runner(data, work, fixed, max_trials, parallel, use_docker, image, feature_cache, in_process)
    direction = "minimize" if metrics.OBJECTIVES[objective] == "Minimize" else "maximize"
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, max_trials)) if strategy.lower() == "bayesian" \
        else optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction=direction, sampler=sampler,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    started = time.perf_counter()
    records = _run_trials(study, runner, ranges, fixed, objective, max_trials, parallel)
    wall = time.perf_counter() - started
    complete = sorted((r for r in records if r["state"] == "complete"), key=lambda r: r[objective],
                      reverse=direction == "maximize")
    best = {k: complete[0][k] for k in ranges} if complete else {}
    ordered = complete + sorted((r for r in records if r["state"] != "complete"), key=lambda r: r["trial"])
    best_file = work / "best_hyperparameters.json"
    best_file.write_text(json.dumps({"objective": objective, "value": complete[0][objective] if complete else None,
                                     "hyperparameters": {k: str(v) for k, v in best.items()},
                                     "fixed": {k: str(v) for k, v in fixed.items()},
                                     "trials": ordered, "wall_s": wall, "runner": runner.kind}, indent=2))
    plot = plot_trials(records, objective, work / "tuning.png")
    table = format_table([{k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in r.items()} for r in ordered])
    return {"best": best, "best_file": best_file, "plot": plot, "table": table, "records": ordered, "wall_s": wall,
            "runner": runner.kind}


def _choose_runner(data: Path, work: Path, fixed: dict, max_trials: int, parallel: int, use_docker: str, image: str,
                   feature_cache: str, in_process: str = "auto") -> tuple[TrialRunner, int]:
    """The runner and the trials run at once: docker where the image is there, in this process for cached
    head-only trials, else a local process per trial; ``fixed`` gains the feature cache where one is used."""
    cores = os.cpu_count() or 1
    parallel = max(1, min(parallel, cores, max_trials))
    threads = max(1, cores // parallel)
    docker = use_docker == "yes" or (use_docker == "auto" and docker_image_ready(image))
    try:
        augment = str2bool(fixed.get("augment", "true"))
    except argparse.ArgumentTypeError:  # not a boolean: the trials fail with the training program's own message
        augment = True
    head_only = str(fixed.get("train-layers")) == "head" and not augment
    cached = feature_cache == "yes" or (feature_cache == "auto" and head_only)
    if cached:
        fixed["feature-cache"] = str(work / "feature-cache")
    if cached and head_only and not docker and in_process != "no":
        log.info("head-only trials on cached features: run in this process, one at a time")
        return InProcessRunner(data, work, None, cores), 1
    return TrialRunner(data, work, image if docker else None, threads), parallel


def _run_trials(study, runner: TrialRunner, ranges: dict, fixed: dict, objective: str, max_trials: int,
                parallel: int) -> list[dict]:
    """Ask the study for ``max_trials`` trials, ``parallel`` at a time; the pruner sees every epoch's objective."""
    import optuna  # optional: only the local tuner needs it

    lock = threading.Lock()
    records: list[dict] = []

    def one(_):
        with lock:
            trial = study.ask()
            tuned = suggest(trial, ranges)

        def on_epoch(epoch: int, values: dict) -> bool:
            value = values.get(objective)
            if value is None or math.isnan(value):
                return False
            with lock:
                trial.report(value, epoch)
                return trial.should_prune()

        start = time.perf_counter()
        flags = hyperparameter_flags({**fixed, **tuned})
        result = runner.run(trial.number, flags_to_hyperparameters(flags), on_epoch)
        value = result.values.get(objective)  # the kept model's: what SageMaker's tuner reads too
        with lock:
            if result.stopped:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                state = "stopped early"
            elif result.code != 0 or value is None or not math.isfinite(value):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                state = f"failed ({result.code})"
            else:
                study.tell(trial, value)
                state = "complete"
            records.append({"trial": trial.number, "state": state, objective: value,
                            "valid_acc": result.values.get("valid_acc"), **tuned,
                            "epochs": result.epochs, "seconds": round(time.perf_counter() - start, 1)})

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, range(max_trials)))
    return records


def plot_trials(records: list[dict], objective: str, path: Path) -> Path:
    import matplotlib  # optional and slow: only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for state, marker in (("complete", "o"), ("stopped early", "x")):
        points = [r for r in records if r["state"] == state and r.get(objective) is not None]
        if points and "lr" in points[0]:
            ax.scatter([r["lr"] for r in points], [r[objective] for r in points], marker=marker, label=state)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(objective)
    ax.set_title("local tuning trials")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
