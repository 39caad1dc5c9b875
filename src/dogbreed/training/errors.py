"""Why training stops: a reason the user can act on, written to the failure file."""

from __future__ import annotations

from ..errors import DogbreedError


class TrainingError(DogbreedError):
    """A reason to stop that the user can act on; its message goes to the failure file."""


class Interrupted(TrainingError):
    """Stopped by SIGTERM (spot interruption, StopTrainingJob): exit code 143, the last checkpoint kept."""
