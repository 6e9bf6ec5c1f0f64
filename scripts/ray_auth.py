"""The bearer token for Ray's HTTP APIs (dashboard, Jobs, Serve REST) when token auth is on.

Ray reads RAY_AUTH_TOKEN itself for its own clients (`serve deploy`, `ray job submit`); plain HTTP
calls from the scripts add the header with this.
"""

from __future__ import annotations

import os
import urllib.request


def auth_headers() -> dict[str, str]:
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def request(url: str) -> urllib.request.Request:
    return urllib.request.Request(url, headers=auth_headers())
