"""``container/serve``'s entry (``python -m dogbreed.serving.server``) before any model loads: a setting out of
range stops the start by name whatever the model, and a model that cannot be read is served as a 503 with the
reason on the port the settings name."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from dogbreed import env as envnames
from tests.conftest import free_port
from tests.serving_helpers import get

pytestmark = pytest.mark.timeout(120)


def _environ(tmp_path, **extra) -> dict:
    import os

    (tmp_path / "model").mkdir(exist_ok=True)  # no model.tar.gz, no model.pth: a ModelError
    return {**os.environ, envnames.SAGEMAKER_BASE_DIR: str(tmp_path), **extra}


def test_a_bad_port_setting_refuses_the_start_by_name_even_without_a_model(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dogbreed.serving.server"], capture_output=True, text=True,
                            timeout=60, env=_environ(tmp_path, **{envnames.SAGEMAKER_BIND_TO_PORT: "eighty"}))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "refusing to start" in result.stderr and envnames.SAGEMAKER_BIND_TO_PORT in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_model_is_a_503_with_the_reason_on_the_port_the_settings_name(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "dogbreed.serving.server"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=_environ(tmp_path, **{envnames.SAGEMAKER_BIND_TO_PORT: str(port)}))
    try:
        deadline, answer = time.monotonic() + 60, None
        while answer is None and time.monotonic() < deadline and process.poll() is None:
            try:
                answer = get(f"http://127.0.0.1:{port}", "/ping", timeout=5)
            except OSError:
                time.sleep(0.2)
        assert answer is not None, process.stderr.read().decode()[-2000:] if process.poll() is not None else "no answer"
        status, body = answer
        assert status == 503 and "model" in json.loads(body)["error"], body
    finally:
        process.terminate()
        process.wait(timeout=30)
