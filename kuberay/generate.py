"""Write kuberay/, the stack as KubeRay and Prometheus Operator manifests, from the compose files.

Everything the compose stack sets is read from where it sets it: the Serve config, Ray's env and
`ray start` flags (compose.yaml, images/ray-overhead.env), the model fetch step, Redis, the scrape
jobs (prometheus/prometheus.yml), the rules (prometheus/rules/) and the dashboards (grafana/). So
the two deployments cannot drift: rerun after changing those files (`--check`, and a unit test,
fail while kuberay/ disagrees with them).

    python kuberay/generate.py            # --image ray-serve-cluster/ray:latest --namespace ...
    python kuberay/generate.py --check    # exit 1, listing the files that differ
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
NAME = "ray-serve-cluster"
SECRET = NAME
# Names of keys in the Secret, not values: the one KubeRay reads from authOptions.secretName.
TOKEN_KEY = "auth_token"  # nosec B105
REDIS_KEY = "redis_password"
SECRETS_ENV = "secrets.env"
POD_LABELS = {"app.kubernetes.io/name": "ray", "app.kubernetes.io/part-of": NAME}
# Compose's Ray services and the ray.io/node-type KubeRay gives their pods.
NODE_TYPES = {"ray-head": "head", "ray-worker": "worker"}
# Port names of the scrape jobs (KubeRay's `metrics`, and its docs' names for the head's others).
PORT_NAMES = {"ray": "metrics", "ray-autoscaler": "as-metrics", "ray-dashboard": "dash-metrics"}
# Compose sets no limit on the head: GCS, dashboard, Serve controller and proxy, no replicas.
HEAD_RESOURCES = {"cpu": "2", "memory": "4Gi"}
REDIS_STORAGE = "1Gi"
# Compose variables that Kubernetes provides otherwise: KubeRay passes the head's address to
# `ray start`; the token comes from the Secret (RAY_AUTH_TOKEN); gcsFaultToleranceOptions names
# Redis; the Grafana and Prometheus hosts are compose's, set them for the cluster's own.
NOT_CARRIED = {
    "RAY_HEAD_ADDRESS",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_REDIS_ADDRESS",
    "RAY_GRAFANA_HOST",
    "RAY_GRAFANA_IFRAME_HOST",
    "RAY_PROMETHEUS_HOST",
    "RAY_PROMETHEUS_NAME",
}
# `ray start` flags KubeRay sets itself (address; Redis credentials from gcsFaultToleranceOptions).
KUBERAY_PARAMS = {"address", "node-ip-address", "redis-username", "redis-password"}
# Pinned in compose for workers on other hosts (the port table, docs/beyond-one-host.md); every
# pod has an address of its own, and KubeRay's probes expect the dashboard agent on its default
# port (52365).
HOST_PORT_PARAMS = {
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-grpc-port",
    "dashboard-agent-listen-port",
    "runtime-env-agent-port",
    "min-worker-port",
    "max-worker-port",
}
CONFIGMAP_LIMIT = 1024 * 1024
# A memory-backed volume is mounted there (Ray's object store), not a temp file.
SHM_PATH = "/dev/shm"  # nosec B108
DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")
VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-+?])([^}]*))?\}|\$(\w+)")

Doc = dict[str, Any]


class ScrapeJob(NamedTuple):
    """A Prometheus job of the compose stack that scrapes Ray nodes."""

    name: str
    node_types: list[str]
    port: int
    interval: str | None


class Sources(NamedTuple):
    """The stack's files, parsed, with compose's `${VAR:-default}` resolved to the defaults."""

    compose: dict
    serve_config: dict
    overhead_env: dict[str, str]
    prometheus: dict
    providers: dict
    ray_version: str
    root: Path


def interpolate(node: Any) -> Any:
    """A compose value with its variables at their defaults, as compose sees it with no .env."""
    if isinstance(node, dict):
        return {k: interpolate(v) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v) for v in node]
    if not isinstance(node, str):
        return node

    def default(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group(2) not in ("-", ":-", "+", ":+"):
            raise ValueError(f"compose.yaml: {match.group(0)} has no default")
        return match.group(3) if "-" in match.group(2) else ""

    return VARIABLE.sub(default, node)


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as compose's `env_file` reads them."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def load_sources(root: Path) -> Sources:
    compose = interpolate(yaml.safe_load((root / "compose.yaml").read_text()))
    lock = (root / "requirements.lock").read_text()
    return Sources(
        compose=compose,
        serve_config=yaml.safe_load((root / "serve" / "serve_config.yaml").read_text()),
        overhead_env=env_file(root / compose["services"]["ray-worker"]["env_file"]),
        prometheus=yaml.safe_load((root / "prometheus" / "prometheus.yml").read_text()),
        providers=yaml.safe_load(
            (root / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text()
        ),
        ray_version=re.search(r"^ray==(\S+)", lock, re.MULTILINE).group(1),
        root=root,
    )


def service(src: Sources, name: str) -> dict:
    return src.compose["services"][name]


def secret_ref(key: str) -> Doc:
    return {"secretKeyRef": {"name": SECRET, "key": key}}


def secret_env(name: str, key: str) -> Doc:
    return {"name": name, "valueFrom": secret_ref(key)}


def node_env(src: Sources, node: str) -> list[Doc]:
    """A Ray node's env: images/ray-overhead.env, then the service's `environment` over it."""
    env = {**src.overhead_env, **service(src, node)["environment"]}
    carried = [{"name": k, "value": str(v)} for k, v in env.items() if k not in NOT_CARRIED]
    return [*carried, secret_env("RAY_AUTH_TOKEN", TOKEN_KEY)]


def ray_start_params(command: str | list[str]) -> dict[str, str]:
    """The `--key=value` flags of a compose `ray start` command, as KubeRay's rayStartParams; those
    the shell computes (a secret, an address) and those KubeRay sets are left out."""
    line = command[-1] if isinstance(command, list) else command
    params = {}
    for arg in shlex.split(line):
        key, sep, value = arg.removeprefix("--").partition("=")
        if (
            arg.startswith("--")
            and sep
            and "$" not in value
            and key not in KUBERAY_PARAMS | HOST_PORT_PARAMS
        ):
            params[key] = value
    if "resources" in params:  # KubeRay puts it on a shell line: keep the JSON one word
        params["resources"] = f"'{json.dumps(json.loads(params['resources']))}'"
    return params


def quantity(size: str) -> str:
    """Docker's binary size (`2gb`, `6g`) as a Kubernetes quantity (`2Gi`)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", size.lower())
    if not match:
        raise ValueError(f"compose.yaml: size {size!r} is not <number>[k|m|g][b]")
    return match.group(1) + {"": "", "k": "Ki", "m": "Mi", "g": "Gi"}[match.group(2)]


