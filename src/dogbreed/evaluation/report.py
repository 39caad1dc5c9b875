"""One self-contained HTML file from an evaluation's results: pictures embedded, no network resource, the full
confusion matrix beside it as a CSV."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, select_autoescape

from .template import TEMPLATE

REPORT_FILE = "report.html"


def render(context: dict) -> str:
    """``context``: what the template reads (see :func:`dogbreed.evaluation.evaluate.report_context`)."""
    environment = Environment(autoescape=select_autoescape(default_for_string=True, default=True))
    return environment.from_string(TEMPLATE).render(**context)


def write(out_dir: Path, context: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / REPORT_FILE
    target.write_text(render(context), encoding="utf-8")
    return target
