"""Request ids and the JSON log: one object per line with the request's context, and no credentials or
event payloads, read from the stdout of a real `tally serve`."""

from __future__ import annotations

import base64
import json
import re
import uuid

import httpx
import pytest

from tests.factories import SECRET, make_batch, token_for
from tests.helpers import start_server, stop_server

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


def test_a_sane_request_id_is_echoed(client):
    response = client.get("/v1/nothing", headers={"X-Request-ID": "req-2026.11:abc_1"})
    assert response.headers["x-request-id"] == "req-2026.11:abc_1"
    assert response.json()["request_id"] == "req-2026.11:abc_1"


@pytest.mark.parametrize("supplied", ["a b<script>", "x" * 129, "", "é-accent"])
def test_an_insane_request_id_is_replaced(client, supplied):
    response = client.get("/v1/nothing", headers={"X-Request-ID": supplied.encode()})
    assert GENERATED_ID.match(response.headers["x-request-id"])
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_a_request_without_id_gets_one(client):
    first, second = client.get("/healthz"), client.get("/healthz")
    assert GENERATED_ID.match(first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


ACCESS_FIELDS = {"time", "level", "message", "request_id", "method", "route", "status", "duration_ms", "project"}


@pytest.fixture(scope="module")
def served_log(database_url: str) -> dict:
    """Run a real server at INFO, make a few requests, stop it, and keep what it printed."""
    project = "p_" + uuid.uuid4().hex[:12]
    token = token_for(project, "ingest")
    write_key = base64.b64encode(f"{token}:".encode()).decode()
    payload_value = "payload-" + uuid.uuid4().hex
    proc, base = start_server(database_url, env={"TALLY_LOG_LEVEL": "INFO"})
    try:
        batch = make_batch(2, properties={"note": payload_value})
        ok = httpx.post(base + "/v1/batch", json=batch, headers={"Authorization": f"Bearer {token}", "X-Request-ID": "log-ok-1"})
        assert ok.status_code == 200, ok.text
        basic = httpx.post(base + "/v1/batch", json=make_batch(1), headers={"Authorization": f"Basic {write_key}"})
        assert basic.status_code == 200, basic.text
        refused = httpx.post(base + "/v1/batch", json=batch, headers={"Authorization": f"Bearer {token}x", "X-Request-ID": "log-401"})
        assert refused.status_code == 401
        assert httpx.get(base + "/v1/nothing", headers={"X-Request-ID": "log-404"}).status_code == 404
    finally:
        stop_server(proc)
    output = proc.stdout.read().decode()
    return {"output": output, "project": project, "secrets": [token, write_key, payload_value, SECRET]}


def test_every_log_line_is_a_json_object(served_log):
    lines = served_log["output"].splitlines()
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "message"} <= entry.keys(), line


def access_lines(served_log) -> dict[str, dict]:
    entries = [json.loads(line) for line in served_log["output"].splitlines()]
    return {e["request_id"]: e for e in entries if e.get("message") == "request"}


def test_access_lines_carry_the_request_context(served_log):
    lines = access_lines(served_log)
    for entry in lines.values():
        assert ACCESS_FIELDS <= entry.keys(), entry
    ok = lines["log-ok-1"]
    assert (ok["method"], ok["route"], ok["status"], ok["project"]) == ("POST", "/v1/batch", 200, served_log["project"])
    assert isinstance(ok["duration_ms"], float)
    assert (lines["log-401"]["status"], lines["log-401"]["project"]) == (401, None)
    assert (lines["log-404"]["route"], lines["log-404"]["status"]) == ("unmatched", 404)


def test_logs_hold_no_token_authorization_header_or_payload(served_log):
    output = served_log["output"]
    for secret in served_log["secrets"]:
        assert secret not in output
    assert "authorization" not in output.lower()
    assert "Bearer" not in output
