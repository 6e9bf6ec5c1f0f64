"""The bearer token for Ray's HTTP APIs (dashboard, Jobs, Serve REST) when token auth is on.

Ray reads RAY_AUTH_TOKEN, or the file named by RAY_AUTH_TOKEN_PATH, itself for its own clients
(`serve deploy`, `ray job submit`); plain HTTP calls from the scripts add the header with this,
from the same two places in the same order.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path


def token() -> str:
    value = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "")
    if not value and path and Path(path).is_file():
        value = Path(path).read_text().strip()
    return value


def auth_headers() -> dict[str, str]:
    value = token()
    return {"Authorization": f"Bearer {value}"} if value else {}


def request(url: str) -> urllib.request.Request:
    return urllib.request.Request(url, headers=auth_headers())
