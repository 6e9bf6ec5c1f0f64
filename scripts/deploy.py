"""Deploy the Serve config onto a running cluster and follow it until every application is RUNNING.

The compose stack's `serve-deploy` step; also usable by hand against any cluster:

    python scripts/deploy.py --config serve/serve_config.yaml --address http://127.0.0.1:8265

Exits 0 when every application of the file is RUNNING with the config of the file (an application
restored from the GCS's Redis with an older config does not count), 1 when one fails to deploy or
the timeout passes, each time printing the status of every deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from ray_auth import request


def log(message: str) -> None:
    print(f"[serve-deploy] {message}", flush=True)


def get_json(url: str) -> dict:
    # The http(s) URL of one of the stack's own services, given by the operator.
    with urllib.request.urlopen(request(url), timeout=10) as resp:  # nosec B310
        return json.load(resp)


def wait_for_dashboard(address: str, deadline: float) -> None:
    while True:
        try:
            version = get_json(f"{address}/api/version")
            log(f"Ray {version.get('ray_version', '?')} dashboard is up at {address}")
            return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray dashboard at {address} never answered: {exc}") from exc
            log(f"waiting for the Ray dashboard at {address} ...")
            time.sleep(3)


def summarize(apps: dict) -> str:
    parts = []
    for name, app in apps.items():
        deployments = ", ".join(
            f"{d_name}={d.get('status')}"
            + (f"({len(d.get('replicas', []))} replicas)" if d.get("replicas") is not None else "")
            for d_name, d in app.get("deployments", {}).items()
        )
        parts.append(f"{name}: {app.get('status')} [{deployments}]")
    return "; ".join(parts) or "no applications yet"


def expected_apps(config_path: str) -> dict[str, dict]:
    """Each application of the file, as Ray's schema reads it: the fields the file sets."""
    from serve.check_config import load_config

    schema = load_config(config_path)
    return {app.name: app.model_dump(exclude_unset=True) for app in schema.applications}


def runs_config(app: dict, expected: dict) -> bool:
    """Whether Serve's application `app` (REST API) was deployed with every field of `expected`
    (Serve adds the file's top-level settings, such as `logging_config`, to each application)."""
    from ray.serve.schema import ServeApplicationSchema

    deployed = app.get("deployed_app_config")
    if not deployed:
        return False
    current = ServeApplicationSchema.model_validate(deployed).model_dump(exclude_unset=True)
    return all(current.get(key) == value for key, value in expected.items())


def follow(address: str, expected: dict[str, dict], deadline: float) -> int:
    last = ""
    while time.monotonic() < deadline:
        try:
            apps = get_json(f"{address}/api/serve/applications/").get("applications", {})
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log(f"status not available yet: {exc}")
            time.sleep(3)
            continue
        current = {
            name: runs_config(apps[name], cfg) for name, cfg in expected.items() if name in apps
        }
        summary = summarize(apps) + "".join(
            f"; {name}: previous config still deployed" for name, ok in current.items() if not ok
        )
        if summary != last:
            log(summary)
            last = summary
        if len(current) == len(expected) and all(current.values()):
            if all(apps[name].get("status") == "RUNNING" for name in expected):
                log("all applications RUNNING with this config")
                return 0
            for name in expected:
                if apps[name].get("status") == "DEPLOY_FAILED":
                    log(f"application {name!r} failed to deploy: {apps[name].get('message', '')}")
                    return 1
        time.sleep(3)
    log(f"timed out; last status: {last}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="serve/serve_config.yaml")
    parser.add_argument("--address", default="http://127.0.0.1:8265", help="Ray dashboard URL")
    parser.add_argument(
        "--timeout-s", type=float, default=float(os.environ.get("DEPLOY_TIMEOUT_S", "900"))
    )
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.timeout_s

    log(f"checking {args.config}")
    if subprocess.run([sys.executable, "-m", "serve.check_config", args.config]).returncode:
        return 1
    wait_for_dashboard(args.address, deadline)
    log(f"serve deploy {args.config}")
    if subprocess.run(["serve", "deploy", args.config, "--address", args.address]).returncode:
        log("serve deploy failed")
        return 1
    return follow(args.address, expected_apps(args.config), deadline)


if __name__ == "__main__":
    sys.exit(main())
