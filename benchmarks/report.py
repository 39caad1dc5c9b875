"""Benchmark results: one JSON per benchmark under .work/bench, one BENCHMARKS.md table for all of them.

A ``--quick`` run (each bench's try-out, which CI runs) writes its JSON and its table somewhere else: to ``--out``
or a temporary file, never to BENCHMARKS.md, so try-out numbers never replace the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(os.environ.get("DOGBREED_BENCH_DIR", ".work/bench"))
REPORT = Path(os.environ.get("DOGBREED_BENCH_REPORT", "BENCHMARKS.md"))
QUICK_NOTE = "Quick mode (--quick): a try-out on tiny data that checks the bench runs; these are not figures."


@dataclass(frozen=True)
class Destination:
    """Where one bench run writes: the folder of the JSON results and the Markdown report built from them."""

    results: Path = RESULTS
    report: Path = REPORT
    quick: bool = False


def add_arguments(parser: argparse.ArgumentParser, quick_help: str) -> None:
    """The flags every bench shares: ``--quick`` (what it shrinks: ``quick_help``) and ``--out``."""
    parser.add_argument("--quick", action="store_true", help=f"a try-out in about a minute: {quick_help}")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the Markdown report to write (default: {REPORT}; with --quick a temporary file)")


def destination(args: argparse.Namespace) -> Destination:
    """The report of ``--out`` (its JSONs beside it, in ``<out>.d/``), a quick run's temporary file, or BENCHMARKS.md.
    A quick run never writes the figures' report: a later full run of another bench would keep its numbers."""
    out = args.out
    if args.quick and out is None:
        out = Path(tempfile.mkdtemp(prefix="bench-quick-")) / "BENCHMARKS.md"
    if out is None:
        return Destination()
    if args.quick and out.resolve() == REPORT.resolve():
        raise SystemExit(f"--quick never writes {REPORT}: its numbers are not figures (give another --out)")
    return Destination(out.parent / f"{out.name}.d", out, args.quick)
ORDER = ["accuracy", "notdog", "fewshot", "calibration", "train", "loader", "serve", "tune", "transform"]
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


def save(name: str, result: dict, where: Destination = Destination()) -> Path:
    """Write ``name``'s result, then the report; returns the report's path."""
    where.results.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), **result}
    if where.quick:
        result["notes"] = [QUICK_NOTE, *result.get("notes", [])]
    (where.results / f"{name}.json").write_text(json.dumps(result, indent=2))
    return write_report(where)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _kept_sections(report: Path) -> dict[str, str]:
    """The sections already in the report, by name: a bench run on a fresh clone (no results folder)
    rewrites its own section and keeps the others as they were."""
    if not report.is_file():
        return {}
    parts = report.read_text().split("\n## ")[1:]
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


def write_report(where: Destination = Destination()) -> Path:
    kept = _kept_sections(where.report)
    sections = ["# Benchmarks", "",
                "Written by `make bench` (each `make bench-*` rewrites its own section); nothing here is typed by hand.", ""]
    for name in ORDER:
        path = where.results / f"{name}.json"
        text = _section(name, json.loads(path.read_text())) if path.is_file() else kept.get(name)
        if text:
            sections += [text.rstrip(), f"<!-- section: {name} -->", ""]
    where.report.parent.mkdir(parents=True, exist_ok=True)
    where.report.write_text("\n".join(sections))
    return where.report
