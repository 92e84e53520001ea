"""Raw body reading (shared/body.py): a client that hangs up mid-body is a 400, never a 500,
on every endpoint that reads its own body."""

from __future__ import annotations

import orjson
import pytest


def call_with_hangup(client, path: str, headers: dict[str, str], sent: bytes, declared: int) -> tuple[int, dict]:
    """Drive the app in-process with an ASGI receive that delivers `sent` and then a disconnect."""
    messages = [
        {"type": "http.request", "body": sent, "more_body": True},
        {"type": "http.disconnect"},
    ]
    answer: dict = {}

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] = answer.get("body", b"") + message.get("body", b"")

    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw_headers += [(b"content-type", b"application/json"), (b"content-length", str(declared).encode())]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": raw_headers, "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }
    client.portal.call(client.app, scope, receive, send)
    return answer["status"], orjson.loads(answer["body"])


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/track", "/v1/schemas"])
def test_client_hanging_up_mid_body_is_a_400(client, auth, path):
    status, body = call_with_hangup(client, path, auth, b'{"batch": [', declared=1000)
    assert status == 400
    assert body["code"] == "incomplete_body"


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/schemas"])
def test_declared_length_over_the_limit_is_refused_before_reading(client, auth, path):
    limit = client.app.state.services.settings.max_body_bytes
    status, body = call_with_hangup(client, path, auth, b"{", declared=limit + 1)
    assert status == 413 and body["code"] == "payload_too_large"


def test_revocation_body_is_bounded_too(client, auth):
    limit = client.app.state.services.settings.max_body_bytes
    status, body = call_with_hangup(client, "/v1/tokens/revoked", auth, b"{", declared=limit + 1)
    assert status == 413 and body["code"] == "payload_too_large"
    status, body = call_with_hangup(client, "/v1/tokens/revoked", auth, b'{"jti": "', declared=100)
    assert status == 400 and body["code"] == "incomplete_body"
