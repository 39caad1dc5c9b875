"""Benchmark results: one JSON per benchmark under .work/bench, one BENCHMARKS.md table for all of them."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
from pathlib import Path

RESULTS = Path(os.environ.get("DOGBREED_BENCH_DIR", ".work/bench"))
REPORT = Path(os.environ.get("DOGBREED_BENCH_REPORT", "BENCHMARKS.md"))
ORDER = ["accuracy", "train", "loader", "serve", "tune"]
ORDER_BEFORE_MARKERS = ["train", "serve", "tune"]  # BENCHMARKS.md written before the section markers


def machine() -> dict:
    import torch  # torch loads only where a benchmark describes its machine (the report writer needs none)
    import torchvision

    from dogbreed import accel  # imports torch: see above

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


def _kept_sections() -> dict[str, str]:
    """The sections already in BENCHMARKS.md, by name: a bench run on a fresh clone (no results folder)
    rewrites its own section and keeps the others as they were."""
    if not REPORT.is_file():
        return {}
    parts = REPORT.read_text().split("\n## ")[1:]
    kept = {}
    for index, part in enumerate(parts):
        marker = re.search(r"<!-- section: (\w+) -->", part)
        name = marker.group(1) if marker else (ORDER_BEFORE_MARKERS[index] if index < len(ORDER_BEFORE_MARKERS) else None)
        if name:
            kept[name] = "## " + re.sub(r"\s*<!-- section: \w+ -->\s*$", "", part.rstrip()) + "\n"
    return kept


def _section(name: str, result: dict) -> str:
    m = result["machine"]
    lines = [f"## {result.get('title', name)}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, bf16 {'yes' if m['bf16'] else 'no'}"
             + (f", GPU {m['gpu']}" if m.get("gpu") else "")
             + f"; Python {m['python']}, torch {m['torch']}, torchvision {m['torchvision']}; {m['date']}.", "",
             table(result["headers"], result["rows"])]
    for note in result.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def write_report() -> Path:
    kept = _kept_sections()
    sections = ["# Benchmarks", "",
                "Written by `make bench` (each `make bench-*` rewrites its own section); nothing here is typed by hand.", ""]
    for name in ORDER:
        path = RESULTS / f"{name}.json"
        text = _section(name, json.loads(path.read_text())) if path.is_file() else kept.get(name)
        if text:
            sections += [text.rstrip(), f"<!-- section: {name} -->", ""]
    REPORT.write_text("\n".join(sections))
    return REPORT
