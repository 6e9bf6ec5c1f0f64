"""A Locust plugin for benchmark/autoscaling.py: every request's end time, latency and outcome, one
line each, in the file AUTOSCALING_RECORD names (the 10 s windows' p95 need every request, and
Locust's own CSV keeps running percentiles only). Loaded beside loadtest/:
`locust -f loadtest/,benchmark/autoscaling_record.py`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from locust import events

_out = open(os.environ["AUTOSCALING_RECORD"], "a", buffering=1)  # noqa: SIM115 (whole run)


@events.request.add_listener
def record(response_time: float, exception: Any, **_: Any) -> None:
    _out.write(f"{time.time():.3f} {response_time:.1f} {0 if exception else 1}\n")


@events.quitting.add_listener
def close(**_: Any) -> None:
    _out.close()
