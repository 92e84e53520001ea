"""The other vendors' own Python SDKs, unchanged, against a real `tally serve`: PostHog (v0 and
v1, gzip on and off), Mixpanel (track, people, groups, import; BufferedConsumer too) and
Amplitude (HTTP API and batch). Every call is stored exactly once, with the right type, ids and
time, also when the first answer is lost after Tally stored the events."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.factories import token_for
from tests.proxy import first_posts, lost_acknowledgements


def rows(db, project: str) -> list[tuple]:
    return db.execute(
        "SELECT type, event, user_id, anonymous_id, ts, original_timestamp, properties, traits, context, extra, "
        "count(*) OVER (PARTITION BY message_id) FROM events WHERE project_id = %s ORDER BY type, event",
        [project],
    ).fetchall()


def assert_stored_once(db, project: str, expected: list[tuple[str, str | None]], started: datetime, key: str) -> list[tuple]:
    stored = rows(db, project)
    assert [(r[0], r[1]) for r in stored] == sorted(expected), stored
    for row in stored:
        assert row[-1] == 1, row  # exactly once
        assert started - timedelta(seconds=5) <= row[4] <= datetime.now(timezone.utc) + timedelta(seconds=1), row
        assert key not in repr(row), "the vendor key was stored"
    return stored


# --- PostHog ----------------------------------------------------------------------------------


def run_posthog(host: str, key: str, user: str, mode: str, gzip: bool) -> None:
    from posthog import Posthog

    errors: list = []
    # Its default consumer thread, batching and retrying (0, 1, 3 s...) as in production.
    client = Posthog(key, host=host, gzip=gzip, capture_mode=mode, max_retries=3,
                     on_error=lambda error, batch: errors.append(error))
    client.capture("Order Completed", distinct_id=user, properties={"revenue": 12.5})
    client.set(distinct_id=user, properties={"plan": "pro"})
    client.group_identify("company", "acme", {"name": "Acme"}, distinct_id=user)
    client.alias(previous_id=user, distinct_id=f"{user}-2")
    client.capture("$pageview", distinct_id=user, properties={"$current_url": "https://shop.example.com/"})
    client.flush()
    client.shutdown()
    assert errors == []


POSTHOG_EVENTS = [("alias", "$alias"), ("group", "$group"), ("identify", "$identify"), ("page", "$page"),
                  ("track", "Order Completed")]


@pytest.mark.parametrize("mode", ["v0", "v1"])
@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_posthog_sdk_calls_are_stored_once(live_server, db, project, mode, gzip):
    user, key, started = f"ph-{uuid.uuid4().hex[:8]}", token_for(project, "ingest"), datetime.now(timezone.utc)
    run_posthog(live_server, key, user, mode, gzip)
    stored = assert_stored_once(db, project, POSTHOG_EVENTS, started, key)
    by_type = {r[0]: r for r in stored}
    assert by_type["identify"][7] == {"plan": "pro"} and by_type["identify"][2] == user
    assert by_type["group"][7] == {"name": "Acme"} and by_type["group"][9]["groupId"] == "acme"
    assert (by_type["alias"][2], by_type["alias"][9]["previousId"]) == (f"{user}-2", user)
    assert by_type["track"][6]["revenue"] == 12.5 and by_type["track"][8]["wire"] == "posthog"
    if mode == "v0":  # v1 sends the library in a header, not in the event
        assert by_type["track"][8]["library"] == {"name": "posthog-python", "version": by_type["track"][6]["$lib_version"]}


@pytest.mark.parametrize("mode", ["v0", "v1"])
def test_posthog_retries_a_lost_answer_and_it_is_a_duplicate(live_server, db, project, mode):
    user, key, started = f"ph-{uuid.uuid4().hex[:8]}", token_for(project, "ingest"), datetime.now(timezone.utc)
    with lost_acknowledgements(live_server, first_posts(1)) as (proxy, log):
        run_posthog(proxy, key, user, mode, gzip=False)
    posts = [e for e in log if e[0] == "POST"]
    assert posts[0][2] == 0 and len(posts) >= 2 and posts[1][1] == posts[0][1], log  # the batch, sent again
    assert_stored_once(db, project, POSTHOG_EVENTS, started, key)


# --- Mixpanel ---------------------------------------------------------------------------------


def mixpanel_consumer(host: str, buffered: bool):
    from mixpanel import BufferedConsumer, Consumer

    urls = {"events_url": f"{host}/track", "people_url": f"{host}/engage", "groups_url": f"{host}/groups",
            "import_url": f"{host}/import"}
    return BufferedConsumer(max_size=3, **urls) if buffered else Consumer(**urls)


def run_mixpanel(host: str, key: str, user: str, buffered: bool) -> None:
    from mixpanel import Mixpanel

    consumer = mixpanel_consumer(host, buffered)
    mp = Mixpanel(key, consumer=consumer)
    mp.track(user, "Order Completed", {"revenue": 12.5})
    mp.people_set(user, {"plan": "pro"})
    mp.group_set("company", "acme", {"name": "Acme"})
    mp.import_data(None, user, "Imported", int(datetime.now(timezone.utc).timestamp()) - 2, {"n": 1}, api_secret=key)
    if buffered:
        consumer.flush()


MIXPANEL_EVENTS = [("group", "$group"), ("identify", "$identify"), ("track", "Imported"), ("track", "Order Completed")]


@pytest.mark.parametrize("buffered", [False, True], ids=["consumer", "buffered"])
def test_mixpanel_sdk_calls_are_stored_once(live_server, db, project, buffered):
    user, key, started = f"mp-{uuid.uuid4().hex[:8]}", token_for(project, "ingest"), datetime.now(timezone.utc)
    run_mixpanel(live_server, key, user, buffered)
    stored = assert_stored_once(db, project, MIXPANEL_EVENTS, started - timedelta(seconds=3), key)
    by_event = {r[1]: r for r in stored}
    assert by_event["$identify"][7] == {"plan": "pro"} and by_event["$identify"][2] == user
    assert by_event["$group"][3] == "$group:company:acme" and by_event["$group"][7] == {"name": "Acme"}
    assert by_event["Order Completed"][6]["revenue"] == 12.5 and by_event["Order Completed"][2] == user


def test_mixpanel_buffered_consumer_resends_a_lost_batch_and_it_is_a_duplicate(live_server, db, project):
    """Over http Mixpanel's SDK does not retry by itself: a lost answer raises, and the
    BufferedConsumer keeps the batch, so the next flush sends it again."""
    from mixpanel import Mixpanel, MixpanelException

    user, key, started = f"mp-{uuid.uuid4().hex[:8]}", token_for(project, "ingest"), datetime.now(timezone.utc)
    with lost_acknowledgements(live_server, first_posts(1)) as (proxy, log):
        consumer = mixpanel_consumer(proxy, buffered=True)
        mp = Mixpanel(key, consumer=consumer)
        mp.track(user, "Order Completed", {"revenue": 12.5})
        with pytest.raises(MixpanelException):
            consumer.flush()
        consumer.flush()
    assert [status for _, _, status in log] == [0, 200], log
    assert_stored_once(db, project, [("track", "Order Completed")], started, key)


def test_mixpanel_sdk_raises_on_a_refused_key_instead_of_dropping_silently(live_server):
    from mixpanel import Mixpanel, MixpanelException

    mp = Mixpanel("not-a-tally-token", consumer=mixpanel_consumer(live_server, buffered=False))
    with pytest.raises(MixpanelException, match="Mixpanel error"):
        mp.track("u", "Order Completed")


# --- Amplitude --------------------------------------------------------------------------------


def run_amplitude(host: str, key: str, user: str, use_batch: bool) -> list[tuple[int, str]]:
    from amplitude import Amplitude, BaseEvent, Config, Identify, EventOptions

    results: list[tuple[int, str]] = []
    done = threading.Event()

    def callback(event, code, message=None) -> None:
        results.append((code, message))
        if len(results) == 3:
            done.set()

    config = Config(server_url=f"{host}/batch" if use_batch else f"{host}/2/httpapi", use_batch=use_batch,
                    flush_interval_millis=200, flush_queue_size=3, callback=callback,
                    logger=logging.getLogger("amplitude-test"))
    client = Amplitude(key, configuration=config)
    client.track(BaseEvent(event_type="Order Completed", user_id=user, event_properties={"revenue": 12.5}))
    identify = Identify().set("plan", "pro")
    client.identify(identify, EventOptions(user_id=user))
    client.track(BaseEvent(event_type="Viewed", user_id=user, device_id="device-1"))
    client.flush()
    done.wait(20)
    client.shutdown()
    return results


AMPLITUDE_EVENTS = [("identify", "$identify"), ("track", "Order Completed"), ("track", "Viewed")]


@pytest.mark.parametrize("use_batch", [False, True], ids=["httpapi", "batch"])
def test_amplitude_sdk_calls_are_stored_once(live_server, db, project, use_batch):
    user, key, started = f"am-{uuid.uuid4().hex[:8]}", token_for(project, "ingest"), datetime.now(timezone.utc)
    results = run_amplitude(live_server, key, user, use_batch)
    assert [code for code, _ in results] == [200, 200, 200], results
    stored = assert_stored_once(db, project, AMPLITUDE_EVENTS, started, key)
    by_event = {r[1]: r for r in stored}
    assert by_event["$identify"][7] == {"plan": "pro"}
    assert by_event["Viewed"][3] == "device-1" and by_event["Order Completed"][6]["revenue"] == 12.5


def test_amplitude_retries_a_lost_answer_and_it_is_a_duplicate(live_server, db, project):
    # Amplitude's SDK loses its events on a dropped connection (urllib's RemoteDisconnected escapes
    # its worker), so the lost answer is a 503, which it retries.
    user, key, started = f"am-{uuid.uuid4().hex[:8]}", token_for(project, "ingest"), datetime.now(timezone.utc)
    lost = (503, b'{"code": 503, "error": "the answer was lost"}')
    with lost_acknowledgements(live_server, first_posts(1), instead=lost) as (proxy, log):
        results = run_amplitude(proxy, key, user, use_batch=False)
    assert [code for code, _ in results] == [200, 200, 200], results
    assert log[0][2] == 503 and len(log) >= 2, log
    assert_stored_once(db, project, AMPLITUDE_EVENTS, started, key)
