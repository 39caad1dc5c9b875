"""What a server's processes hold in memory, all of them: front (a JVM), launcher, workers, model engine.

A server is the process the bench launched, its descendants, and the processes of its process group
(TorchServe's frontend is re-parented when its launcher exits). For each: PSS (``/proc/PID/smaps_rollup``:
pages shared between processes are split among them, so the PSS of all processes adds up to what the
server costs the host) and the peak resident size (VmHWM). A sampler polls during the load and keeps the
largest total PSS seen at one instant, and each process's largest figures.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import psutil

ROLES = (  # the first marker found in a command line names the process
    ("dogbreed.serving.batcher", "model engine"),
    ("model_service_worker", "worker"),
    ("torchserve_launcher", "launcher"),
    ("dogbreed.serving.server", "server process"),
    ("dogbreed.cli", "server process"),
    ("multi-model-server", "front's launcher"),
    ("bin/torchserve", "front's launcher"),
)


def role(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    if cmdline and os.path.basename(cmdline[0]) == "java":
        return "front (JVM)"
    for marker, name in ROLES:
        if marker in text:
            return name
    return os.path.basename(cmdline[0]) if cmdline else "?"


def _kb(path: str, field_name: str) -> int | None:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(field_name):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def server_processes(root_pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(root_pid)
        group = os.getpgid(root_pid)
        found = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except (psutil.NoSuchProcess, ProcessLookupError):
        return []
    for process in psutil.process_iter():
        try:
            if process.pid not in found and os.getpgid(process.pid) == group:
                found[process.pid] = process
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return list(found.values())


@dataclass
class Seen:
    role: str
    pss_mb: float = 0.0
    hwm_mb: float = 0.0


@dataclass
class MemorySampler:
    """``with MemorySampler(pid) as sampler:`` polls every ``every_s`` until the block ends."""

    root_pid: int
    every_s: float = 0.5
    processes: dict[int, Seen] = field(default_factory=dict)
    peak_total_pss_mb: float = 0.0

    def sample(self) -> None:
        total = 0.0
        for process in server_processes(self.root_pid):
            pss, hwm = _kb(f"/proc/{process.pid}/smaps_rollup", "Pss:"), _kb(f"/proc/{process.pid}/status", "VmHWM:")
            if pss is None or hwm is None:
                continue
            try:
                if process.pid not in self.processes:
                    self.processes[process.pid] = Seen(role(process.cmdline()))
                seen = self.processes[process.pid]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            seen.pss_mb, seen.hwm_mb = max(seen.pss_mb, pss / 1024), max(seen.hwm_mb, hwm / 1024)
            total += pss / 1024
        self.peak_total_pss_mb = max(self.peak_total_pss_mb, total)

    def __enter__(self) -> MemorySampler:
        self._stop = threading.Event()
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def summary(self) -> dict:
        """Totals, and the processes by role (the largest PSS and VmHWM each reached)."""
        processes = sorted(self.processes.values(), key=lambda seen: -seen.pss_mb)
        return {"total_pss_mb": round(self.peak_total_pss_mb), "total_hwm_mb": round(sum(p.hwm_mb for p in processes)),
                "processes": [{"role": p.role, "pss_mb": round(p.pss_mb), "hwm_mb": round(p.hwm_mb)} for p in processes]}


def describe(summary: dict) -> str:
    """'engine 612 + 4 workers x 41 + front (JVM) 180' style: PSS per role, identical roles grouped."""
    groups: dict[str, list[int]] = {}
    for process in summary["processes"]:
        groups.setdefault(process["role"], []).append(process["pss_mb"])
    parts = []
    for name, values in groups.items():
        if len(values) == 1:
            parts.append(f"{name} {values[0]}")
        else:
            parts.append(f"{len(values)} {name}s {min(values)}-{max(values)}" if min(values) != max(values)
                         else f"{len(values)} {name}s x {values[0]}")
    return " + ".join(parts)
