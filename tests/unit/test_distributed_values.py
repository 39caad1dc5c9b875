"""Numbers every rank must agree on come from rank 0 (two real gloo processes on loopback)."""

from __future__ import annotations

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
