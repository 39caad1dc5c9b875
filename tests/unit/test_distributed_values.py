"""Numbers every rank must agree on come from rank 0 (two real gloo processes on loopback)."""

from __future__ import annotations

import json

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dogbreed import distributed
from tests.conftest import free_port


def _rank(rank: int, port: int, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        out[rank] = distributed.from_rank_zero([0.25 + rank, 0.9 - rank / 10], torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def test_every_rank_gets_rank_zeros_numbers():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(free_port(), out), nprocs=2, join=True)
        assert out[0] == out[1] == [0.25, 0.9]


def test_without_processes_the_numbers_are_their_own():
    assert distributed.from_rank_zero([1.5, 2.0], torch.device("cpu")) == [1.5, 2.0]


def _host(index: int, hosts: list[str], port: int, checkpoints, out) -> None:
    """One host of a two-host CPU job, as SageMaker starts it: its own SM_CURRENT_HOST, local rank 0."""
    import os

    from dogbreed import checkpoint

    os.environ.update({"SM_HOSTS": json.dumps(hosts), "SM_CURRENT_HOST": hosts[index], "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port), "SM_NETWORK_INTERFACE_NAME": "lo"})
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
        os.environ.pop(name, None)
    info = distributed.plan(hosts, hosts[index], num_gpus=0)
    distributed.init(info, use_cuda=False)
    try:
        if info.is_main:
            checkpoint.save(checkpoints / hosts[index], 1, {"epoch": 1, "model": {}})
        distributed.barrier()
        out[index] = (info.rank, info.local_rank, os.environ["GLOO_SOCKET_IFNAME"], os.environ["NCCL_SOCKET_IFNAME"])
    finally:
        distributed.shutdown()


def test_two_hosts_each_local_rank_zero_and_only_global_rank_zero_writes(tmp_path):
    hosts = ["algo-2", "algo-1"]  # ranks follow the sorted names, not SM_HOSTS' order
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_host, args=(hosts, free_port(), tmp_path, out), nprocs=2, join=True)
        assert dict(out) == {0: (1, 0, "lo", "lo"), 1: (0, 0, "lo", "lo")}  # two hosts, each a local rank 0
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.pth"))
    assert written == ["algo-1/checkpoint-0001.pth"]  # the global rank 0's host alone


def test_the_socket_interface_comes_from_sagemaker_unless_the_user_chose_one():
    here = {"lo", "eth0"}
    assert distributed.socket_env({"SM_NETWORK_INTERFACE_NAME": "eth0"}, here) == {"NCCL_SOCKET_IFNAME": "eth0",
                                                                                   "GLOO_SOCKET_IFNAME": "eth0"}
    chosen = {"SM_NETWORK_INTERFACE_NAME": "eth0", "NCCL_SOCKET_IFNAME": "ens5"}
    assert distributed.socket_env(chosen, here) == {"GLOO_SOCKET_IFNAME": "eth0"}
    assert distributed.socket_env({}, here) == {}
    # the SDK's local mode names SageMaker's old overlay interface, which its containers lack
    assert distributed.socket_env({"SM_NETWORK_INTERFACE_NAME": "ethwe"}, here) == {}
    assert "lo" in distributed.host_interfaces()


def test_only_the_global_rank_zero_makes_the_smdebug_trial(tmp_path, monkeypatch):
    """Every host syncs its checkpoint folder (where the trial goes) to the job's one S3 prefix: the second host's
    local rank 0 must write none."""
    from dataclasses import replace

    from dogbreed.training.hooks import DebugHook, hooks_from_environment
    from tests.unit.test_recipe import config_of

    monkeypatch.setenv("DOGBREED_DEBUG_COLLECTIONS", "losses=1")
    config = config_of(["--pretrained-weights", "none", "--profile", "false", "--checkpoint-dir", str(tmp_path / "c")],
                       tmp_path)
    model, criteria = torch.nn.Linear(2, 2), [torch.nn.CrossEntropyLoss()]
    second_host = replace(config, dist=distributed.DistInfo(rank=1, world_size=2, local_rank=0))
    assert hooks_from_environment(model, criteria, second_host) == []
    first_host = replace(config, dist=distributed.DistInfo(rank=0, world_size=2, local_rank=0))
    assert [type(hook) for hook in hooks_from_environment(model, criteria, first_host)] == [DebugHook]
