"""The engine supervisor's verdict on an engine that died, from what the dead process left behind (a real
process that listened on the socket, or wrote why it cannot load, or just died)."""

from __future__ import annotations

import subprocess
import sys

from dogbreed.serving.engine import failure_path
from dogbreed.serving.supervisor import EngineSupervisor

LISTENS_THEN_DIES = "import os, socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1); os._exit(9)"


def _dead(code: str, *args) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code, *map(str, args)])
    process.wait(timeout=60)
    return process


def _supervisor(tmp_path) -> EngineSupervisor:
    return EngineSupervisor(tmp_path / "model", tmp_path / "engine.sock")  # never started: its process is set below


def test_an_engine_that_listened_then_died_between_two_polls_is_restarted(tmp_path):
    supervisor = _supervisor(tmp_path)
    supervisor.process = _dead(LISTENS_THEN_DIES, supervisor.socket_path)
    assert supervisor.poll() is None and supervisor.restart_at is not None and supervisor.ever_ready


def test_a_first_start_that_says_it_cannot_load_gives_up_with_the_reason(tmp_path):
    supervisor = _supervisor(tmp_path)
    failure_path(supervisor.socket_path).write_text("RuntimeError: model.pth is corrupt")
    supervisor.process = _dead("raise SystemExit(1)")
    reason = supervisor.poll()
    assert reason and "cannot load the model" in reason and "model.pth is corrupt" in reason


def test_a_first_start_killed_without_a_reason_is_retried_then_given_up(tmp_path):
    supervisor = _supervisor(tmp_path)
    verdicts = []
    for _ in range(3):
        supervisor.process, supervisor.restart_at = _dead("import os; os._exit(9)"), None
        verdicts.append(supervisor.poll())
    assert verdicts[:2] == [None, None] and verdicts[2] and "exit code 9" in verdicts[2]