def seconds(duration: str) -> int:
    return int(duration.removesuffix("s"))


def scrape_jobs(src: Sources) -> list[ScrapeJob]:
    """prometheus.yml's jobs whose targets are Ray nodes: which node types, which port."""
    jobs = []
    for job in src.prometheus["scrape_configs"]:
        targets = [t for c in job.get("static_configs", []) for t in c["targets"]]
        targets += [f"{n}:{c['port']}" for c in job.get("dns_sd_configs", []) for n in c["names"]]
        hosts = [t.rsplit(":", 1) for t in targets]
        nodes = sorted({NODE_TYPES[h] for h, _ in hosts if h in NODE_TYPES})
        if nodes:
            (port,) = {int(p) for h, p in hosts if h in NODE_TYPES}
            jobs.append(ScrapeJob(job["job_name"], nodes, port, job.get("scrape_interval")))
    return jobs


def metrics_ports(src: Sources, node_type: str) -> list[Doc]:
    return [
        {"name": PORT_NAMES[job.name], "containerPort": job.port}
        for job in scrape_jobs(src)
        if node_type in job.node_types
    ]


def model_dir(src: Sources) -> str:
    return src.serve_config["applications"][0]["args"]["api"]["model_dir"]


# KubeRay's own probes run `wget`, which the image (python:3.11-slim) lacks: the same checks, in
# Python. Both nodes: the raylet, through the dashboard agent on its default port; the head also
# the GCS, a worker's readiness also its Serve ingress (what KubeRay checks for a RayService).
HEALTH_URLS = {
    "ray-head": [
        "http://localhost:52365/api/local_raylet_healthz",
        "http://localhost:8265/api/gcs_healthz",
    ],
    "ray-worker": ["http://localhost:52365/api/local_raylet_healthz"],
}
SERVE_HEALTH_URL = "http://localhost:8000/-/healthz"


def probe(urls: list[str], **timing: int) -> Doc:
    """An exec probe that fails unless every URL answers 2xx within the timeout."""
    check = f"import urllib.request as u; [u.urlopen(x, timeout=2) for x in {urls!r}]"
    return {"exec": {"command": ["python3", "-c", check]}, "timeoutSeconds": 3, **timing}


