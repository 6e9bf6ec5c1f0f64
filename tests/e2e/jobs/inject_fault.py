"""A Ray job that injects a fault into one sentiment replica: `python inject_fault.py <method>
[application [count]]` (default `sentiment`; `sentiment-canary` for a canary),
where <method> is one of the model deployment's fault-injection methods (`fail_health_checks`,
`hang_next_batch`, `fail_next_batches`).

Submitted by tests/e2e/test_reliability.py; needs SERVE_APP_FAULT_INJECTION=1 in the application's
runtime_env. Prints `VICTIM=<replica id>` (the driver's output also carries the cluster's logs).
The handle is awaited inside an event loop: with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (compose's
default) a handle has no router loop of its own to block on.
"""

from __future__ import annotations

import asyncio
import sys

from ray import serve


async def inject(method: str, app: str, *args: int) -> str:
    handle = serve.get_deployment_handle("sentiment", app_name=app)
    return await asyncio.wait_for(getattr(handle, method).remote(*args), timeout=60)


if __name__ == "__main__":
    app = sys.argv[2] if len(sys.argv) > 2 else "sentiment"
    print(f"VICTIM={asyncio.run(inject(sys.argv[1], app, *map(int, sys.argv[3:])))}")
