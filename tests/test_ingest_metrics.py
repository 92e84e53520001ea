"""The ingest metrics on /metrics move by exactly what a request did."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.factories import make_batch, make_event


def scrape(client) -> dict[tuple, float]:
    samples = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def events_delta(before, after, outcome: str, code: str = "") -> float:
    return delta(before, after, "tally_ingest_events_total", outcome=outcome, code=code)


def test_event_outcomes_batch_size_and_duration_move_by_the_request(client, auth, project):
    seen = make_event()
    client.post("/v1/batch", json={"batch": [seen]}, headers=auth)
    repeated = make_event()
    batch = [
        make_event(), make_event(), repeated, repeated,  # 3 accepted, 1 in-batch duplicate
        seen,  # duplicate of an earlier batch
        make_event(userId=None), make_event(timestamp="noon"),
    ]
    before = scrape(client)
    client.post("/v1/batch", json={"batch": batch}, headers=auth)
    after = scrape(client)
    assert events_delta(before, after, "accepted") == 3
    assert events_delta(before, after, "duplicate") == 2
    assert events_delta(before, after, "rejected", "missing_identity") == 1
    assert events_delta(before, after, "rejected", "invalid_timestamp") == 1
    assert delta(before, after, "tally_ingest_batch_size_count") == 1
    assert delta(before, after, "tally_ingest_batch_size_sum") == 7
    assert delta(before, after, "tally_ingest_batch_size_bucket", le="5.0") == 0
    assert delta(before, after, "tally_ingest_batch_size_bucket", le="10.0") == 1
    assert delta(before, after, "tally_ingest_duration_seconds_count") == 1
    assert delta(before, after, "tally_ingest_duration_seconds_sum") > 0


def test_replay_counts_one_replay_and_no_events(client, auth, project):
    batch = make_batch(4)
    client.post("/v1/batch", json=batch, headers={**auth, "Idempotency-Key": "m-1"})
    before = scrape(client)
    client.post("/v1/batch", json=batch, headers={**auth, "Idempotency-Key": "m-1"})
    after = scrape(client)
    assert delta(before, after, "tally_ingest_idempotent_replays_total") == 1
    assert events_delta(before, after, "accepted") == 0
    assert events_delta(before, after, "duplicate") == 0
    assert delta(before, after, "tally_ingest_batch_size_count") == 0


def test_whole_request_rejection_counts_no_events(client, auth, project):
    before = scrape(client)
    client.post("/v1/batch", content=b'{"batch": [', headers={**auth, "Content-Type": "application/json"})
    after = scrape(client)
    changed = {k for k in after if k[0].startswith("tally_ingest_") and after[k] != before.get(k, 0.0)}
    assert changed == set()
