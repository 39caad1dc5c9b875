"""Benchmark results: one JSON per benchmark under .work/bench, one BENCHMARKS.md table for all of them."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

RESULTS = Path(os.environ.get("DOGBREED_BENCH_DIR", ".work/bench"))
REPORT = Path(os.environ.get("DOGBREED_BENCH_REPORT", "BENCHMARKS.md"))
ORDER = ["train", "serve", "tune"]


def machine() -> dict:
    import torch
    import torchvision

    from .. import accel

    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "bf16": accel.cpu_supports_bf16(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    write_report()
    return path


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report() -> Path:
    sections = ["# Benchmarks", "", "Written by `make bench` (each `make bench-*` rewrites its own section); nothing here is typed by hand.", ""]
    for name in ORDER:
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        m = result["machine"]
        sections.append(f"## {result.get('title', name)}")
        sections.append("")
        sections.append(
            f"Machine: {m['cpu']}, {m['cores']} cores, bf16 {'yes' if m['bf16'] else 'no'}"
            + (f", GPU {m['gpu']}" if m.get("gpu") else "")
            + f"; Python {m['python']}, torch {m['torch']}, torchvision {m['torchvision']}; {m['date']}."
        )
        sections.append("")
        sections.append(table(result["headers"], result["rows"]))
        for note in result.get("notes", []):
            sections.append("")
            sections.append(note)
        sections.append("")
    REPORT.write_text("\n".join(sections))
    return REPORT