def probes(node: str) -> Doc:
    """Liveness as lenient as KubeRay's (a restarting head's GCS must not get workers killed)."""
    ready = HEALTH_URLS[node] + ([SERVE_HEALTH_URL] if node == "ray-worker" else [])
    return {
        "livenessProbe": probe(
            HEALTH_URLS[node], initialDelaySeconds=30, periodSeconds=5, failureThreshold=120
        ),
        "readinessProbe": probe(
            ready, initialDelaySeconds=10, periodSeconds=5, failureThreshold=10
        ),
    }


def pod_template(src: Sources, node: str, container: Doc, models: Doc | None = None) -> Doc:
    """A Ray pod: the carried env, the metrics ports, /dev/shm in memory (Ray's object store) and,
    where replicas run, the models fetched by an init container, as compose's `models` step."""
    shm = {"name": "shared-mem", "emptyDir": {"medium": "Memory"}}
    shm["emptyDir"]["sizeLimit"] = quantity(service(src, node)["shm_size"])
    container = {
        "name": node,
        **container,
        "env": node_env(src, node),
        "ports": metrics_ports(src, NODE_TYPES[node]),
        **probes(node),
        # Ray's object store, in the pod's memory-backed volume (not a temp file).
        "volumeMounts": [{"name": "shared-mem", "mountPath": SHM_PATH}],
    }
    # The image's user is numeric (uid 1000), so the kubelet can verify it is not root.
    spec: Doc = {"securityContext": {"runAsNonRoot": True}, "containers": [container]}
    spec["volumes"] = [shm]
    if models:
        fetch = service(src, "models")
        mount = {"name": "models", "mountPath": model_dir(src)}
        spec["initContainers"] = [
            {
                "name": "fetch-models",
                **models,
                "command": fetch["command"],
                "env": [{"name": k, "value": str(v)} for k, v in fetch["environment"].items()],
                "volumeMounts": [mount],
            }
        ]
        container["volumeMounts"].append({**mount, "readOnly": True})
        spec["volumes"].append({"name": "models", "emptyDir": {}})
    return {"metadata": {"labels": dict(POD_LABELS)}, "spec": spec}


def head_group(src: Sources, image: str) -> Doc:
    resources = {"requests": HEAD_RESOURCES, "limits": HEAD_RESOURCES}
    return {
        "rayStartParams": ray_start_params(service(src, "ray-head")["command"]),
        "template": pod_template(src, "ray-head", {"image": image, "resources": resources}),
    }


def worker_group(src: Sources, image: str) -> Doc:
    """The one worker group: compose's worker count as the minimum, and as many more as the Serve
    deployments need at their max_replicas (autoscaling adds them)."""
    worker = service(src, "ray-worker")
    params = ray_start_params(worker["command"])
    size = {"cpu": params["num-cpus"], "memory": quantity(worker["mem_limit"])}
    container = {"image": image, "resources": {"requests": size, "limits": size}}
    minimum = int(worker["deploy"]["replicas"])
    return {
        "groupName": NODE_TYPES["ray-worker"],
        "replicas": minimum,
        "minReplicas": minimum,
        "maxReplicas": max(minimum, math.ceil(serve_cpus(src) / float(params["num-cpus"]))),
        "rayStartParams": params,
        "template": pod_template(src, "ray-worker", container, models=container),
    }


def serve_cpus(src: Sources) -> float:
    """The CPUs every Serve deployment takes at its largest replica count."""
    total = 0.0
    for app in src.serve_config["applications"]:
        for d in app.get("deployments", []):
            replicas = (d.get("autoscaling_config") or {}).get(
                "max_replicas", d.get("num_replicas")
            )
            total += (replicas or 1) * d.get("ray_actor_options", {}).get("num_cpus", 1)
    return total


def redis_address(src: Sources) -> str:
    return service(src, "ray-head")["environment"]["RAY_REDIS_ADDRESS"]


def rayservice(src: Sources, image: str) -> Doc:
    cluster = {
        "rayVersion": src.ray_version,
        # The autoscaler adds worker pods (within min/max) for the replicas Serve autoscaling asks.
        "enableInTreeAutoscaling": True,
        # Token auth, with our Secret: KubeRay also gives it to the autoscaler and uses it itself.
        "authOptions": {"mode": "token", "secretName": SECRET},
        "gcsFaultToleranceOptions": {
            "redisAddress": redis_address(src),
            "redisPassword": {"valueFrom": secret_ref(REDIS_KEY)},
        },
        "headGroupSpec": head_group(src, image),
        "workerGroupSpecs": [worker_group(src, image)],
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": NAME, "labels": part_of()},
        "spec": {"serveConfigV2": dump([src.serve_config]), "rayClusterConfig": cluster},
    }


