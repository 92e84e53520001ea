"""The hostile-input corpus (tests/corpus, written by tests/corpus/generate.py): every request gets
a 4xx problem+json or a 200 with a per-event rejection carrying a clear code; never a 5xx.

Each case also states the exact answer docs/ingest.md promises (status and code, or which event
is rejected and why), and the runner checks what was stored: nothing for a refused request,
exactly the accepted events otherwise.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parent / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())


def body_of(case: dict) -> bytes:
    data = (CORPUS / case["file"]).read_bytes()
    return gzip.decompress(data) if case["inflate"] else data


def stored(db, project: str) -> set[str]:
    return {r[0] for r in db.execute("SELECT message_id FROM events WHERE project_id = %s", [project])}


def test_corpus_files_match_the_manifest():
    on_disk = {p.name for p in CORPUS.iterdir() if p.name not in ("manifest.json", "generate.py", "__pycache__")}
    assert on_disk == {case["file"] for case in MANIFEST.values()}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_hostile_request_is_4xx_or_rejects_its_event_never_5xx(client, auth, db, project, name):
    case = MANIFEST[name]
    headers = {"Content-Type": "application/json", **auth, **case["headers"]}
    response = client.post("/v1/batch", content=body_of(case), headers=headers)
    assert response.status_code < 500, response.text
    if case["kind"] == "request":
        assert response.status_code == case["status"], response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == case["code"]
        assert stored(db, project) == set()
        return
    assert response.status_code == 200, response.text
    result = response.json()
    assert len(result["errors"]) == result["rejected"]
    if case["kind"] == "event":
        assert (result["accepted"], result["rejected"]) == (1, 1), result
        assert result["errors"][0]["index"] == 0 and result["errors"][0]["code"] == case["code"], result
        assert result["errors"][0]["detail"]
        assert stored(db, project) == {"corpus-good"}
    else:
        raw = body_of(case)
        sent = json.loads(gzip.decompress(raw) if case["headers"].get("Content-Encoding") == "gzip" else raw)["batch"]
        assert (result["accepted"], result["rejected"]) == (len(sent), 0), result
        assert stored(db, project) == {e["messageId"] for e in sent}


def peak_rss_mib(pid: int) -> float:
    """The process' high-water mark of resident memory (VmHWM), so a transient peak is not missed."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_whole_corpus_against_a_real_server_keeps_its_memory_bounded(database_url, project):
    import httpx

    from tests.factories import auth_headers
    from tests.helpers import start_server, stop_server

    proc, base = start_server(database_url)  # one worker: uvicorn serves in this very process
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            headers = {"Content-Type": "application/json", **auth_headers(project)}
            http.post("/v1/batch", content=body_of(MANIFEST["unicode-that-is-valid"]), headers=headers)  # warm up
            before = peak_rss_mib(proc.pid)
            statuses = set()
            for name in sorted(MANIFEST):
                case = MANIFEST[name]
                response = http.post("/v1/batch", content=body_of(case), headers={**headers, **case["headers"]})
                statuses.add(response.status_code)
            after = peak_rss_mib(proc.pid)
        print(f"\ncorpus over HTTP: statuses {sorted(statuses)}, peak RSS {before:.0f} -> {after:.0f} MiB")
        assert max(statuses) < 500
        # The largest inflated body allowed is 1 MiB; a bomb inflated whole would add 64 MiB.
        assert after - before < 48, (before, after)
    finally:
        stop_server(proc)
