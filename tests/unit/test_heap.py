"""heap.IdleTrim: the heap is trimmed once the server has been idle, never while requests keep coming."""

from __future__ import annotations

import asyncio

from dogbreed.serving import heap


def _run(steps, monkeypatch) -> int:
    """Play ``steps`` (("begin",), ("end", still_running) or ("sleep", s)) on an event loop: the trims made."""
    trims = []
    monkeypatch.setattr(heap, "trim", lambda: trims.append(1))
    idle = heap.IdleTrim(after_s=0.05)

    async def play():
        for step, *arg in steps:
            if step == "sleep":
                await asyncio.sleep(arg[0])
            else:
                getattr(idle, step)(*arg)

    asyncio.run(play())
    return len(trims)


def test_trims_once_after_the_last_request_ends(monkeypatch):
    assert _run([("begin",), ("begin",), ("end", 1), ("end", 0), ("sleep", 0.2)], monkeypatch) == 1


def test_no_trim_while_a_request_runs(monkeypatch):
    assert _run([("begin",), ("begin",), ("end", 1), ("sleep", 0.2)], monkeypatch) == 0


def test_no_trim_when_a_request_began_within_the_idle_time(monkeypatch):
    steps = [("begin",), ("end", 0), ("sleep", 0.01), ("begin",), ("sleep", 0.2)]
    assert _run(steps, monkeypatch) == 0
    assert _run([*steps, ("end", 0), ("sleep", 0.2)], monkeypatch) == 1
