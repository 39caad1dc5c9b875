"""Loader workers started while the training process runs threads (issue 21's hang).

The training process runs threads while it starts loader workers: the profiler's SystemMonitor, gloo/NCCL, the
queue feeders of earlier loaders. A worker made by fork() inherits every lock as it was at that instant, owned by
threads that do not exist in the child: a lock some thread held then is held forever there. Here a monitor samples
fast and holds its lock while it samples, a lock the dataset also takes (standing for any lock a library shares
between the two); many loaders start workers meanwhile. With fork, a worker almost surely starts with the lock held
and never delivers a batch; the loader's timeout turns that hang into a failure.
"""

import threading

import pytest
import torch
from torch.utils.data import Dataset

from dogbreed import data

pytestmark = pytest.mark.slow

SAMPLING = threading.Lock()  # the monitor's, taken by the workers too
LOADERS, WORKERS = 6, 2
BATCH_TIMEOUT_S = 60  # a guard against a hang, far above a worker's start (seconds under load), not a measurement


class Locked(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, item):
        index = item[0] if isinstance(item, tuple) else item
        with SAMPLING:
            return torch.full((3, 4, 4), index, dtype=torch.uint8), index % 2, index


class Monitor(threading.Thread):
    """Samples as fast as it can, holding the lock while it samples (as a system monitor holds its own)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.halt, self.samples = threading.Event(), 0

    def run(self):
        while not self.halt.is_set():
            with SAMPLING:
                self.samples += sum(range(2000))  # the sample's work, done holding the lock


def test_loader_workers_start_safely_while_a_monitor_thread_holds_its_lock():
    monitor = Monitor()
    monitor.start()
    loaders = []
    try:
        for _ in range(LOADERS):
            loader = data.make_loader(Locked(), 4, data.ShardSampler(8), num_workers=WORKERS)
            loader.timeout = BATCH_TIMEOUT_S  # a stuck worker: RuntimeError("DataLoader timed out"), not a hang
            loaders.append(loader)
            labels = [labels for _, labels, _ in loader]
            assert torch.cat(labels).tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    finally:
        monitor.halt.set()
        monitor.join()
    assert monitor.samples > 0


def test_loader_workers_are_not_forked_from_the_training_process():
    loader = data.make_loader(Locked(), 4, data.ShardSampler(8), num_workers=1)
    assert loader.multiprocessing_context.get_start_method() in ("forkserver", "spawn")
