"""Locust's live stats as Prometheus metrics, so load and replicas share one time axis in Grafana.

Started on the master (or a local run) at `--exporter-host`:`--exporter-port`
(LOCUST_EXPORTER_HOST, default 127.0.0.1: this machine only; LOCUST_EXPORTER_PORT, default 9646;
0 disables it). The compose `locust` service binds 0.0.0.0 inside its container, where the stack's
Prometheus reaches it. A Locust on the host is scraped at `host.docker.internal:9646`, the host's
address on Docker's default bridge (docker0, usually 172.17.0.1), so bind the exporter to that
address, which is still not the outside network:

    locust --exporter-host "$(ip -4 -o addr show docker0 | awk '{print $4}' | cut -d/ -f1)"

Values are read from Locust's stats at scrape time by a prometheus-client collector:

- `locust_users`: running users
- `locust_requests_total`, `locust_failures_total`: per request name and method (counters)
- `locust_requests_per_second`, `locust_failures_per_second`: current rates, per name and method
- `locust_response_time_ms{quantile}`: current response-time percentiles, per name and method
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator

import gevent
from gevent.pywsgi import WSGIServer
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner
from prometheus_client import make_wsgi_app
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)
QUANTILES = (0.5, 0.95, 0.99)
DEFAULT_HOST = "127.0.0.1"


class LocustCollector(Collector):
    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        runner = self.environment.runner
        if runner is None:
            return
        users = GaugeMetricFamily("locust_users", "Running Locust users.")
        users.add_metric([], runner.user_count)
        yield users

        labels = ["name", "method"]
        requests = CounterMetricFamily("locust_requests", "Requests sent.", labels=labels)
        failures = CounterMetricFamily("locust_failures", "Requests that failed.", labels=labels)
        rps = GaugeMetricFamily(
            "locust_requests_per_second", "Current request rate.", labels=labels
        )
        fps = GaugeMetricFamily(
            "locust_failures_per_second", "Current failure rate.", labels=labels
        )
        latency = GaugeMetricFamily(
            "locust_response_time_ms",
            "Current response-time percentiles (last 10 s).",
            labels=[*labels, "quantile"],
        )
        for entry in runner.stats.entries.values():
            key = [entry.name, entry.method or ""]
            requests.add_metric(key, entry.num_requests)
            failures.add_metric(key, entry.num_failures)
            rps.add_metric(key, entry.current_rps)
            fps.add_metric(key, entry.current_fail_per_sec)
            for q in QUANTILES:
                value = entry.get_current_response_time_percentile(q)
                if value is not None:
                    latency.add_metric([*key, str(q)], value)
        yield from (requests, failures, rps, fps, latency)


@events.init_command_line_parser.add_listener
def add_exporter_option(parser) -> None:
    parser.add_argument(
        "--exporter-port",
        type=int,
        default=9646,
        env_var="LOCUST_EXPORTER_PORT",
        help="Port of the Prometheus exporter of Locust's stats (0: off)",
    )
    parser.add_argument(
        "--exporter-host",
        default=DEFAULT_HOST,
        env_var="LOCUST_EXPORTER_HOST",
        help="Address the exporter binds to (default 127.0.0.1; 0.0.0.0: all interfaces)",
    )


@events.init.add_listener
def start_exporter(environment: Environment, **_: object) -> None:
    port = getattr(environment.parsed_options, "exporter_port", 0)
    if not port or isinstance(environment.runner, WorkerRunner):
        return
    # An empty value (compose's `${VAR:-}`) keeps the local default rather than all interfaces.
    host = getattr(environment.parsed_options, "exporter_host", "") or DEFAULT_HOST
    REGISTRY.register(LocustCollector(environment))
    # gevent's server, as Locust's web UI uses, rather than prometheus_client's start_http_server:
    # a Ctrl+C (SIGINT, compose's stop signal) that lands while a scrape is being served then
    # still reaches Locust's shutdown; the wsgiref handler behind start_http_server swallows it.
    WSGIServer((host, port), make_wsgi_app(), log=None).start()
    logger.info("Prometheus exporter of Locust stats on %s:%d/metrics", host, port)
    # Python raises a Ctrl+C's KeyboardInterrupt in whichever greenlet runs when it lands; in one
    # serving a request (under a steady scrape) it could end there and Locust ran on. Taken by
    # gevent's loop instead, it is thrown into the main greenlet, where Locust's shutdown waits
    # for it, as for SIGTERM.
    main = gevent.getcurrent()
    gevent.signal_handler(signal.SIGINT, lambda: main.throw(KeyboardInterrupt))