def part_of() -> dict[str, str]:
    return {"app.kubernetes.io/part-of": NAME}


def redis(src: Sources) -> list[Doc]:
    """Compose's `redis`: append-only data on a volume, the password from the Secret, written to a
    config file so it is on no command line."""
    compose = service(src, "redis")
    host, port = redis_address(src).split(":")
    (volume,) = [v for v in compose["volumes"] if not v.startswith("secrets:")]
    claim, data = volume.split(":")
    labels = {"app.kubernetes.io/name": host, **part_of()}
    args = [a for a in compose["command"][1:] if not a.startswith("/run/secrets/")]
    start = 'umask 077 && printf "requirepass %s\\n" "$REDIS_PASSWORD" > /tmp/redis.conf'
    check = compose["healthcheck"]
    probe = {
        "exec": {
            "command": ["sh", "-c", 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ping | grep -q PONG']
        },
        "periodSeconds": seconds(check["interval"]),
        "timeoutSeconds": seconds(check["timeout"]),
        "failureThreshold": check["retries"],
    }
    container = {
        "name": host,
        "image": compose["image"],
        "command": ["sh", "-c", f'{start} && exec redis-server /tmp/redis.conf "$@"', "redis"],
        "args": args,
        "env": [secret_env("REDIS_PASSWORD", REDIS_KEY)],
        "ports": [{"name": "redis", "containerPort": int(port)}],
        "readinessProbe": probe,
        "livenessProbe": probe,
        "volumeMounts": [{"name": "data", "mountPath": data}],
    }
    pod = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 999,
            "runAsGroup": 999,
            "fsGroup": 999,
        },
        "containers": [container],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
    }
    return [
        core(
            "v1",
            "PersistentVolumeClaim",
            claim,
            labels,
            accessModes=["ReadWriteOnce"],
            resources={"requests": {"storage": REDIS_STORAGE}},
        ),
        # Recreate: one pod at a time on the ReadWriteOnce volume.
        core(
            "apps/v1",
            "Deployment",
            host,
            labels,
            replicas=1,
            strategy={"type": "Recreate"},
            selector={"matchLabels": labels},
            template={"metadata": {"labels": labels}, "spec": pod},
        ),
        core(
            "v1",
            "Service",
            host,
            labels,
            selector=labels,
            ports=[{"name": "redis", "port": int(port), "targetPort": "redis"}],
        ),
    ]


def core(api: str, kind: str, name: str, labels: dict[str, str], **spec: Any) -> Doc:
    metadata = {"name": name, "labels": labels}
    return {"apiVersion": api, "kind": kind, "metadata": metadata, "spec": spec}


def podmonitors(src: Sources) -> list[Doc]:
    """One PodMonitor per Ray job of prometheus.yml, with its job name, so the rules and the
    dashboards (which select job="ray") read the same series."""
    monitors = []
    for job in scrape_jobs(src):
        endpoint = {
            "port": PORT_NAMES[job.name],
            "relabelings": [{"action": "replace", "targetLabel": "job", "replacement": job.name}],
        }
        if job.interval:
            endpoint["interval"] = job.interval
        selector = {
            "matchLabels": dict(POD_LABELS),
            "matchExpressions": [
                {"key": "ray.io/node-type", "operator": "In", "values": job.node_types}
            ],
        }
        monitors.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PodMonitor",
                "metadata": {"name": job.name, "labels": part_of()},
                "spec": {"selector": selector, "podMetricsEndpoints": [endpoint]},
            }
        )
    return monitors


def rule_files(root: Path) -> list[Path]:
    return sorted((root / "prometheus" / "rules").glob("*.yml"))


def prometheus_rules(src: Sources) -> list[Doc]:
    """A PrometheusRule per rule file, its groups verbatim: alerts.yml and recording.yml share
    group names, which one rule file (what the operator makes of a PrometheusRule) may not."""
    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": f"{NAME}-{path.stem.replace('_', '-')}", "labels": part_of()},
            "spec": {"groups": yaml.safe_load(path.read_text())["groups"]},
        }
        for path in rule_files(src.root)
    ]


def dashboard_files(root: Path) -> list[Path]:
    return sorted((root / "grafana" / "dashboards").rglob("*.json"))


