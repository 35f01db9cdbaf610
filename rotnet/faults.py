"""Crash injection for the tests: `ROTNET_CRASH_AT=<point>:<epoch>` kills the process with
SIGKILL at that point of a run, so a test sees exactly what a real kill leaves behind.

Points, in the order a run passes them: `started:0` (MLflow run open, no checkpoint yet),
then per epoch N `metrics:N` (logged to MLflow), `checkpoint:N`, `snapshot:N`.
"""

from __future__ import annotations

import os
import signal

ENV = "ROTNET_CRASH_AT"


def crash_point(point: str, epoch: int) -> None:
    if os.environ.get(ENV) == f"{point}:{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)
