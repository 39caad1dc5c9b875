"""An edge application served by uvicorn on a loopback port, on a thread of this test process: real HTTP in front
of an in-process front (the native front's app around a real engine), so that a test can reach into the engine."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from dogbreed.serving.edge import edge_server
from tests.conftest import free_port
from tests.serving_helpers import get


@contextlib.contextmanager
def serving(app, grace_s: int = 1):
    """Yields the base URL once the server listens; stops it after."""
    port = free_port()
    server = edge_server(app, "127.0.0.1", port, grace_s)
    thread = threading.Thread(target=server.run, name="edge-under-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the edge did not start"
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        close = getattr(app, "close", None)
        if close:
            close()


def tiny_model(directory: Path) -> Path:
    """A ResNet-18 of three breeds at 64 px, untrained: quick to load, warm and run on the CPU."""
    from dogbreed import models

    prep = models.default_preprocessing("resnet18", 64)
    models.save_artifacts(directory, models.build("resnet18", 3), "resnet18", ["akita", "beagle", "corgi"], prep)
    return directory


def ping(url: str) -> tuple[int, str]:
    return get(url, "/ping", timeout=10)
