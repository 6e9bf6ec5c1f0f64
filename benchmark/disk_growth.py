"""How fast the running stack fills its disks under Locust load: every place it writes, measured
before and after a headless Locust run of every model (loadtest/, as the README's load test),
then scaled to an hour.

    python benchmark/disk_growth.py --minutes 10 [--users 8] [--out disk.json]

It reads the stack of this checkout (COMPOSE_PROJECT_NAME and API_PORT from the environment or
.env), and needs `docker` and Locust (the test environment has both). What it measures, per
container of the project: the volumes Prometheus, Redis and Alertmanager write (`du` inside the
container), each Ray node's session directory (/tmp/ray: Ray's logs, which rotate at
RAY_LOG_ROTATION_BYTES), and every container's own log (Docker's json-file, capped at 3 x 10 MB:
the file size where this user may read Docker's storage, else the log's text). Load goes to
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Service -> the directories it writes (its volumes, or Ray's session directory).
WRITES = {
    "prometheus": ["/prometheus"],
    "redis": ["/data"],
    "alertmanager": ["/alertmanager"],
    # Ray's session directory inside the node containers (read with du, never written here).
    "ray-head": ["/tmp/ray"],  # nosec B108
    "ray-worker": ["/tmp/ray"],  # nosec B108
}


def setting(name: str, default: str) -> str:
    if name in os.environ:
        return os.environ[name]
    env = ROOT / ".env"
    if env.exists():
        for line in env.read_text().splitlines():
            if line.startswith(f"{name}="):
                return line.split("=", 1)[1].strip().strip("\"'")
    return default


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def containers(project: str) -> dict[str, str]:
    """Running containers of the project: name -> compose service."""
    out = docker(
        "ps", "--filter", f"label=com.docker.compose.project={project}",
        "--format", '{{.Names}} {{.Label "com.docker.compose.service"}}',
    )  # fmt: skip
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def du_bytes(container: str, path: str) -> int:
    out = subprocess.run(
        ["docker", "exec", container, "du", "-s", "-k", path], capture_output=True, text=True
    )
    match = re.match(r"(\d+)", out.stdout)
    return int(match[1]) * 1024 if match else 0


def log_bytes(container: str) -> int:
    path = Path(docker("inspect", "--format", "{{.LogPath}}", container).strip())
    if os.access(path.parent, os.R_OK | os.X_OK):  # Docker's storage, readable by root only
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    # Else the log's text, which is about half what json-file stores for it.
    logs = subprocess.run(["docker", "logs", container], capture_output=True)
    return len(logs.stdout) + len(logs.stderr)


def sizes(project: str) -> dict[str, int]:
    """Bytes per place the stack writes, keyed `service path` (summed over a service's
    containers) and `service log`."""
    found: dict[str, int] = {}
    for name, service in containers(project).items():
        for path in WRITES.get(service, []):
            key = f"{service} {path}"
            found[key] = found.get(key, 0) + du_bytes(name, path)
        found[f"{service} log"] = found.get(f"{service} log", 0) + log_bytes(name)
    return found


def run_locust(api: str, users: int, seconds: int) -> dict[str, int]:
    """Every model's users (loadtest/) for `seconds`; Locust's request and failure counts."""
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "run"
        subprocess.run(
            [str(Path(sys.executable).parent / "locust"), "-f", str(ROOT / "loadtest"),
             "--headless", "--host", api, "-u", str(users), "-r", str(users),
             "-t", f"{seconds}s", "--csv", str(csv), "--only-summary", "--exit-code-on-error", "0"],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        rows = (Path(f"{csv}_stats.csv")).read_text().splitlines()
        total = next(line for line in rows if ",Aggregated," in line).split(",")
        return {"requests": int(total[2]), "failures": int(total[3])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10, help="length of the Locust run")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    project = setting("COMPOSE_PROJECT_NAME", re.sub(r"[^-_a-z0-9]", "", ROOT.name.lower()))
    api = f"http://127.0.0.1:{setting('API_PORT', '8000')}"
    if not containers(project):
        print(f"no running container of project {project!r}: start the stack", file=sys.stderr)
        return 1
    seconds = round(args.minutes * 60)
    before = sizes(project)
    started = time.monotonic()
    print(f"[disk] {project}: Locust, {args.users} users, {seconds} s ...", file=sys.stderr)
    load = run_locust(api, args.users, seconds)
    elapsed = time.monotonic() - started
    after = sizes(project)
    per_hour = {
        key: round((after.get(key, 0) - before.get(key, 0)) * 3600 / elapsed)
        for key in sorted(set(before) | set(after))
    }
    total = sum(per_hour.values())
    for key, growth in sorted(per_hour.items(), key=lambda kv: -kv[1]):
        print(f"{key:40s} {growth / 2**20:9.1f} MiB/h   (now {after.get(key, 0) / 2**20:.1f} MiB)")
    print(f"{'total':40s} {total / 2**20:9.1f} MiB/h   ({load['requests']} requests in "
          f"{elapsed:.0f} s, {load['failures']} failed)")  # fmt: skip
    if not load["requests"] or load["failures"] > 0.01 * load["requests"]:
        print(f"[disk] {load['failures']} of {load['requests']} requests failed: not a stack that "
              f"serves, so not its growth under load (is {api} up?)", file=sys.stderr)  # fmt: skip
        return 1
    if args.out:
        result = {"seconds": round(elapsed), "users": args.users, **load,
                  "bytes_per_hour": per_hour, "total_bytes_per_hour": total}  # fmt: skip
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
