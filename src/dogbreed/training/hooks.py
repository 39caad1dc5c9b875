"""Training hooks: the smdebug hook (Debugger) and the profiler (system use, step split, torch trace).

``hooks_from_environment`` is the factory the training program calls with the model, its losses and the run
configuration; each hook gets ``set_mode``, ``begin_step`` (a batch arrived), ``end_step`` (the optimizer
stepped), ``record_eval``, ``end_epoch`` (the epoch's record; True asks for no more epochs) and ``close``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from ..env import DOGBREED_DEBUG_COLLECTIONS

log = logging.getLogger(__name__)

DEBUG_CONFIG_NAME = "debughookconfig.json"
DEFAULT_COLLECTIONS = ("losses", "weights", "gradients", "biases")
TRIAL_FOLDER = "debug"  # beside the job's checkpoints (no Debugger service)
RESTART_SUFFIX = "-restart-"  # debug-restart-1/: the trial of a restarted spot job's next run


class Hook:
    def set_mode(self, mode: str) -> None: ...
    def begin_step(self) -> None: ...
    def end_step(self, loss: float) -> None: ...
    def record_eval(self, loss: float) -> None: ...
    def end_epoch(self, record: dict) -> bool:
        return False
    def close(self) -> None: ...


class DebugHook(Hook):
    """smdebug: registers the model and the losses, saves the configured collections."""

    def __init__(self, hook, model, criteria):
        import smdebug.pytorch as smd

        self.smd, self.hook = smd, hook
        hook.register_module(model)
        for criterion in criteria:
            hook.register_loss(criterion)

    def set_mode(self, mode: str) -> None:
        self.hook.set_mode(self.smd.modes.TRAIN if mode == "train" else self.smd.modes.EVAL)

    def close(self) -> None:
        self.hook.close()


def parse_collections(spec: str) -> dict[str, str]:
    """``losses=10,weights=100``: each collection and its save interval in steps."""
    collections = {}
    for part in (p.strip() for p in spec.split(",")):
        if part:
            name, _, every = part.partition("=")
            collections[name.strip()] = str(int(every)) if every.strip() else "10"
    return collections


def trial_config(out_dir: Path, collections: dict[str, str]) -> dict:
    """The hook configuration SageMaker's DebugHookConfig becomes (debughookconfig.json), for a trial in
    ``out_dir``: the same file format, so both ways build the hook alike."""
    return {"LocalPath": str(out_dir), "HookParameters": {},
            "CollectionConfigurations": [{"CollectionName": name, "CollectionParameters": {"save_interval": every}}
                                         for name, every in collections.items()]}


def trial_dir(checkpoints: Path) -> Path:
    """``debug/`` beside the checkpoints, or, when it is already there, the next free ``debug-restart-N/``.

    A spot job that SageMaker restarts keeps its name and gets its checkpoint prefix back, ``debug/`` included:
    smdebug refuses a trial folder that holds a finished trial (the first run closed its hook on SIGTERM) and
    writes nothing into one that still holds another hook's claim. Each run of the job gets its own trial;
    ``dogbreed debug report JOB`` reads the newest (``job_outputs.trial_prefixes``)."""
    out_dir = Path(checkpoints) / TRIAL_FOLDER
    restart = 0
    while out_dir.exists():
        restart += 1
        out_dir = Path(checkpoints) / f"{TRIAL_FOLDER}{RESTART_SUFFIX}{restart}"
    return out_dir


def _hook_beside_checkpoints(smd, checkpoints: Path):
    """Without the Debugger service: the launcher's DOGBREED_DEBUG_COLLECTIONS asks for a trial in ``debug/``
    beside the job's checkpoints, which SageMaker syncs to the job's checkpoint S3 prefix while it runs."""
    spec = os.environ.get(DOGBREED_DEBUG_COLLECTIONS)
    if not spec:
        return None
    out_dir = trial_dir(Path(checkpoints))
    config = Path(tempfile.mkdtemp(prefix="dogbreed-debug-")) / DEBUG_CONFIG_NAME
    config.write_text(json.dumps(trial_config(out_dir, parse_collections(spec))))
    log.info("smdebug hook writing %s beside the checkpoints: %s", spec, out_dir)
    return smd.Hook.create_from_json_file(str(config))


def make_debug_hook(model, criteria, config, base: Path):
    """From SageMaker's debughookconfig.json when present (the Debugger service), else from --debug-out (local
    runs), else beside the checkpoints when the launcher asked for it (DOGBREED_DEBUG_COLLECTIONS).
    ``config``: the run's configuration (:class:`.config.RunConfig`); ``base``: SageMaker's /opt/ml."""
    service_config = base / "input" / "config" / DEBUG_CONFIG_NAME
    try:
        import smdebug.pytorch as smd
    except ImportError:
        log.warning("smdebug is not installed: no Debugger data")
        return None
    if service_config.is_file():
        hook = smd.Hook.create_from_json_file(str(service_config))
        log.info("smdebug hook from %s", service_config)
    elif config.debug_out:
        collections = [c.strip() for c in str(config.debug_collections).split(",") if c.strip()]
        hook = smd.Hook(out_dir=str(config.debug_out), save_config=smd.SaveConfig(save_interval=int(config.debug_interval)),
                        include_collections=collections)
        log.info("smdebug hook writing %s every %s steps to %s", ",".join(collections), config.debug_interval,
                 config.debug_out)
    else:
        hook = _hook_beside_checkpoints(smd, config.checkpoint_dir)
        if hook is None:
            return None
    return DebugHook(hook, model, criteria)


class SystemMonitor(threading.Thread):
    """Samples CPU, memory and (on CUDA) GPU use every ``interval`` seconds."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval, self.samples, self._halt = interval, [], threading.Event()

    def run(self) -> None:
        import psutil

        process = psutil.Process()
        psutil.cpu_percent(None)
        start = time.time()
        while not self._halt.wait(self.interval):
            sample = {"t": round(time.time() - start, 3), "cpu_percent": psutil.cpu_percent(None),
                      "memory_percent": psutil.virtual_memory().percent,
                      "rss_mb": round(sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]
                                          if p.is_running()) / 2**20, 1)}
            try:
                import torch

                if torch.cuda.is_available():
                    sample["gpu_percent"] = torch.cuda.utilization()
                    sample["gpu_memory_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
            except Exception:  # a GPU query that fails is left out of the sample
                log.debug("GPU sample failed", exc_info=True)
            self.samples.append(sample)

    def stop(self) -> list[dict]:
        self._halt.set()
        self.join(timeout=5)
        return self.samples


class ProfileHook(Hook):
    """Per-step split into data loading and compute, system use, and a torch.profiler trace of a few steps."""

    def __init__(self, out_dir: Path, trace_steps: int = 3, skip_steps: int = 2):
        import torch

        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.monitor = SystemMonitor()
        self.monitor.start()
        self.steps: list[dict] = []
        self.mode, self.epoch_step = "train", 0
        self.last_end = time.perf_counter()
        self.begin = None
        self.start_time = time.perf_counter()
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.trace_steps = trace_steps
        self.profiler = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=skip_steps, warmup=1, active=trace_steps, repeat=1),
            on_trace_ready=self._trace_ready,
            record_shapes=False,
        )
        self.profiler.start()
        self.profiling = True

    def _trace_ready(self, profiler) -> None:
        profiler.export_chrome_trace(str(self.out / "trace.json"))
        rows = []
        for event in sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:25]:
            rows.append({"name": event.key, "calls": event.count,
                         "self_cpu_ms": event.self_cpu_time_total / 1e3 / self.trace_steps,
                         "cpu_total_ms": event.cpu_time_total / 1e3 / self.trace_steps})
        (self.out / "ops.json").write_text(json.dumps({"steps": self.trace_steps, "ops": rows}, indent=1))

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.last_end = time.perf_counter()

    def begin_step(self) -> None:
        self.begin = time.perf_counter()

    def end_step(self, loss) -> None:
        """``loss``: a number, or the step's loss tensor, kept as it is: reading it here would make the host
        wait for the device at every step. On a GPU, ``compute_s`` is therefore the host's share of a step."""
        if self.begin is None:
            return
        end = time.perf_counter()
        self.steps.append({"t": round(self.begin - self.start_time, 4), "mode": self.mode,
                           "data_s": round(self.begin - self.last_end, 5), "compute_s": round(end - self.begin, 5),
                           "loss": loss})
        self.last_end = end
        self.begin = None
        if self.profiling and self.mode == "train":
            self.profiler.step()

    def close(self) -> None:
        if self.profiling:
            self.profiling = False
            try:
                self.profiler.stop()
            except Exception:  # a schedule that never reached its active steps has nothing to stop
                log.debug("profiler stop", exc_info=True)
        samples = self.monitor.stop()
        with open(self.out / "system.jsonl", "w") as handle:
            for sample in samples:
                handle.write(json.dumps(sample) + "\n")
        with open(self.out / "steps.jsonl", "w") as handle:
            for step in self.steps:  # the losses are read once, here
                handle.write(json.dumps({**step, "loss": round(float(step["loss"]), 5)}) + "\n")
        (self.out / "summary.json").write_text(
            json.dumps({"cpus": os.cpu_count(), "wall_s": time.perf_counter() - self.start_time}))


def hooks_from_environment(model, criteria, config) -> list[Hook]:
    """The main rank's hooks: the Debugger's where asked for, the profiler's unless ``--profile false``."""
    hooks: list[Hook] = []
    if not config.is_main:
        return hooks
    debug = make_debug_hook(model, criteria, config, config.smenv.base)
    if debug:
        hooks.append(debug)
    if config.profile:
        hooks.append(ProfileHook(Path(config.output_data_dir) / "profile"))
    return hooks