def dashboards(src: Sources) -> list[Doc]:
    """A ConfigMap per dashboard, for the Grafana chart's sidecar, in the folder compose's Grafana
    provisions it to."""
    folders = {Path(p["options"]["path"]).name: p["folder"] for p in src.providers["providers"]}
    maps = []
    for path in dashboard_files(src.root):
        name = f"grafana-dashboard-{path.stem.replace('_', '-')}"
        text = path.read_text()
        if (
            not DNS_NAME.fullmatch(name)
            or len(name) > 253
            or not CONFIGMAP_KEY.fullmatch(path.name)
        ):
            raise SystemExit(f"{path}: {name!r} / {path.name!r} is no valid ConfigMap name / key")
        if len(text.encode()) > CONFIGMAP_LIMIT:
            raise SystemExit(f"{path}: {len(text.encode())} bytes, over a ConfigMap's 1 MiB")
        metadata = {
            "name": name,
            "labels": {"grafana_dashboard": "1", **part_of()},
            "annotations": {"grafana_folder": folders[path.parent.name]},
        }
        maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata,
                "data": {path.name: text},
            }
        )
    return maps


def kustomization(namespace: str, resources: list[str]) -> Doc:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": resources,
        "secretGenerator": [{"name": SECRET, "envs": [SECRETS_ENV]}],
        # A fixed name: the RayService and Redis refer to it.
        "generatorOptions": {"disableNameSuffixHash": True},
    }


def secrets_example() -> str:
    return (
        f"# The secretGenerator of kustomization.yaml makes the Secret {SECRET} from\n"
        f"# kuberay/{SECRETS_ENV}, which git ignores. Create it with fresh values:\n"
        f"#   printf '{TOKEN_KEY}=%s\\n{REDIS_KEY}=%s\\n' \"$(openssl rand -hex 32)\" "
        f'"$(openssl rand -hex 32)" > kuberay/{SECRETS_ENV}\n'
        f"{TOKEN_KEY}=\n{REDIS_KEY}=\n"
    )


class Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (dashboards, PromQL), and no anchors: the same dict
    used twice is written twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


Dumper.add_representer(
    str,
    lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def dump(docs: list[Doc]) -> str:
    return yaml.dump_all(docs, Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True)


def header(sources: list[str], *notes: str) -> str:
    text = f"Generated by kuberay/generate.py from {', '.join(sources)}: do not edit."
    lines = [*textwrap.wrap(text, 98, break_on_hyphens=False), *notes]
    return "".join(f"# {line}\n" for line in lines)


def render(root: Path, image: str, namespace: str) -> dict[str, str]:
    """Every file of kuberay/, by name."""
    src = load_sources(root)
    rules = [str(p.relative_to(root)) for p in rule_files(root)]
    ray = ["compose.yaml", "images/ray-overhead.env", "serve/serve_config.yaml"]
    files = {
        "rayservice.yaml": header(
            [*ray, "prometheus/prometheus.yml", "requirements.lock"],
            f"Image {image} (--image): push it to a registry the cluster pulls from.",
        )
        + dump([rayservice(src, image)]),
        "redis.yaml": header(["compose.yaml"]) + dump(redis(src)),
        "podmonitors.yaml": header(["prometheus/prometheus.yml"]) + dump(podmonitors(src)),
        "prometheusrule.yaml": header(rules) + dump(prometheus_rules(src)),
        "grafana-dashboards.yaml": header(
            ["grafana/dashboards/", "grafana/provisioning/dashboards/dashboards.yml"]
        )
        + dump(dashboards(src)),
    }
    files["kustomization.yaml"] = header(["the manifests beside it"]) + dump(
        [kustomization(namespace, sorted(files))]
    )
    files[f"{SECRETS_ENV}.example"] = (
        header(["the Secret keys the manifests use"]) + secrets_example()
    )
    return files


def stale(files: dict[str, str], out: Path) -> list[str]:
    return [
        n for n, text in files.items() if not (out / n).is_file() or (out / n).read_text() != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The application image: KubeRay deploys the Serve config as written, with the code in the
    # image (compose's nodes run the node image and get the code from the deployer).
    image = load_sources(ROOT).compose["services"]["models"]["image"]
    parser.add_argument("--image", default=image, help="pushed where the cluster pulls from")
    parser.add_argument("--namespace", default=NAME)
    parser.add_argument("--out", type=Path, default=ROOT / "kuberay")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    files = render(ROOT, args.image, args.namespace)
    if args.check:
        differ = stale(files, args.out)
        for name in differ:
            print(f"{args.out / name} differs: run python kuberay/generate.py", file=sys.stderr)
        return 1 if differ else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
