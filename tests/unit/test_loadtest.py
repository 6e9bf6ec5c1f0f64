"""loadtest/: shapes, users and the exporter, checked in a separate pytest process (see
locust_checks.py for why), and real `locust` processes that must stay on this machine."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.client import HTTPException
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import ROOT, sigint_default

LOCUST = Path(sys.executable).parent / "locust"
PROC_NET = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
TCP_LISTEN = "0A"


def test_loadtest_checks_pass_in_their_own_process() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "unit" / "locust_checks.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def locust_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without LOCUST_* and API_PORT, and a HOME without ~/.locust.conf, so only
    the repository's locust.conf and `extra` configure the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_") and k != "API_PORT"}
    return {**env, "HOME": str(home), **extra}


def _address(hex_addr: str) -> str:
    """/proc/net/tcp{,6} addresses are 32-bit words in host (little-endian) order."""
    raw = b"".join(bytes.fromhex(hex_addr[i : i + 8])[::-1] for i in range(0, len(hex_addr), 8))
    return str(ipaddress.ip_address(raw))


def listeners(port: int) -> dict[str, str]:
    """Socket inode -> local address of every TCP socket listening on `port`, IPv4 and IPv6."""
    found = {}
    for table in PROC_NET:
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            addr, port_hex = fields[1].split(":")
            if fields[3] == TCP_LISTEN and int(port_hex, 16) == port:
                found[fields[9]] = _address(addr)
    return found


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def template_args(page: str) -> dict:
    """The JSON the web UI embeds in its page (`window.templateArgs = {...}`)."""
    start = page.index("templateArgs = ") + len("templateArgs = ")
    return json.JSONDecoder().raw_decode(page, start)[0]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:  # only 127.0.0.1 here
        return resp.read().decode()


def start_locust(argv: list[str], cwd: Path, env: dict[str, str], *ports: int) -> subprocess.Popen:
    """`locust *argv` with its web UI (no run starts), once `ports` listen."""
    proc = subprocess.Popen(
        [str(LOCUST), *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=sigint_default,
    )
    deadline = time.monotonic() + 60
    while not all(listeners(port) for port in ports):
        assert proc.poll() is None, f"locust exited {proc.returncode}: {stop(proc)[-3000:]}"
        assert time.monotonic() < deadline, f"no listeners after 60 s: {stop(proc)[-3000:]}"
        time.sleep(0.2)
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    """Locust's clean shutdown; its output. SIGTERM by default: gevent handles it outside any
    request, so it cannot race one (Ctrl+C during scrapes has a test of its own)."""
    proc.send_signal(sig)
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    return output


@pytest.mark.skipif(not PROC_NET[0].exists(), reason="reads the kernel's socket table in /proc")
@pytest.mark.parametrize(
    ("argv", "api_port_from"),
    [(["-f", "loadtest/"], "env"), ([], "env"), ([], "dotenv")],
    ids=["locust -f loadtest/", "locust", "locust with API_PORT from .env"],
)
def test_locust_on_the_host_stays_local(
    tmp_path: Path, argv: list[str], api_port_from: str
) -> None:
    """locust.conf binds the web UI to 127.0.0.1, the exporter binds there by default, and the
    target is the API published on 127.0.0.1 at API_PORT. The web UI never starts a run, so
    nothing is sent to the target."""
    web_port, exporter_port, api_port = free_port(), free_port(), free_port()
    home = tmp_path / "home"
    home.mkdir()
    cwd, env = ROOT, locust_env(home, API_PORT=str(api_port))
    if api_port_from == "dotenv":  # a copy of the checkout's Locust files beside their own .env
        cwd = tmp_path / "checkout"
        shutil.copytree(
            ROOT / "loadtest", cwd / "loadtest", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copy(ROOT / "locust.conf", cwd)
        (cwd / ".env").write_text(f"BIND_ADDRESS=127.0.0.1\nAPI_PORT={api_port}\n")
        env = locust_env(home)
    argv = [*argv, "--web-port", str(web_port), "--exporter-port", str(exporter_port)]
    proc = start_locust(argv, cwd, env, web_port, exporter_port)
    try:
        ours = socket_inodes(proc.pid)
        for port in (web_port, exporter_port):
            sockets = listeners(port)
            assert set(sockets.values()) == {"127.0.0.1"}, (port, sockets)
            assert set(sockets) <= ours, f"port {port} is held by another process"
        page = template_args(get(f"http://127.0.0.1:{web_port}/"))
        assert page["host"] == f"http://127.0.0.1:{api_port}"
        assert page["available_shape_classes"] == ["Default", "ShapePicker"]
        assert "locust_users 0.0" in get(f"http://127.0.0.1:{exporter_port}/metrics")
    finally:
        output = stop(proc)
    assert proc.returncode == 0, output[-3000:]


@pytest.mark.skipif(not PROC_NET[0].exists(), reason="reads the kernel's socket table in /proc")
def test_ctrl_c_while_prometheus_scrapes_stops_locust(tmp_path: Path) -> None:
    """SIGINT is how a run ends (Ctrl+C, the compose service's stop_signal); one that arrives
    while the exporter serves a scrape must still shut Locust down."""
    web_port, exporter_port = free_port(), free_port()
    argv = ["--web-port", str(web_port), "--exporter-port", str(exporter_port)]
    proc = start_locust(argv, ROOT, locust_env(tmp_path), web_port, exporter_port)
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError, HTTPException):  # Locust is shutting down
                get(f"http://127.0.0.1:{exporter_port}/metrics")

    scrapers = [threading.Thread(target=scrape) for _ in range(4)]
    for thread in scrapers:
        thread.start()
    try:
        time.sleep(0.5)
        output = stop(proc, signal.SIGINT)
    finally:
        done.set()
        for thread in scrapers:
            thread.join()
    assert proc.returncode == 0, output[-3000:]


class FakeApi(BaseHTTPRequestHandler):
    """Answers every POST /predict with the fields all three users expect."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"label": "POSITIVE", "embedding": [0.0], "summary": "s"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("shape", "users"), [("step", 2), ("none", 3)])
def test_headless_run_from_locust_variables(
    tmp_path: Path, fake_api: str, shape: str, users: int
) -> None:
    """The compose service's path without --class-picker: `--host` and LOCUST_* variables only,
    and the shape picker's curve (step starts at its 2 base users) or -u/-r/-t (`none`) drives
    the users until LOCUST_RUN_TIME. Exit code 0 means every request succeeded."""
    env = locust_env(
        tmp_path,
        API_PORT=str(free_port()),  # --host must win over it
        LOCUST_SHAPE=shape,
        LOCUST_HEADLESS="true",
        LOCUST_RUN_TIME="3s",
        LOCUST_USERS="3",
        LOCUST_SPAWN_RATE="10",
        LOCUST_EXPORTER_PORT="0",
    )
    started = time.monotonic()
    result = subprocess.run(
        [str(LOCUST), "-f", "loadtest/", "--host", fake_api],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"Shape test updating to {users} users" in output, output[-3000:]
    assert f"({users} total users)" in output, output[-3000:]
    assert time.monotonic() - started < 30, "LOCUST_RUN_TIME did not end the run"


# Run with SIGINT ignored, as everything a background job of a non-interactive shell starts is
# (`nohup bash .ci/run &`, cron, many CI runners): the e2e tier's load helper must still stop
# its Locust with SIGINT and read the stats it wrote, not wait out its timeout and kill it.
IGNORING_SIGINT = """
import signal, sys, time
from pathlib import Path
from tests.e2e.conftest import Stack, sentiment_load
assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
stack = Stack("none", [], api=sys.argv[1], dashboard="", prometheus="", workers=0)
started = time.monotonic()
with sentiment_load(stack, Path(sys.argv[2]), users=2) as load:
    pass
sent, failed, _ = load.totals()
print("RESULT", sent, failed, round(time.monotonic() - started), "Locust killed" in load.output)
"""


def test_e2e_load_helper_stops_locust_when_sigint_is_ignored(tmp_path: Path, fake_api: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", IGNORING_SIGINT, fake_api, str(tmp_path / "load")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    _, sent, failed, seconds, killed = line.split()
    assert int(sent) > 0 and int(failed) == 0, line
    # The helper waits 5 s with Locust running, then up to 60 s for it to stop before a kill.
    assert killed == "False" and int(seconds) < 30, line
