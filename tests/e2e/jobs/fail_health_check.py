"""A Ray job that makes one sentiment replica fail its health checks from now on.

Submitted by tests/e2e/test_reliability.py; needs SERVE_APP_FAULT_INJECTION=1 in the application's
runtime_env. Prints `VICTIM=<replica id>` (the driver's output also carries the cluster's logs).
"""

from __future__ import annotations

from ray import serve

if __name__ == "__main__":
    handle = serve.get_deployment_handle("sentiment", app_name="models")
    print(f"VICTIM={handle.fail_health_checks.remote().result(timeout_s=60)}")
