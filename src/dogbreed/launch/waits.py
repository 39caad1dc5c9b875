"""Names and waits: every job, model and endpoint gets a unique name before anything is sent, and waiting is ours
(``wait_for``), so that a notebook or a command can wait hours for a job without the SDK's fixed polling."""

from __future__ import annotations

import datetime as dt
import secrets
import sys
import time

from ..errors import ConfigError
from .config import Config


class JobError(ConfigError):
    """A job that ended without what was asked of it (failed, stopped): its reason."""


def job_name(kind: str) -> str:
    """``dogbreed-<kind>-YYMMDD-HHMMSS-xxxxx``: two launches in the same second differ (20 random bits), and
    it is short enough for a tuning job (32 characters with kind ``hpo``); the trials' names add AWS's
    ``-NNN-xxxxxxxx`` and still fit 63."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%y%m%d-%H%M%S")
    return f"dogbreed-{kind}-{stamp}-{secrets.token_hex(3)[:5]}"



# jobs take hours
WAITS = {
    # kind: (describe method, name parameter, status key, done, failed)
    "training": ("describe_training_job", "TrainingJobName", "TrainingJobStatus", {"Completed"}, {"Failed", "Stopped"}),
    "tuning": ("describe_hyper_parameter_tuning_job", "HyperParameterTuningJobName", "HyperParameterTuningJobStatus",
               {"Completed", "Stopped"}, {"Failed"}),
    "endpoint": ("describe_endpoint", "EndpointName", "EndpointStatus", {"InService"}, {"Failed", "OutOfService"}),
    "transform": ("describe_transform_job", "TransformJobName", "TransformJobStatus", {"Completed"}, {"Failed", "Stopped"}),
}


def poll_seconds(config: Config) -> float:
    return float((config.get("wait") or {}).get("poll_s", 30))


def wait_for(client, kind: str, name: str, poll_s: float = 30.0, timeout_s: float | None = None, on_poll=None,
             out=None, until=None) -> dict:
    """Describe ``name`` every ``poll_s`` seconds until it is done (its status a done one, or ``until(description)``
    where given); print each new status. Returns the last description; raises JobError with AWS's reason if it
    failed (or, for training, was stopped)."""
    method, key, status_key, done, failed = WAITS[kind]
    out = out or (lambda line: print(line, file=sys.stdout, flush=True))
    started = time.monotonic()
    last = None
    while True:
        described = getattr(client, method)(**{key: name})
        status = described.get(status_key)
        shown = f"{status} ({described['SecondaryStatus']})" if described.get("SecondaryStatus") else status
        if shown != last:
            out(f"{kind} {name}: {shown}")
            last = shown
        if on_poll:
            on_poll()
        if until(described) if until else status in done:
            return described
        if status in failed:
            reason = described.get("FailureReason") or "no reason given"
            raise JobError(f"{kind} {name} ended {status}: {reason}")
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise JobError(f"{kind} {name} still {status} after {timeout_s:.0f} s (it goes on; wait again, or stop it)")
        time.sleep(poll_s)
