"""``python -m dogbreed.train``: the training program, kept at its old name. It lives in :mod:`dogbreed.training`."""

from __future__ import annotations

from .training.entry import cli

if __name__ == "__main__":
    cli()
