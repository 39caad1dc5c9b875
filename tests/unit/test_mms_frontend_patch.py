"""multi-model-server's frontend, as make install and the serving image leave it: its response decoder
takes a worker's frame cut into two socket reads at any byte (the original drops the worker when the
cut falls in the frame's header map: "500 Worker died.", seen in CI on the fuzz corpus)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mms.context import Context, RequestProcessor
from mms.protocol.otf_message_handler import create_predict_response

from dogbreed.serving.transformer import JsonErrorTransformer
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
PATCH = ROOT / "scripts" / "patch_mms_frontend.py"
CHECK = ROOT / "tests" / "mms" / "FrameSplitCheck.java"


def _jdk():
    if not (shutil.which("javac") and shutil.which("java")):
        if IN_CI:
            pytest.fail("a JDK is required in CI (.ci/run installs default-jdk-headless)")
        pytest.skip("no JDK here (javac): the frame check compiles against the frontend jar")


def _jar() -> Path:
    import mms

    return Path(mms.__file__).parent / "frontend" / "model-server.jar"


def _frame(request_id: str, status: int, body: str) -> tuple[bytes, str]:
    """One worker frame as multi-model-server's own encoder writes it, the context filled by our transformer."""
    context = Context("model", "/opt/ml/model", {}, 1, None, "1.1.11")
    context.request_processor = [RequestProcessor({})]
    if status == 200:
        context.set_response_content_type(0, "application/json")
        answer = [body]
    else:
        answer = JsonErrorTransformer.handle_error(context, _Error(status, body), "")
    frame = create_predict_response(answer, {0: request_id}, "Prediction success", 200, context)
    expected = f"{request_id}\t{status}\tapplication/json\t1\t{len(answer[0].encode())}"
    return bytes(frame), expected


def _Error(status_code, message):
    from sagemaker_inference.errors import GenericInferenceToolkitError

    return GenericInferenceToolkitError(status_code, message)


def test_make_install_left_the_patched_decoder_in_the_frontend():
    _jdk()
    assert subprocess.run([sys.executable, str(PATCH), "check"]).returncode == 0, f"{_jar()} is unpatched"


def test_frames_cut_at_every_byte_come_out_whole(tmp_path):
    _jdk()
    predictions = json.dumps({"predictions": [[{"breed": "Beagle", "index": 3, "probability": 0.91}]]})
    frames = [_frame("9f1c2d3e-0000-4000-8000-000000000001", 415, "content type 'text/csv' is not supported"),
              _frame("9f1c2d3e-0000-4000-8000-000000000002", 200, predictions),
              _frame("9f1c2d3e-0000-4000-8000-000000000003", 400, "the image is truncated or corrupt")]
    (tmp_path / "frames.bin").write_bytes(b"".join(frame for frame, _ in frames))
    (tmp_path / "expected.txt").write_text("".join(line + "\n" for _, line in frames))
    subprocess.run(["javac", "-nowarn", "-cp", str(_jar()), "-d", str(tmp_path), str(CHECK)], check=True)
    run = subprocess.run(["java", "-cp", f"{_jar()}:{tmp_path}", "FrameSplitCheck", str(tmp_path / "frames.bin"),
                          str(tmp_path / "expected.txt")], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)  # the jar's log4j config writes logs/ into the working directory
    assert run.returncode == 0 and "failures 0 of " in run.stdout, run.stdout + run.stderr
