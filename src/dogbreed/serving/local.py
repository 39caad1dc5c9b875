"""``dogbreed local-serve``: the image's serving stack on loopback, from a model.tar.gz or a folder."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from ..common import configure_logging
from .archive import model_dir_from
from .server import serve

log = logging.getLogger("dogbreed.serve")


def serve_forever(model: Path, port: int = 8080, workers: int | None = None, host: str = "127.0.0.1") -> int:
    """Serve ``model`` until interrupted; an unusable model raises ModelError (one line from the command)."""
    configure_logging()
    state = Path(tempfile.mkdtemp(prefix="dogbreed-local-serve-"))
    try:
        model_dir = model_dir_from(Path(model), state)
        print(f"serving {model} on http://{host}:{port} (POST /invocations, GET /ping); Ctrl-C stops", flush=True)
        return serve(model_dir, host=host, port=port, workers=workers, state_dir=state)
    finally:
        shutil.rmtree(state, ignore_errors=True)
