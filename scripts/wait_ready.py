"""Wait until the stack is ready: every node joined, serve-deploy applied the current Serve config
and its applications are RUNNING, the API up.

Standard library only, so it runs on any host with Python 3. Prints progress while it waits and,
on timeout, exactly what is still missing. Exit 0 ready, 1 not ready in time, 2 deploy failed
(the serve-deploy container exited non-zero, or an application is DEPLOY_FAILED).

    RAY_AUTH_TOKEN=... python3 scripts/wait_ready.py --workers 2 --timeout 900 \
        --deploy-container "$(docker compose ps -a -q serve-deploy)"

Without `--deploy-container`, an application RUNNING counts as ready whatever config it runs: after
`docker compose down` without `-v`, the head restores the previous application from Redis before
serve-deploy applies the current file, and only serve-deploy's exit code tells them apart.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

from ray_auth import request


def get(url: str) -> tuple[int, bytes]:
    try:
        # The http(s) URL of one of the stack's own services, given by the operator.
        with urllib.request.urlopen(request(url), timeout=5) as resp:  # nosec B310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def alive_nodes(dashboard: str) -> tuple[int, int] | None:
    """(alive heads, alive workers) from the Ray state API, or None if it doesn't answer."""
    status, body = get(f"{dashboard}/api/v0/nodes?limit=1000")
    if status != 200:
        return None
    nodes = json.loads(body)["data"]["result"]["result"]
    alive = [n for n in nodes if n.get("state") == "ALIVE"]
    heads = sum(1 for n in alive if n.get("is_head_node"))
    return heads, len(alive) - heads


def serve_status(dashboard: str) -> dict[str, dict] | None:
    status, body = get(f"{dashboard}/api/serve/applications/")
    if status != 200:
        return None
    return json.loads(body).get("applications") or {}


def deploy_state(container: str) -> tuple[str, int]:
    """(status, exit code) of the serve-deploy container: `healthy` once it applied the config,
    else Docker's status (`running` while it deploys, `exited`, `restarting`, ...)."""
    out = subprocess.run(
        [
            "docker",
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}"
            "{{end}}",
            container,
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        return "missing", -1
    status, code, *health = out.stdout.split()
    return ("healthy" if health == ["healthy"] and status == "running" else status), int(code)


def check(args: argparse.Namespace) -> tuple[list[str], str | None]:
    """What is still missing, and a fatal deploy error if there is one."""
    missing: list[str] = []
    if args.deploy_container:
        status, code = deploy_state(args.deploy_container)
        if status in ("exited", "restarting") and code != 0:
            return missing, f"serve-deploy exited with code {code}"
        if status != "healthy":
            missing.append(f"serve-deploy to apply the Serve config ({status})")
    nodes = alive_nodes(args.dashboard)
    if nodes is None:
        missing.append(f"Ray dashboard at {args.dashboard} (ray-head not up)")
    else:
        heads, workers = nodes
        if heads != 1:
            missing.append("the Ray head node")
        if workers < args.workers:
            missing.append(f"worker nodes: {workers}/{args.workers} joined")
    apps = serve_status(args.dashboard) if nodes is not None else None
    if apps is not None:
        if not apps:
            missing.append("Serve application (not deployed yet: see serve-deploy's logs)")
        for name, app in apps.items():
            state = app.get("status")
            # With serve-deploy followed, its verdict counts: a restored old application may
            # fail before the current config replaces it.
            if state == "DEPLOY_FAILED" and not args.deploy_container:
                return missing, f"application {name!r} failed to deploy: {app.get('message')}"
            if state != "RUNNING":
                waiting = [
                    f"{d}={info.get('status')}"
                    for d, info in app.get("deployments", {}).items()
                    if info.get("status") != "HEALTHY"
                ]
                missing.append(f"application {name!r} {state} ({', '.join(waiting)})")
    status, _ = get(f"{args.api}/-/healthz")
    if status != 200:
        missing.append(f"HTTP API at {args.api}/-/healthz")
    return missing, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--dashboard", default="http://127.0.0.1:8265")
    parser.add_argument(
        "--deploy-container", help="ready only once this serve-deploy container is healthy"
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    last = None
    while True:
        missing, fatal = check(args)
        elapsed = time.monotonic() - started
        if fatal:
            print(f"[ready] {fatal}", flush=True)
            return 2
        if not missing:
            print(
                f"[ready] stack ready after {elapsed:.0f}s: 1 head + {args.workers} workers, "
                f"Serve RUNNING, {args.api} answers",
                flush=True,
            )
            return 0
        line = "; ".join(missing)
        if line != last or int(elapsed) % 30 < 3:
            print(f"[ready] {elapsed:4.0f}s waiting for: {line}", flush=True)
            last = line
        if elapsed > args.timeout:
            print(f"[ready] not ready after {args.timeout:.0f}s; missing: {line}", flush=True)
            return 1
        time.sleep(3)


if __name__ == "__main__":
    sys.exit(main())
