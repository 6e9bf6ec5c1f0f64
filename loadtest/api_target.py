"""The default target of a load test: the API as the stack publishes it on this machine.

Used as the user classes' `host`, so `--host` / LOCUST_HOST still win. The port is API_PORT read
the way compose reads it for the API's published port (`${API_PORT:-8000}`): the environment
first, then the `.env` file at the repository root, else 8000. The address is 127.0.0.1 rather
than localhost, which may resolve to ::1 first while compose publishes on IPv4.

Locust imports every module of loadtest/, so this one defines no user or shape class and does
nothing on import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ENV_FILE = Path(__file__).resolve().parents[1] / ".env"
DEFAULT_API_PORT = "8000"


def dotenv_value(path: Path, key: str) -> str | None:
    """`key`'s value in a compose-style env file (the last assignment wins, as in compose), or
    None when the file or the key is missing."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    value = None
    for line in lines:
        name, sep, raw = line.partition("=")
        if sep and name.strip() == key:
            value = _unquote(raw.strip())
    return value


def _unquote(raw: str) -> str:
    """`"8000"` and `'8000'` as 8000; an unquoted value ends at ` #` (an inline comment)."""
    if len(raw) >= 2 and raw[0] in "\"'" and raw[-1] == raw[0]:
        return raw[1:-1]
    return raw.split(" #", 1)[0].strip()


def api_port(environ: Mapping[str, str] | None = None, env_file: Path = ENV_FILE) -> str:
    """API_PORT from the environment, else from `env_file`; empty or missing means 8000."""
    environ = os.environ if environ is None else environ
    value = environ.get("API_PORT")
    if value is None:
        value = dotenv_value(env_file, "API_PORT")
    return value or DEFAULT_API_PORT


def default_host(environ: Mapping[str, str] | None = None, env_file: Path = ENV_FILE) -> str:
    """`http://127.0.0.1:<API_PORT>`."""
    return f"http://127.0.0.1:{api_port(environ, env_file)}"
