"""torch.distributed set-up from SageMaker's description of the cluster.

SM_HOSTS / SM_CURRENT_HOST / SM_NUM_GPUS give the hosts and GPUs; one process per GPU (one per
host on CPUs). A launcher that already set RANK / WORLD_SIZE (torchrun) wins. NCCL on GPUs, gloo
on CPUs, both on SM_NETWORK_INTERFACE_NAME. Global rank 0 alone writes checkpoints and artifacts.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from . import env as envnames
from .accel import PRECISIONS
from .errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Global rank 0: the one process that logs the metrics and writes checkpoints and artifacts. Every host
        syncs its checkpoint folder to the job's one S3 prefix, so a writer per host (local rank 0) would race."""
        return self.rank == 0


def plan(hosts: list[str], current_host: str, num_gpus: int, local_rank: int = 0) -> DistInfo:
    """Where this process sits in the job: rank = host index x processes per host + local rank."""
    environ = os.environ
    port = int(environ.get(envnames.MASTER_PORT, DEFAULT_PORT))
    if envnames.RANK in environ and envnames.WORLD_SIZE in environ:
        return DistInfo(
            rank=int(environ[envnames.RANK]),
            world_size=int(environ[envnames.WORLD_SIZE]),
            local_rank=int(environ.get(envnames.LOCAL_RANK, local_rank)),
            master_addr=environ.get(envnames.MASTER_ADDR, "127.0.0.1"),
            master_port=port,
        )
    hosts = sorted(hosts)
    if current_host not in hosts:
        raise ConfigError(f"current host {current_host!r} is not among the hosts {hosts}")
    per_host = max(1, num_gpus)
    return DistInfo(
        rank=hosts.index(current_host) * per_host + local_rank,
        world_size=len(hosts) * per_host,
        local_rank=local_rank,
        master_addr=environ.get(envnames.MASTER_ADDR, hosts[0]),
        master_port=port,
    )


def host_interfaces() -> set[str]:
    import socket

    return {name for _, name in socket.if_nameindex()}


def socket_env(environ, interfaces: set[str] | None = None) -> dict[str, str]:
    """The socket interface of NCCL and gloo: SageMaker's SM_NETWORK_INTERFACE_NAME, unless the user chose one.
    Left to themselves they may pick an interface the other hosts cannot reach (docker0, a VPC endpoint's). An
    interface this host lacks is left out: the SDK's local mode names ``ethwe`` (SageMaker's old overlay network)
    in containers that have only eth0, and gloo refuses to start on a missing interface."""
    interface = environ.get(envnames.SM_NETWORK_INTERFACE_NAME)
    if not interface:
        return {}
    if interface not in (host_interfaces() if interfaces is None else interfaces):
        log.warning("%s=%s: no such interface here; NCCL and gloo choose their own",
                    envnames.SM_NETWORK_INTERFACE_NAME, interface)
        return {}
    names = (envnames.NCCL_SOCKET_IFNAME, envnames.GLOO_SOCKET_IFNAME)
    return {name: interface for name in names if not environ.get(name)}


def init(info: DistInfo, use_cuda: bool, timeout_s: int = 600) -> None:
    if not info.enabled or dist.is_initialized():
        return
    os.environ.update(socket_env(os.environ))  # read by NCCL and gloo when the process group starts
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo",
        init_method=f"tcp://{info.master_addr}:{info.master_port}",
        rank=info.rank,
        world_size=info.world_size,
        timeout=timedelta(seconds=timeout_s),
    )


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_enabled() -> bool:
    return dist.is_initialized()


def all_reduce_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over every process, in place (identity when not distributed)."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def gather_union(indices) -> set[int]:
    """The union of every process's indices (one collective per call; the lists are short)."""
    if not dist.is_initialized():
        return set(indices)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(indices))
    return {index for part in gathered for index in part}


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over every process (identity when not distributed)."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_rank_zero(values: list[float], device: torch.device) -> list[float]:
    """Rank 0's numbers on every rank (identity when not distributed): decisions made from them, such as which
    epoch beats the best so far, must come out the same everywhere, or the ranks part ways and hang."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True everywhere if any process says True (e.g. one got SIGTERM)."""
    if not dist.is_initialized():
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, as DDP's own forward would copy them:
    each rank's last training step updated its copy from its own batch, and the checkpoints must not differ."""
    if not dist.is_initialized():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def same_choice_everywhere(acc):
    """Every process takes rank 0's precision and memory format (each measured its own CPU)."""
    if not dist.is_initialized():
        return acc
    choice = torch.tensor([PRECISIONS.index(acc.precision), int(acc.channels_last)], device=acc.device)
    dist.broadcast(choice, src=0)
    precision, channels_last = PRECISIONS[int(choice[0])], bool(choice[1])
    if (precision, channels_last) == (acc.precision, acc.channels_last):
        return acc
    return replace(acc, precision=precision, channels_last=channels_last, reason=f"rank 0's choice (here: {acc.reason})")


STOP_GRACE_S = 10.0  # a survivor stuck in a collective never reaches its SIGTERM check: killed after this


@dataclass(frozen=True)
class Exits:
    """The spawned processes' exit codes, by local rank, and the first one that failed (None: none did)."""

    codes: list[int]
    first_failed: int | None = None


def spawn_forwarding_sigterm(fn, args: tuple, nprocs: int) -> Exits:
    """Run ``fn(rank, *args)`` in ``nprocs`` spawned processes and return their exits.

    SageMaker stops a job (spot interruption, StopTrainingJob) with SIGTERM to the process it started,
    not to its children: the parent passes it on to every child, so that each one stops at a step
    boundary with its last clean checkpoint in place, instead of being killed mid-write.

    A process that fails on its own ends the job: the others would wait in their next collective until
    the NCCL/gloo timeout (a hung, billed job), so they get SIGTERM, then SIGKILL after ``STOP_GRACE_S``."""
    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    processes = context.processes
    forwarded = []

    def forward(signum, frame):
        forwarded.append(signum)
        _signal_alive(processes, signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        first_failed = _wait_for_all_or_a_failure(processes, forwarded)
        if first_failed is not None and not forwarded:
            log.error("rank %d exited with code %s: stopping the other processes", first_failed,
                      processes[first_failed].exitcode)
            _stop(processes)
        for process in processes:
            process.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return Exits([process.exitcode for process in processes], first_failed)


def _signal_alive(processes, signum) -> None:
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signum)


def _wait_for_all_or_a_failure(processes, forwarded: list) -> int | None:
    """The local rank of the first process to exit non-zero, or None once every process exited cleanly. After a
    forwarded SIGTERM every process is stopping on its own: wait for them all (their 143s are the outcome)."""
    from multiprocessing.connection import wait

    running = {process.sentinel: rank for rank, process in enumerate(processes)}
    first_failed = None
    while running:
        for sentinel in wait(list(running)):
            rank = running.pop(sentinel)
            processes[rank].join()
            if processes[rank].exitcode != 0 and first_failed is None:
                first_failed = rank
        if first_failed is not None and not forwarded:
            return first_failed
    return first_failed


def _stop(processes) -> None:
    _signal_alive(processes, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    _signal_alive(processes, signal.SIGKILL)
