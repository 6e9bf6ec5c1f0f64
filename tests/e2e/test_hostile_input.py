"""Hostile input on the compose stack: schemathesis generates requests from the published OpenAPI
schema (valid and invalid) and the API answers none of them with a server error; the limits a
client can hit each answer their own 4xx JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"x" * 70_000, 413, "body_too_large"),
        (json.dumps({"text": "a" * 10_001}).encode(), 422, "invalid_request"),
        (json.dumps({"text": "hi", "admin": True}).encode(), 422, "invalid_request"),
        (json.dumps({"text": {"$ne": 1}}).encode(), 422, "invalid_request"),
    ],
    ids=["malformed-json", "body-too-large", "text-too-long", "unexpected-field", "object-text"],
)
def test_each_limit_answers_its_own_4xx(stack: Stack, body: bytes, status: int, code: str) -> None:
    resp = requests.post(
        f"{stack.api}/predict",
        data=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"] == code, resp.text


def test_schemathesis_finds_no_server_error(stack: Stack, tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{stack.api}/openapi.json",
            "--checks",
            "not_a_server_error,content_type_conformance,status_code_conformance",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--generation-database",
            "none",
            "--request-timeout",
            "90",
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    summary = [line for line in output.splitlines() if "passed" in line or "failed" in line]
    print("\nschemathesis:", summary[-1] if summary else output[-500:])
    assert result.returncode == 0, output[-6000:]
    assert report.is_file() and "<testcase" in report.read_text(), output[-2000:]
