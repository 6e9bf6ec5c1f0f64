"""A Ray job that makes one sentiment replica fail its health checks from now on.

Submitted by tests/e2e/test_reliability.py; needs SERVE_APP_FAULT_INJECTION=1 in the application's
runtime_env. Prints `VICTIM=<replica id>` (the driver's output also carries the cluster's logs).
The handle is awaited inside an event loop: with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (compose's
default) a handle has no router loop of its own to block on.
"""

from __future__ import annotations

import asyncio

from ray import serve


async def fail_one_replica() -> str:
    handle = serve.get_deployment_handle("sentiment", app_name="models")
    return await asyncio.wait_for(handle.fail_health_checks.remote(), timeout=60)


if __name__ == "__main__":
    print(f"VICTIM={asyncio.run(fail_one_replica())}")
