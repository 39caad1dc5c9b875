"""Reliability tests record what they held and survived; `make test-reliability` (and `make test`) print the table."""

import json
import os
from pathlib import Path

import pytest

RESULTS = Path(os.environ.get("DOGBREED_RELIABILITY_RESULTS", ".work/reliability/results.jsonl"))


@pytest.fixture
def record(request):
    """record(category, what, value, ok): one row of the reliability table."""

    def write(category: str, what: str, value, ok: bool = True):
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with open(RESULTS, "a") as handle:
            handle.write(json.dumps({"test": request.node.name, "category": category, "what": what, "value": value, "ok": ok}) + "\n")

    return write


