"""A server's start says nothing it need not: the mms front's properties are written without the toolkit's
pkg_resources deprecation warning (issue "Inference at scale": clean cold starts)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.timeout(120)
def test_writing_the_mms_properties_warns_of_nothing():
    # a fresh interpreter: the toolkit's module is imported, and its warning given, once a process
    code = "from dogbreed.serving import server; server.mms_properties('127.0.0.1', 8080, 2, 6 * 1024 * 1024)"
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=110)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pkg_resources" not in done.stderr
