"""heap.IdleTrim: the heap is trimmed once the server has been idle after it grew, never while requests keep
coming, and not after a request that left nothing to give back."""

from __future__ import annotations

import asyncio

from dogbreed.serving import heap


def _run(steps, monkeypatch, resident=(100, 500)) -> int:
    """Play ``steps`` (("begin",), ("end", still_running) or ("sleep", s)) on an event loop, the process holding
    ``resident[0]`` bytes after a trim and ``resident[1]`` before: the trims made."""
    trims = []
    now = {"resident": resident[1]}

    def fake_trim():
        trims.append(1)
        now["resident"] = resident[0]

    monkeypatch.setattr(heap, "trim", fake_trim)
    monkeypatch.setattr(heap, "resident_bytes", lambda: now["resident"])
    idle = heap.IdleTrim(after_s=0.05, growth=50)
    idle.floor = resident[0]

    async def play():
        for step, *arg in steps:
            if step == "sleep":
                await asyncio.sleep(arg[0])
            else:
                getattr(idle, step)(*arg)

    asyncio.run(play())
    return len(trims)


def test_trims_once_after_the_last_request_ends(monkeypatch):
    assert _run([("begin",), ("begin",), ("end", 1), ("end", 0), ("sleep", 0.3)], monkeypatch) == 1


def test_no_trim_while_a_request_runs(monkeypatch):
    assert _run([("begin",), ("begin",), ("end", 1), ("sleep", 0.3)], monkeypatch) == 0


def test_no_trim_when_a_request_began_within_the_idle_time(monkeypatch):
    steps = [("begin",), ("end", 0), ("begin",), ("sleep", 0.3)]  # no await between: the timer cannot run first
    assert _run(steps, monkeypatch) == 0
    assert _run([*steps, ("end", 0), ("sleep", 0.3)], monkeypatch) == 1


def test_no_trim_where_the_memory_did_not_grow(monkeypatch):
    assert _run([("begin",), ("end", 0), ("sleep", 0.3)], monkeypatch, resident=(100, 120)) == 0


def test_resident_bytes_reads_this_process():
    resident = heap.resident_bytes()
    assert resident is None or resident > 10 * 2**20  # a Python with torch's deps loaded is well over 10 MB
