"""The compose stack, brought up from nothing as a new user would (plain `docker compose up -d`
with no secrets in .env), then waited for by scripts/up.sh; traffic only to 127.0.0.1."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from ray.job_submission import JobStatus, JobSubmissionClient

from tests.conftest import ROOT, compose_command, sigint_default

pytestmark = pytest.mark.e2e

JOBS = Path(__file__).parent / "jobs"  # Ray jobs the tests submit (run_job)
# Alerts' `for:` in the e2e stack (fast_alert_rules), instead of up to 10 minutes.
FAST_FOR = "5s"
# Generated inside the stack on first start; .env may set them but a new user's does not.
SECRET_KEYS = ("RAY_AUTH_TOKEN", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD")


def env_file() -> dict[str, str]:
    """The settings compose reads from .env (none when there is no .env)."""
    path = ROOT / ".env"
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


# The e2e tier's own compose project, published ports and image tags, over .env's (compose and
# the scripts take the environment first): a stack started by hand under the default project
# runs on beside the tier, its containers, volumes and images untouched. The secrets are blank,
# so the stack generates its own as on a new user's first start.
E2E_ENV = {
    "COMPOSE_PROJECT_NAME": "ray-serve-cluster-e2e",
    "API_PORT": "18000",
    "RAY_DASHBOARD_PORT": "18265",
    "PROMETHEUS_PORT": "19090",
    "ALERTMANAGER_PORT": "19093",
    "GRAFANA_PORT": "13000",
    "LOCUST_PORT": "18089",
    "RAY_NODE_IMAGE": "ray-serve-cluster-e2e/ray-node:latest",
    "RAY_IMAGE": "ray-serve-cluster-e2e/ray:latest",
    # Alertmanager's webhook: the tier's receiver on the stack's network (AlertWebhook).
    "ALERT_WEBHOOK_URL": "http://alert-webhook:9000/alerts",
    **dict.fromkeys(SECRET_KEYS, ""),
}


# Two hosts on one machine (test_two_hosts): two addresses on a veth link of their own in the
# root namespace. Host A is where the e2e stack publishes its cluster ports (compose.cluster.yaml,
# from the first start: no node is recreated for the two-host tests); host B runs a remote worker.
HOST_LINK = ("rsc-host-a", "rsc-host-b")
HOST_A = "10.200.0.1"
HOST_B = "10.200.0.2"


def compose_files(*extra: str) -> str:
    """COMPOSE_FILE as .env sets it (the air-gapped override, if any), plus `extra`."""
    return ":".join([env_file().get("COMPOSE_FILE", "compose.yaml"), *extra])


def open_to_host_b() -> dict[str, str]:
    """Host A's and host B's addresses, and the settings that publish the head's cluster ports
    on host A; none where the addresses cannot be added (root only: CI runs as root)."""
    if os.geteuid() != 0:
        return {}
    link = ["ip", "link"]
    subprocess.run([*link, "del", HOST_LINK[0]], capture_output=True)
    subprocess.run(
        [*link, "add", HOST_LINK[0], "type", "veth", "peer", "name", HOST_LINK[1]], check=True
    )
    for address in (HOST_A, HOST_B):
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", HOST_LINK[0]], check=True)
    for end in HOST_LINK:
        subprocess.run([*link, "set", end, "up"], check=True)
    return {"COMPOSE_FILE": compose_files("compose.cluster.yaml"), "RAY_CLUSTER_ADDRESS": HOST_A}


@dataclass
class Stack:
    project: str
    compose: list[str]
    api: str
    dashboard: str
    prometheus: str
    workers: int
    token: str = ""  # read from the stack once it runs: the secrets service generated it
    first_start_logs: str = ""  # every service's log once the stack first ran

    @property
    def auth(self) -> dict[str, str]:
        """The bearer header Ray's APIs want (RAY_AUTH_MODE=token on every node)."""
        return {"Authorization": f"Bearer {self.token}"}

    def ray_api(self, path: str) -> dict:
        """GET a Ray dashboard API path (e.g. `/api/serve/applications/`), authenticated."""
        resp = requests.get(f"{self.dashboard}{path}", headers=self.auth, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def serve_app(self, name: str = "models") -> dict:
        """Serve's view of one application: status, deployments and their replicas."""
        return self.ray_api("/api/serve/applications/")["applications"][name]

    def serve_apps(self) -> dict[str, dict]:
        return self.ray_api("/api/serve/applications/")["applications"]

    def serve_status(self) -> str:
        """RUNNING when every application is (the Router's and each model's), else the first
        other status."""
        states = [app["status"] for app in self.serve_apps().values()]
        return next((s for s in states if s != "RUNNING"), "RUNNING" if states else "NONE")

    def deployments(self) -> dict[str, dict]:
        """Every application's deployments by name (the Router and one per model)."""
        return {
            name: deployment
            for app in self.serve_apps().values()
            for name, deployment in app["deployments"].items()
        }

    def code_uri(self) -> str:
        """The package of serve/ the deployer shipped (every application's py_modules)."""
        for app in self.serve_apps().values():
            modules = (
                (app.get("deployed_app_config") or {}).get("runtime_env", {}).get("py_modules")
            )
            if modules:
                return modules[0]
        raise AssertionError("no application runs the deployer's code package")

    def serve_deploy(self, config: Path) -> None:
        """`serve deploy` from this machine, as an operator would, with the stack's token, of
        the file as `scripts/deploy.py --render` prints it: with the code package the deployer
        shipped (the nodes' image holds no application code)."""
        from serve.config import RouterUserConfig
        from serve.rollout import render

        raw = render(
            yaml.safe_load(config.read_text()), RouterUserConfig(), code_uri=self.code_uri()
        )
        rendered = config.with_name(f"{config.stem}.deployed.yaml")
        rendered.write_text(yaml.safe_dump(raw, sort_keys=False))
        # The CLI checks the config first, and imports the SLO policy by name to do so.
        path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
        subprocess.run(
            [str(Path(sys.executable).parent / "serve"), "deploy", str(rendered),
             "--address", self.dashboard],
            check=True,
            env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                 "PYTHONPATH": path},
        )  # fmt: skip

    def run(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.compose, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:  # compose's own words in the failure
            raise AssertionError(
                f"{' '.join(result.args)} exited {result.returncode}:\n"
                f"{(result.stdout + result.stderr)[-3000:]}"
            )
        return result

    def containers(self, service: str | None = None, exited: bool = False) -> list[str]:
        """Running containers of the project (or of one service); `exited` adds stopped ones."""
        labels = [f"label=com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"label=com.docker.compose.service={service}")
        args = [arg for label in labels for arg in ("--filter", label)]
        if exited:
            args.append("-a")
        out = subprocess.run(
            ["docker", "ps", "-q", *args], capture_output=True, text=True, check=True
        ).stdout
        return out.split()

    def secret(self, name: str) -> str:
        """A secret file the `secrets` service wrote, as the Ray user on the head reads it."""
        (head,) = self.containers("ray-head")
        return subprocess.run(
            ["docker", "exec", head, "cat", f"/run/secrets/{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def inspect(self, container: str) -> dict:
        out = subprocess.run(
            ["docker", "inspect", container], capture_output=True, text=True, check=True
        ).stdout
        return json.loads(out)[0]

    def addresses(self, container: str) -> set[str]:
        """The container's addresses on its compose networks."""
        networks = self.inspect(container)["NetworkSettings"]["Networks"].values()
        return {net["IPAddress"] for net in networks}

    def ray_targets(self) -> list[dict]:
        """Prometheus's active scrape targets of the `ray` job (one per node)."""
        resp = requests.get(
            f"{self.prometheus}/api/v1/targets", params={"state": "active"}, timeout=30
        )
        return [t for t in resp.json()["data"]["activeTargets"] if t["labels"]["job"] == "ray"]

    def wait_for_ray_targets(self, count: int, timeout_s: float = 90) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        targets: list[dict] = []
        while time.monotonic() < deadline:
            targets = self.ray_targets()
            if len(targets) == count and all(t["health"] == "up" for t in targets):
                return targets
            time.sleep(3)
        raise AssertionError(f"expected {count} healthy ray targets, got {targets}")

    def nodes(self) -> list[dict]:
        nodes = self.ray_api("/api/v0/nodes?limit=1000")["data"]["result"]["result"]
        return [n for n in nodes if n["state"] == "ALIVE"]


def running(stack: Stack, name: str) -> dict[str, str]:
    """Replica id -> node id of the RUNNING replicas of deployment `name`."""
    return {
        r["replica_id"]: r["node_id"]
        for r in stack.deployments()[name]["replicas"]
        if r["state"] == "RUNNING"
    }


def replica_ids(stack: Stack) -> dict[str, set[str]]:
    """Each deployment's serving replicas: RUNNING, or UPDATING (the same replica taking a live
    user_config or autoscaling change)."""
    return {
        name: {r["replica_id"] for r in d["replicas"] if r["state"] in ("RUNNING", "UPDATING")}
        for name, d in stack.deployments().items()
    }


def host_gateway(stack: Stack) -> str:
    """The address `host.docker.internal` (the `locust` scrape job) has in Prometheus's container:
    the host on Docker's default bridge, reachable from containers and not from the network."""
    (prometheus,) = stack.containers("prometheus")
    hosts = subprocess.run(
        ["docker", "exec", prometheus, "cat", "/etc/hosts"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(
        line.split()[0] for line in hosts.splitlines() if "host.docker.internal" in line.split()
    )


class LocustProcess(subprocess.Popen):
    """A Locust run whose output goes to a file next to its CSV stats, not to a pipe: headless
    Locust prints its stats table every few seconds, and a pipe nobody reads until the run ends
    fills up (64 KiB, about two minutes) and blocks Locust mid-run, with its requests in flight
    left for the balancer to close."""

    output_file: Path

    def finish(self, timeout: float | None = None) -> str:
        """Wait for the run's end; its output."""
        self.wait(timeout=timeout)
        return self.output_file.read_text(errors="replace")


def start_locust(stack: Stack, csv_prefix: Path, *args: str) -> LocustProcess:
    """`locust -f loadtest/` headless against the stack's API, writing Locust's CSV stats."""
    output_file = Path(f"{csv_prefix}_output.txt")
    with output_file.open("w") as out:
        process = LocustProcess(
            [
                str(Path(sys.executable).parent / "locust"),
                "-f",
                str(ROOT / "loadtest"),
                "--headless",
                "--host",
                stack.api,
                "--csv",
                str(csv_prefix),
                *args,
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=sigint_default,
        )
    process.output_file = output_file
    return process


def wait_until(predicate, timeout_s: float, every_s: float = 1) -> float | None:
    """Seconds until `predicate()` held, or None after `timeout_s`. A failed HTTP call counts as
    not yet: Ray's dashboard can be briefly unreachable while nodes come and go."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if predicate():
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(every_s)
    return None


def prometheus_value(stack: Stack, expr: str) -> float:
    """The first sample of an instant query, 0 when it returns no series."""
    resp = requests.get(f"{stack.prometheus}/api/v1/query", params={"query": expr}, timeout=30)
    result = resp.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def deploy_config(stack: Stack, config: dict, path: Path) -> None:
    """Write `config` to `path` and `serve deploy` it, as an operator would."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    stack.serve_deploy(path)


def run_job(stack: Stack, entrypoint: str, timeout_s: float) -> str:
    """Run `entrypoint` as a Ray job with tests/e2e/jobs/ as its working directory, through the
    Jobs API (no Ray client in this process); its logs once it SUCCEEDED."""
    client = JobSubmissionClient(stack.dashboard, headers=stack.auth)
    job = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(JOBS)})
    done = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    finished = wait_until(lambda: client.get_job_status(job) in done, timeout_s, every_s=3)
    logs = client.get_job_logs(job)
    assert finished is not None, f"{entrypoint} did not finish in {timeout_s} s: {logs[-3000:]}"
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    return logs


def locust_failures(csv_prefix: Path) -> dict[str, int]:
    """Failures by HTTP status (else by error text) from Locust's `_failures.csv`, e.g.
    {"HTTP 504": 3}."""
    path = Path(f"{csv_prefix}_failures.csv")
    counts: dict[str, int] = {}
    if path.exists():
        with path.open() as failures:
            rows = list(csv.DictReader(failures))
        for row in rows:
            status = re.search(r"HTTP (\d{3})", row["Error"])
            kind = status[0] if status else row["Error"][:80]
            counts[kind] = counts.get(kind, 0) + int(row["Occurrences"])
    return counts


def locust_totals(csv_prefix: Path) -> tuple[int, int, list[str]]:
    """(requests, failures, all rows) from the Aggregated row of Locust's `_stats.csv`."""
    rows = Path(f"{csv_prefix}_stats.csv").read_text().splitlines()
    aggregated = next(line for line in rows if ",Aggregated," in line).split(",")
    return int(aggregated[2]), int(aggregated[3]), rows


@dataclass
class Load:
    csv: Path
    output: str = ""

    def totals(self) -> tuple[int, int, list[str]]:
        return locust_totals(self.csv)

    def max_response_s(self) -> float:
        with Path(f"{self.csv}_stats.csv").open() as stats:
            aggregated = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")
        return float(aggregated["Max Response Time"]) / 1000


@contextmanager
def sentiment_load(stack: Stack, csv_prefix: Path, users: int = 8) -> Iterator[Load]:
    """Locust's SentimentUser through the load balancer while the block runs, then its stats."""
    load = Load(csv_prefix)
    locust = start_locust(
        stack, csv_prefix, "SentimentUser",
        "-u", str(users), "-r", str(users), "-t", "600s", "--exporter-port", "0",
    )  # fmt: skip
    try:
        time.sleep(5)  # requests in flight on both replicas
        yield load
    finally:
        load.output = stop_locust(locust)


def stop_locust(locust: LocustProcess, timeout_s: float = 60) -> str:
    """SIGINT (Locust stops its users and writes its stats), then its output. A Locust that has
    not stopped within `timeout_s` is killed: its `_stats.csv`, rewritten every second, still
    holds the totals."""
    locust.send_signal(signal.SIGINT)
    try:
        return locust.finish(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        locust.kill()
        return locust.finish(timeout=30) + "\n[e2e] Locust killed: it did not stop on SIGINT"


class FiringAlerts:
    """Reads Prometheus's /api/v1/alerts every 2 s in a thread while the block runs: which
    alerts started firing within it, with their labels, and when (seconds after the block
    began). An alert already firing when the block began (same labels, same `activeAt`) does not
    count."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.seen: dict[str, float] = {}  # alertname -> seconds, for messages
        self.seen_at: dict[str, float] = {}  # alertname -> wall-clock time it was first seen
        self._labels: list[dict[str, str]] = []
        self._before: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._started = 0.0

    def _firing(self) -> dict[str, dict[str, str]]:
        """A key (labels + activeAt) -> labels, for every firing alert; empty when Prometheus
        is busy."""
        try:
            alerts = requests.get(f"{self.stack.prometheus}/api/v1/alerts", timeout=10).json()
            return {
                json.dumps([a["labels"], a["activeAt"]], sort_keys=True): a["labels"]
                for a in alerts["data"]["alerts"]
                if a["state"] == "firing"
            }
        except (requests.RequestException, ValueError, KeyError):
            return {}

    def _poll(self) -> None:
        while not self._stop.is_set():
            for key, labels in self._firing().items():
                if key not in self._before:
                    self._before.add(key)
                    self._labels.append(labels)
                    self.seen.setdefault(labels["alertname"], time.monotonic() - self._started)
                    self.seen_at.setdefault(labels["alertname"], time.time())
            self._stop.wait(2)

    def fired(self, name: str, **labels: str) -> bool:
        return any(
            seen["alertname"] == name and all(seen.get(k) == v for k, v in labels.items())
            for seen in self._labels
        )

    def wait_for(self, name: str, timeout_s: float, **labels: str) -> bool:
        """Whether `name`, with at least these labels, started firing within the block."""
        deadline = time.monotonic() + timeout_s
        while not self.fired(name, **labels) and time.monotonic() < deadline:
            time.sleep(1)
        return self.fired(name, **labels)

    def __enter__(self) -> FiringAlerts:
        self._before = set(self._firing())
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def fast_alert_rules() -> Path:
    """A copy of prometheus/ whose alerts wait at most FAST_FOR before firing (`for:`), so the
    fault tests see them fire within their own minute; every expression is unchanged."""
    out = ROOT / "build" / "e2e-prometheus"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(ROOT / "prometheus", out)
    for path in (out / "rules").glob("*.yml"):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "alert" in rule and "for" in rule:
                    rule["for"] = FAST_FOR
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
    for path in [out, *out.rglob("*")]:  # Prometheus runs as nobody
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


# Alertmanager's notifications, received on the stack's network: each POST's arrival time and
# JSON body, one line each on stdout (docker logs).
WEBHOOK_SERVER = """
import http.server, json, time
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        print(json.dumps({"at": time.time(), "body": body}), flush=True)
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 9000), Receiver).serve_forever()
"""


class AlertWebhook:
    """The receiver of ALERT_WEBHOOK_URL: a container on the stack's network, named
    `alert-webhook` there, from the nodes' image; what Alertmanager delivered, read from its log."""

    def __init__(self, stack: Stack) -> None:
        self.name = f"{stack.project}-alert-webhook"
        (head,) = stack.containers("ray-head")
        self.image = stack.inspect(head)["Config"]["Image"]
        self.network = f"{stack.project}_default"

    def start(self) -> None:
        self.stop()
        subprocess.run(
            ["docker", "run", "-d", "--name", self.name, "--network", self.network,
             "--network-alias", "alert-webhook", "--user", "1000", "--cap-drop", "ALL",
             "--no-healthcheck", self.image, "python3", "-c", WEBHOOK_SERVER],
            capture_output=True, check=True,
        )  # fmt: skip

    def stop(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)

    def notifications(self) -> list[tuple[float, dict]]:
        logs = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        out = []
        for line in logs.stdout.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            out.append((event["at"], event["body"]))
        return out

    def delivered(self, name: str, since: float, **labels: str) -> float | None:
        """When the first notification since `since` (wall clock) of `name` firing, with at least
        these labels, arrived; None if none did."""
        for at, body in self.notifications():
            if at < since:
                continue
            for alert in body.get("alerts", []):
                found = alert.get("labels", {})
                if (
                    alert.get("status") == "firing"
                    and found.get("alertname") == name
                    and all(found.get(k) == v for k, v in labels.items())
                ):
                    return at
        return None


@pytest.fixture(scope="module")
def alert_webhook(stack: Stack) -> Iterator[AlertWebhook]:
    """Up while the module runs: gone before `down`, which cannot remove a network in use."""
    webhook = AlertWebhook(stack)
    webhook.start()
    yield webhook
    webhook.stop()


def alertmanager_url() -> str:
    return f"http://127.0.0.1:{E2E_ENV['ALERTMANAGER_PORT']}"


@contextmanager
def silenced(name: str, minutes: int = 30) -> Iterator[str]:
    """A silence of every `name` alert in Alertmanager while the block runs; its id."""
    now = time.time()
    resp = requests.post(
        f"{alertmanager_url()}/api/v2/silences",
        json={
            "matchers": [{"name": "alertname", "value": name, "isRegex": False, "isEqual": True}],
            "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
            "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 60 * minutes)),
            "createdBy": "e2e",
            "comment": "held back by the test that fires it",
        },
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    silence = resp.json()["silenceID"]
    try:
        yield silence
    finally:
        requests.delete(f"{alertmanager_url()}/api/v2/silence/{silence}", timeout=10)


def alertmanager_alerts(name: str) -> list[dict]:
    """The `name` alerts Alertmanager holds, with their state (active, suppressed)."""
    resp = requests.get(
        f"{alertmanager_url()}/api/v2/alerts", params={"filter": f'alertname="{name}"'}, timeout=10
    )
    resp.raise_for_status()
    return resp.json()


@dataclass
class UserStack:
    """What runs under the project a user's own `docker compose up` gets, from before the tier:
    their stack if one is up, else a small one (`prometheus` on the default port, with its
    volumes) started here and removed after the tier."""

    project: str
    containers: list[str]
    volumes: list[str]
    started_here: bool

    @staticmethod
    def listed(kind: str, project: str) -> list[str]:
        label = f"label=com.docker.compose.project={project}"
        args = ["ps", "-q"] if kind == "container" else ["volume", "ls", "-q"]
        return subprocess.run(
            ["docker", *args, "--filter", label], capture_output=True, text=True, check=True
        ).stdout.split()


def user_env() -> dict[str, str]:
    """The environment without the tier's settings: compose as the user runs it."""
    tier = {*E2E_ENV, "COMPOSE_FILE", "RAY_CLUSTER_ADDRESS"}
    return {key: value for key, value in os.environ.items() if key not in tier}


@pytest.fixture(scope="session")
def user_stack() -> Iterator[UserStack]:
    compose = compose_command()
    if not compose or subprocess.run(["docker", "info"], capture_output=True).returncode:
        pytest.skip("no Docker engine or compose here; .ci/run installs and starts them")
    # Without COMPOSE_PROJECT_NAME in .env, compose names the project after the directory.
    project = env_file().get("COMPOSE_PROJECT_NAME") or re.sub(
        r"[^-_a-z0-9]", "", ROOT.name.lower()
    )
    started_here = not UserStack.listed("container", project)
    if started_here:
        subprocess.run(
            [*compose, "up", "-d", "--no-deps", "prometheus"], cwd=ROOT, env=user_env(), check=True
        )
    user = UserStack(
        project,
        UserStack.listed("container", project),
        UserStack.listed("volume", project),
        started_here,
    )
    yield user
    if started_here:
        subprocess.run([*compose, "down", "--volumes"], cwd=ROOT, env=user_env(), check=True)


@pytest.fixture(scope="session")
def stack(pytestconfig: pytest.Config, user_stack: UserStack) -> Iterator[Stack]:
    compose = compose_command()
    env = env_file()
    os.environ.update(E2E_ENV)  # every compose call and script of the session
    cluster = open_to_host_b()
    os.environ.update(cluster)
    stack = Stack(
        project=E2E_ENV["COMPOSE_PROJECT_NAME"],
        compose=compose,
        api=f"http://127.0.0.1:{E2E_ENV['API_PORT']}",
        dashboard=f"http://127.0.0.1:{E2E_ENV['RAY_DASHBOARD_PORT']}",
        prometheus=f"http://127.0.0.1:{E2E_ENV['PROMETHEUS_PORT']}",
        workers=int(env.get("RAY_WORKERS", "2")),
    )
    # From nothing: whatever a previous run left behind goes first. Progress is shown live.
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        if "compose.airgap.yaml" in env.get("COMPOSE_FILE", ""):
            print("\n[e2e] air-gapped stack (scripts/airgap-prepare.sh): runs without Grafana")
        # E2E_REUSE_STACK=1 (by hand, never in CI): keep a stack a previous run left up.
        reuse = os.environ.get("E2E_REUSE_STACK") == "1"
        if not reuse:
            subprocess.run([str(ROOT / "scripts" / "down.sh")], cwd=ROOT, check=True)
        # Every compose call of the session (fixtures and tests) mounts the fast-alert copy.
        os.environ["PROMETHEUS_CONFIG_DIR"] = str(fast_alert_rules())
        # docker-compose 1.29 ignores `pull_policy: build` when the image exists, so the image
        # is brought up to date first; Compose v2 does this within `up`.
        subprocess.run([*compose, "build", "models", "ray-head"], cwd=ROOT, check=True)
        print(
            f"[e2e] plain `docker compose up -d` as project {stack.project}, no secrets given",
            flush=True,
        )
        plain = subprocess.run([*compose, "up", "-d"], cwd=ROOT) if not reuse else None
        up = (
            subprocess.run([str(ROOT / "scripts" / "up.sh")], cwd=ROOT)
            if plain is None or not plain.returncode
            else plain
        )
    if up.returncode != 0:
        subprocess.run([*compose, "ps", "-a"], cwd=ROOT)
        subprocess.run([str(ROOT / "scripts" / "down.sh")], cwd=ROOT)
        pytest.fail(f"docker compose up -d / scripts/up.sh exited {up.returncode}")
    stack.token = stack.secret("ray_auth_token")
    stack.first_start_logs = stack.run("logs", "--no-color").stdout
    yield stack
    if os.environ.get("E2E_KEEP_STACK") != "1":
        subprocess.run([str(ROOT / "scripts" / "down.sh")], cwd=ROOT)
        if cluster:
            subprocess.run(["ip", "link", "del", HOST_LINK[0]], capture_output=True)
