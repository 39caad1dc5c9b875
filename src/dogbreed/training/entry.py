"""The process entry: ``main`` (torchvision's name) trains one model in this process; :func:`run` is the edge
where every failure becomes a line in the failure file and an exit code; :func:`launch` starts one process per
GPU where a host has several (DDP).

SageMaker's environment is read once per process (``SageMakerEnv.from_environ``) and passed down.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import torch

from .. import accel, checkpoint, distributed, errors
from .. import env as envnames
from ..common import configure_logging
from ..env import SageMakerEnv
from ..errors import DogbreedError
from . import config as configuration
from .args import parse_args
from .artifacts import finish
from .errors import Interrupted, TrainingError
from .hooks import hooks_from_environment
from .recipe import HOOK, ensemble_weights, fit, fit_probe, initial_state
from .resume import resume
from .setup import Run, choose_model_and_precision, load_data, make_loaders, make_trainer, seed_everything

log = logging.getLogger("dogbreed.train")


def main(args: argparse.Namespace, local_rank: int = 0, hooks_factory=None, smenv: SageMakerEnv | None = None) -> dict:
    """Train one model as ``args`` say.

    ``args``: the namespace of :func:`.args.parse_args` (paths left unset default to SageMaker's ``SM_*``);
    ``local_rank``: this process's GPU on its host (one process per GPU); ``hooks_factory``: makes the training
    hooks, ``(model, criteria, config) -> [hooks]``, or None for none; ``smenv``: SageMaker's environment, read
    here where not given. Returns the summary also written to metrics.json; raises a DogbreedError the user can
    act on."""
    smenv = smenv or SageMakerEnv.from_environ()
    use_cuda = accel.cuda_for_training(smenv.num_gpus)  # GPUs expected and CUDA broken: a GpuError, no CPU run
    dist_info = distributed.plan(smenv.hosts, smenv.current_host, smenv.num_gpus if use_cuda else 0, local_rank)
    config = configuration.build(args, smenv, dist_info, use_cuda)
    distributed.init(dist_info, use_cuda)
    try:
        with errors.naming_a_batch_that_fits(config.batch_size):  # CUDA out of memory: a batch size that fits
            return _train(config, hooks_factory)
    finally:
        distributed.shutdown()


def _set_threads(config: configuration.RunConfig) -> None:
    if not config.use_cuda:
        per_process = config.smenv.num_cpus // configuration.procs_per_host(config.smenv, config.use_cuda)
        accel.set_threads(int(os.environ.get(envnames.DOGBREED_THREADS) or max(1, per_process)))


def _build_run(config: configuration.RunConfig, hooks_factory, stop) -> Run:
    """The data, the model, the probe, the loaders and the optimizer, in that order."""
    inputs = load_data(config)
    chosen = choose_model_and_precision(config, inputs)
    probe_record = fit_probe(config, inputs, chosen)
    if distributed.broadcast_flag(stop.requested, chosen.acc.device):  # every rank, or one waits for the others
        raise Interrupted("stopped by SIGTERM before the first epoch (during the set-up or the linear probe); no "
                          "epoch had finished: a restart of this job starts again")
    feed = make_loaders(config, inputs, chosen)
    trainer = make_trainer(config, inputs, feed, chosen.lp_ft)
    eval_criterion = torch.nn.CrossEntropyLoss()
    hooks = hooks_factory(feed.model, [trainer.criterion, eval_criterion], config) if hooks_factory else []
    return Run(config, inputs, chosen, feed.loaders, feed.train_sampler, trainer, eval_criterion, tuple(hooks),
               probe_record)


def _train(config: configuration.RunConfig, hooks_factory) -> dict:
    _set_threads(config)
    seed_everything(config.seed)
    # Installed before the set-up: a SIGTERM during the precision probe or the linear probe's feature pass is a
    # clean stop (exit 143, a reason in the failure file) once that pass is over, not a death by the signal.
    stop = checkpoint.TerminationFlag().install()
    try:
        run = _build_run(config, hooks_factory, stop)
        state = initial_state(run)
        resume(run, state)
        if fit(run, state, stop) == HOOK:  # abandoned (a pruned tuning trial): no test split, no model
            return {"stopped_by_hook": True, "epochs_run": len(state.history), "history": state.history}
        ensemble_weights(run, state, stop)
        return finish(run, state)
    finally:
        stop.uninstall()


def write_failure(reason: str, path: Path) -> Path | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(reason.rstrip() + "\n")
        return path
    except OSError:
        return None


def _worker(local_rank: int, argv: list[str], world: dict[str, str], reasons: str) -> None:
    """One spawned process of a host's ``nprocs``: placed by torchrun's variables (``world`` and its own rank), so
    :func:`distributed.plan` reads one contract; its failure's reason goes to ``reasons``/rank-N for the parent."""
    configure_logging(force=True)
    rank = int(world[envnames.RANK]) + local_rank
    os.environ.update(world, **{envnames.RANK: str(rank), envnames.LOCAL_RANK: str(local_rank)})
    smenv = SageMakerEnv.from_environ()  # this process's own read
    try:
        main(parse_args(argv), local_rank=local_rank, hooks_factory=hooks_from_environment, smenv=smenv)
    except BaseException as exc:  # this process's edge: the parent words the job's failure from this line
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else errors.describe(exc)
        if not isinstance(exc, (DogbreedError, KeyboardInterrupt)):
            log.exception("rank %d failed", rank)
        write_failure(f"rank {rank}: {reason}", Path(reasons) / f"rank-{local_rank}")
        log.error("rank %d: %s", rank, reason)
        sys.exit(143 if isinstance(exc, Interrupted) else 1)


def spawn_ranks(argv: list[str], smenv: SageMakerEnv, nprocs: int) -> None:
    """Train in ``nprocs`` spawned processes on this host (one per GPU). The first to fail ends the job (the others
    are stopped, not left waiting in a collective) and its reason is the job's."""
    first = distributed.plan(smenv.hosts, smenv.current_host, nprocs)
    world = {envnames.RANK: str(first.rank), envnames.WORLD_SIZE: str(first.world_size),
             envnames.MASTER_ADDR: first.master_addr, envnames.MASTER_PORT: str(first.master_port)}
    with tempfile.TemporaryDirectory(prefix="dogbreed-ranks-") as reasons:
        exits = distributed.spawn_forwarding_sigterm(_worker, (list(argv), world, reasons), nprocs)
        if exits.first_failed is None:
            return
        written = Path(reasons, f"rank-{exits.first_failed}")
        code = exits.codes[exits.first_failed]
        reason = written.read_text().strip() if written.is_file() else \
            f"rank {first.rank + exits.first_failed} exited with code {code} and no reason (killed?)"
    raise (Interrupted if code == 143 else TrainingError)(reason)


def launch(argv: list[str], smenv: SageMakerEnv, nprocs: int | None = None) -> None:
    """Parse, then train in this process, or in ``nprocs`` processes (default: one per GPU where a host has
    several, unless a launcher such as torchrun already started one per GPU)."""
    args = parse_args(argv)
    if nprocs is None:
        several = torch.cuda.is_available() and smenv.num_gpus > 1 and envnames.RANK not in os.environ
        nprocs = smenv.num_gpus if several else 1
    if nprocs > 1:
        spawn_ranks(argv, smenv, nprocs)
        return
    main(args, hooks_factory=hooks_from_environment, smenv=smenv)


def run(argv: list[str] | None = None, nprocs: int | None = None) -> tuple[int, str]:
    """Train (``nprocs``: as :func:`launch`); returns (exit code, reason). A failure's reason is written to the
    failure file."""
    configure_logging(force=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    smenv = SageMakerEnv.from_environ()
    try:
        launch(argv, smenv, nprocs)
        return 0, ""
    except BaseException as exc:  # the edge: every failure becomes a readable reason and an exit code
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            return 0, ""
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else errors.describe(exc)
        if not isinstance(exc, (DogbreedError, KeyboardInterrupt)):
            log.exception("training failed")
        path = write_failure(reason, smenv.failure_file)
        log.error("training failed: %s%s", reason, f" (written to {path})" if path else "")
        return (143 if isinstance(exc, Interrupted) else 1), reason


def cli() -> None:
    code, _ = run()
    sys.exit(code)
