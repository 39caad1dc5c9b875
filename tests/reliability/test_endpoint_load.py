"""The endpoint under load, with each front (multi-model-server and native): 60 s at concurrency 8 with no errors,
5,000+ requests with flat memory; with multi-model-server, a worker killed mid-load is restarted and the requests
after it succeed (the native front has no workers: its one process is the container). Loopback only, bounded in time."""

from __future__ import annotations

import io
import os
import signal
import time

import psutil
import pytest
from PIL import Image

from tests.conftest import free_port
from tests.serving_helpers import FRONTS, Load, local_server

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((96, 96), 60).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def _tree_rss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def _workers(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if "model_service_worker" in " ".join(p.cmdline())]


def _serving_worker(pid: int) -> psutil.Process:
    """The process that answers requests: MMS's worker forks a child per frontend connection, so the
    leaf of the worker processes (the worker itself where it did not fork)."""
    workers = _workers(pid)
    pids = {p.pid for p in workers}
    leaves = [p for p in workers if p.ppid() in pids]
    return (leaves or workers)[0]


@pytest.mark.parametrize("front", FRONTS)
def test_sixty_seconds_at_concurrency_8_and_5000_requests_with_flat_memory(trained, tmp_path, record, front):
    port = free_port()
    with local_server(trained["archive"], port, tmp_path / "server.log", front=front) as (url, process):
        load = Load(port, _jpeg(), concurrency=8)
        memory = []
        threads = load.run(seconds=60, minimum=5000, hard_limit=240)
        while any(t.is_alive() for t in threads):
            time.sleep(2)
            with load.lock:
                memory.append((len(load.results), _tree_rss_mb(process.pid)))
        for thread in threads:
            thread.join()
    statuses = [status for _, _, status in load.results]
    latencies = sorted(latency for _, latency, status in load.results if status == 200)
    errors = sum(status != 200 for status in statuses)
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1e3
    duration = load.results[-1][0] - load.results[0][0]
    warm = [mb for count, mb in memory if count >= 1000]
    growth = (max(warm[-3:]) - min(warm[:3])) if len(warm) >= 6 else 0.0
    record("load", f"requests at concurrency 8 ({front})", len(statuses), len(statuses) >= 5000)
    record("load", f"seconds under load ({front})", round(duration, 1), duration >= 59)
    record("load", f"errors ({front})", errors, errors == 0)
    record("load", f"p99 latency ms ({front})", round(p99, 1))
    record("load", f"server memory growth MB (after 1,000 requests, {front})", round(growth, 1), growth < 100)
    assert len(statuses) >= 5000 and duration >= 59
    assert errors == 0
    assert len(warm) >= 6, memory
    assert growth < 100, f"memory grew {growth:.0f} MB under load: {memory}"  # flat: no per-request leak


def test_a_worker_killed_mid_load_is_restarted(trained, tmp_path, record):
    port = free_port()
    with local_server(trained["archive"], port, tmp_path / "server.log") as (url, process):
        victim = _serving_worker(process.pid)
        load = Load(port, _jpeg(), concurrency=4)
        threads = load.run(seconds=25, hard_limit=60)
        time.sleep(5)
        killed_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        for thread in threads:
            thread.join()
        after = _workers(process.pid)
    assert after and victim.pid not in [p.pid for p in after]  # a new worker took its place
    assert "Retry worker" in (tmp_path / "server.log").read_text()  # multi-model-server restarted it
    # Other workers keep answering, so "recovered" is not the first 200 after the kill: only the requests
    # in flight on the killed worker may fail (at most one per client thread), they fail within the
    # restart window, and every request after the last failure succeeds.
    after_kill = [(t, status) for t, _, status in load.results if t >= killed_at]
    failures = [t for t, status in after_kill if status != 200]
    settled_at = max(failures, default=killed_at)
    after_recovery = [status for t, status in after_kill if t > settled_at]
    record("faults", "worker SIGKILL: s until the last failed request", round(settled_at - killed_at, 1),
           settled_at - killed_at < 15)
    record("faults", "worker SIGKILL: requests failed (in flight on the victim)", len(failures),
           len(failures) <= load.concurrency)
    record("faults", "worker SIGKILL: requests after that, all 200", len(after_recovery), len(after_recovery) > 20)
    assert len(failures) <= load.concurrency, f"{len(failures)} requests failed after one worker died"
    assert settled_at - killed_at < 15, f"requests still failing {settled_at - killed_at:.1f} s after the kill"
    assert len(after_recovery) > 20 and all(status == 200 for status in after_recovery)
