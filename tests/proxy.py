"""A forwarding proxy in front of a real Tally, for the SDK tests' lost acknowledgement: the
request reaches Tally and is stored, but the connection closes before the SDK reads the answer,
as when a network drops after the server committed. Everything else passes through unchanged."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


@contextmanager
def lost_acknowledgements(
    upstream: str, lose: Callable[[str, str], bool], instead: tuple[int, bytes] | None = None,
) -> Iterator[tuple[str, list[tuple[str, str, int]]]]:
    """(proxy base URL, log of (method, path, status passed on: 0 for a lost answer));
    `lose(method, path)` says, per request, whether Tally's answer is lost after Tally handled
    it: the connection closes with no answer, or, with `instead`, that (status, JSON body) is
    sent in its place (an SDK that does not survive a dropped connection reads a 5xx)."""
    log: list[tuple[str, str, int]] = []
    lock = threading.Lock()
    client = httpx.Client(base_url=upstream, timeout=30)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
            answer = client.request(self.command, self.path, content=body, headers=headers)
            with lock:
                lost = lose(self.command, self.path)
                log.append((self.command, self.path, (instead[0] if instead else 0) if lost else answer.status_code))
            if lost and instead is None:
                self.close_connection = True  # closed with no answer at all
                return
            status, content = instead if lost and instead else (answer.status_code, answer.content)
            self.send_response(status)
            for key, value in answer.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_POST = do_OPTIONS = do_HEAD = do_PUT = _forward

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
        client.close()


def first_posts(n: int, paths: tuple[str, ...] | None = None) -> Callable[[str, str], bool]:
    """Lose the answers to the first `n` POSTs (to `paths`, when given)."""
    left = [n]

    def lose(method: str, path: str) -> bool:
        if method != "POST" or (paths is not None and not path.split("?", 1)[0] in paths) or left[0] == 0:
            return False
        left[0] -= 1
        return True

    return lose
