"""Writes the hostile-input corpus: one file per request body, and manifest.json saying how to send
each and what the answer must be. Run `python -m tests.corpus.generate` after editing; the files
are checked in, so a reviewer sees the exact bytes and the runner needs no generator.

Expectations follow docs/ingest.md. Kinds:
- "request": the whole request is refused with `status` (a 4xx) and problem `code`;
- "event": a 200 where the bad event (index 0) is rejected with `code` and the good one stored;
- "stored": a 200 with every event accepted (odd but valid input must not be refused).
Bodies over ~64 KB are stored gzipped with "inflate": true; the runner inflates them and sends
them plain, so the repository stays small and the plain path is the one under test.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOOD = {"type": "track", "messageId": "corpus-good", "userId": "u1", "event": "Good",
        "timestamp": "2026-11-26T10:00:00Z"}


def ev(**fields) -> dict:
    base = {"type": "track", "messageId": "corpus-bad", "userId": "u1", "event": "Bad",
            "timestamp": "2026-11-26T10:00:00Z"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()


def with_good(bad_json: bytes) -> bytes:
    return b'{"batch": [' + bad_json + b", " + json.dumps(GOOD).encode() + b"]}"


def gz(data: bytes, level: int = 9) -> bytes:
    return gzip.compress(data, level, mtime=0)  # mtime 0: the same bytes on every run


def dumps(value) -> bytes:
    return json.dumps(value).encode()


ENTRIES: list[tuple[str, bytes, dict]] = []


def request(name: str, body: bytes, status: int, code: str, headers: dict | None = None, inflate: bool = False):
    ENTRIES.append((name, body, {"kind": "request", "status": status, "code": code,
                                 "headers": headers or {}, "inflate": inflate}))


def event(name: str, bad: bytes | dict, code: str):
    body = with_good(bad if isinstance(bad, bytes) else dumps(bad))
    ENTRIES.append((name, body, {"kind": "event", "code": code, "headers": {}, "inflate": False}))


def stored(name: str, body: bytes, headers: dict | None = None):
    ENTRIES.append((name, body, {"kind": "stored", "headers": headers or {}, "inflate": False}))


def build() -> None:
    good = dumps(GOOD)
    # --- truncated and invalid JSON: the whole request is 400 invalid_json --------------------
    request("empty-body", b"", 400, "invalid_json")
    request("whitespace-only", b" \n\t ", 400, "invalid_json")
    request("truncated-mid-string", b'{"batch": [{"messageId": "a", "type": "tr', 400, "invalid_json")
    request("truncated-after-comma", b'{"batch": [' + good + b",", 400, "invalid_json")
    request("truncated-mid-escape", b'{"batch": [{"messageId": "\\u12', 400, "invalid_json")
    request("single-quotes", b"{'batch': [{'messageId': 'a'}]}", 400, "invalid_json")
    request("trailing-comma", b'{"batch": [' + good + b",]}", 400, "invalid_json")
    request("comment", b'{"batch": [' + good + b"] // done\n}", 400, "invalid_json")
    request("unquoted-key", b'{batch: [' + good + b"]}", 400, "invalid_json")
    request("two-documents", b'{"batch": [' + good + b']}{"batch": []}', 400, "invalid_json")
    request("utf8-bom", b"\xef\xbb\xbf" + b'{"batch": [' + good + b"]}", 400, "invalid_json")
    request("utf16-body", ('{"batch": [' + json.dumps(GOOD) + "]}").encode("utf-16"), 400, "invalid_json")
    request("invalid-utf8-in-string", b'{"batch": [{"messageId": "a\xc3\x28", "userId": "u"}]}', 400, "invalid_json")
    request("overlong-utf8-slash", b'{"batch": [{"messageId": "\xc0\xaf", "userId": "u"}]}', 400, "invalid_json")
    request("raw-nul-byte", b'{"batch": [{"messageId": "a\x00b", "userId": "u"}]}', 400, "invalid_json")
    request("raw-control-char-in-string", b'{"batch": [{"messageId": "a\x01b", "userId": "u"}]}', 400, "invalid_json")
    request("nan-literal", b'{"batch": [{"messageId": "a", "userId": "u", "properties": {"x": NaN}}]}', 400, "invalid_json")
    request("hex-number", b'{"batch": [{"messageId": "a", "userId": "u", "properties": {"x": 0x10}}]}', 400, "invalid_json")
    request("leading-zero-number", b'{"batch": [{"messageId": "a", "userId": "u", "properties": {"x": 012}}]}', 400, "invalid_json")
    request("plus-sign-number", b'{"batch": [{"messageId": "a", "userId": "u", "properties": {"x": +1}}]}', 400, "invalid_json")
    request("nested-arrays-100k-unbalanced", b'{"batch": [' + b"[" * 100_000 + b"]" * 99_999 + b"]}", 400,
            "invalid_json", inflate=True)

    # --- wrong types for the envelope: 400 bad_request -----------------------------------------
    for name, body in {
        "top-level-array": b"[" + good + b"]",
        "top-level-string": b'"batch"',
        "top-level-number": b"42",
        "top-level-null": b"null",
        "top-level-true": b"true",
        "batch-is-object": b'{"batch": {"0": ' + good + b"}}",
        "batch-is-string": b'{"batch": "[]"}',
        "batch-is-null": b'{"batch": null}',
        "batch-missing": b'{"events": [' + good + b"]}",
        "batch-empty": b'{"batch": []}',
        "batch-duplicate-key-last-wins-number": b'{"batch": [' + good + b'], "batch": 5}',
        "batch-context-is-list": b'{"batch": [' + good + b'], "context": ["x"]}',
        "batch-context-is-string": b'{"batch": [' + good + b'], "context": "ctx"}',
        "sentat-is-number": b'{"batch": [' + good + b'], "sentAt": 1764151200}',
        "sentat-is-words": b'{"batch": [' + good + b'], "sentAt": "yesterday"}',
        "sentat-without-offset": b'{"batch": [' + good + b'], "sentAt": "2026-11-26T10:00:00"}',
    }.items():
        request(name, body, 400, "bad_request")

    # --- oversize: 413 ------------------------------------------------------------------------------
    many = [dict(GOOD, messageId=f"m{i}") for i in range(1001)]
    request("batch-of-1001-events", dumps({"batch": many}), 413, "payload_too_large", inflate=True)
    request("body-over-1mib", dumps({"batch": [dict(GOOD, properties={"pad": "x" * (1024 * 1024)})]}),
            413, "payload_too_large", inflate=True)

    # --- gzip: bombs, lies and garbage ------------------------------------------------------------
    gzipped = {"Content-Encoding": "gzip"}
    request("gzip-bomb-64mib-of-zeros", gz(b"0" * (64 * 1024 * 1024), 9), 413, "payload_too_large", gzipped)
    request("gzip-bomb-valid-json-prefix",
            gz(b'{"batch": [{"messageId": "a", "userId": "u", "properties": {"p": "' + b"A" * (16 * 1024 * 1024)
                          + b'"}}]}', 9), 413, "payload_too_large", gzipped)
    request("gzip-header-on-plain-body", b'{"batch": [' + good + b"]}", 400, "bad_request", gzipped)
    request("gzip-truncated", gz(b'{"batch": [' + good + b"]}")[:-8], 400, "bad_request", gzipped)
    request("gzip-with-trailing-garbage", gz(b'{"batch": [' + good + b"]}") + b"garbage", 400,
            "bad_request", gzipped)
    request("gzip-twice", gz(gz(b'{"batch": [' + good + b"]}")), 400, "invalid_json", gzipped)
    request("gzip-of-invalid-json", gz(b'{"batch": [{"messageId": '), 400, "invalid_json", gzipped)
    request("gzip-body-declared-identity", gz(b'{"batch": [' + good + b"]}"), 400, "invalid_json",
            {"Content-Encoding": "identity"})
    stored("gzip-two-members", gz(b'{"batch": [') + gz(good + b"]}"), gzipped)
    request("content-encoding-deflate", b'{"batch": [' + good + b"]}", 415, "unsupported_media_type",
            {"Content-Encoding": "deflate"})
    request("content-encoding-list", gz(b'{"batch": [' + good + b"]}"), 415, "unsupported_media_type",
            {"Content-Encoding": "gzip, gzip"})
    request("content-type-form", b"batch=1", 415, "unsupported_media_type",
            {"Content-Type": "application/x-www-form-urlencoded"})
    request("content-type-multipart", b'{"batch": [' + good + b"]}", 415, "unsupported_media_type",
            {"Content-Type": "multipart/form-data; boundary=x"})
    stored("content-type-json-charset-latin1-but-utf8-body",
           dumps({"batch": [dict(GOOD, properties={"name": "Zoë"})]}), {"Content-Type": "application/json; charset=latin1"})

    # --- wrong types at the event level: that event alone is rejected -------------------------------
    event("event-is-string", b'"corpus-bad"', "invalid_event")
    event("event-is-number", b"7", "invalid_event")
    event("event-is-null", b"null", "invalid_event")
    event("event-is-list", dumps([GOOD]), "invalid_event")
    event("message-id-missing", ev(messageId=DROP), "missing_message_id")
    event("message-id-number", ev(messageId=12345), "invalid_message_id")
    event("message-id-list", ev(messageId=["a"]), "invalid_message_id")
    event("message-id-object", ev(messageId={"id": "a"}), "invalid_message_id")
    event("message-id-true", ev(messageId=True), "invalid_message_id")
    event("message-id-empty", ev(messageId=""), "invalid_message_id")
    event("message-id-201-chars", ev(messageId="m" * 201), "invalid_message_id")
    event("message-id-100k-chars", ev(messageId="m" * 100_000), "invalid_message_id")
    event("type-number", ev(type=1), "invalid_type")
    event("type-capitalised", ev(type="Track"), "invalid_type")
    event("type-list", ev(type=["track"]), "invalid_type")
    event("type-object", ev(type={"t": "track"}), "invalid_type")
    event("type-unknown", ev(type="purchase"), "invalid_type")
    event("identity-missing", ev(userId=DROP), "missing_identity")
    event("user-id-true", ev(userId=True), "invalid_user_id")
    event("user-id-object", ev(userId={"id": 1}), "invalid_user_id")
    event("user-id-list", ev(userId=["u"]), "invalid_user_id")
    event("user-id-256-chars", ev(userId="u" * 256), "invalid_user_id")
    event("anonymous-id-list", ev(userId=DROP, anonymousId=["a"]), "invalid_anonymous_id")
    event("anonymous-id-false", ev(anonymousId=False), "invalid_anonymous_id")
    event("event-name-missing", ev(event=DROP), "missing_event_name")
    event("event-name-number", ev(event=5), "invalid_event_name")
    event("event-name-object", ev(event={"name": "x"}), "invalid_event_name")
    event("event-name-empty", ev(event=""), "invalid_event_name")
    event("event-name-201-chars", ev(event="e" * 201), "invalid_event_name")
    event("properties-list", ev(properties=[1, 2]), "invalid_properties")
    event("properties-string", ev(properties="{}"), "invalid_properties")
    event("properties-number", ev(properties=0), "invalid_properties")
    event("context-string", ev(context="web"), "invalid_context")
    event("traits-list", ev(type="identify", event=DROP, traits=["a"]), "invalid_traits")
    event("properties-900kib-string", ev(properties={"s": "x" * (900 * 1024)}), "event_too_large")
    event("properties-5000-keys", ev(properties={f"k{i}": i for i in range(5000)}), "event_too_large")

    # --- odd time formats ---------------------------------------------------------------------------
    for name, value in {
        "timestamp-epoch-number": 1764151200,
        "timestamp-epoch-millis-string": "1764151200000",
        "timestamp-true": True,
        "timestamp-object": {"iso": "2026-11-26T10:00:00Z"},
        "timestamp-date-only": "2026-11-26",
        "timestamp-no-offset": "2026-11-26T10:00:00",
        "timestamp-day-month-year": "26/11/2026 10:00",
        "timestamp-rfc2822": "Thu, 26 Nov 2026 10:00:00 GMT",
        "timestamp-hour-25": "2026-11-26T25:00:00Z",
        "timestamp-february-30": "2026-02-30T00:00:00Z",
        "timestamp-offset-25h": "2026-11-26T10:00:00+25:00",
        "timestamp-year-zero": "0000-01-01T00:00:00Z",
        "timestamp-extended-year": "+275760-09-13T00:00:00Z",
        "timestamp-empty": "",
    }.items():
        event(name, ev(timestamp=value), "invalid_timestamp")
    event("timestamp-before-1970", ev(timestamp="1969-12-31T23:59:59Z"), "timestamp_out_of_range")
    event("timestamp-year-9999", ev(timestamp="9999-12-31T23:59:59Z"), "timestamp_in_future")

    # --- numbers JSON can spell but storage cannot hold exactly: that event alone -----------------
    event("integer-2-pow-64", b'{"type": "track", "messageId": "corpus-bad", "userId": "u", "event": "e", '
                              b'"properties": {"n": 18446744073709551616}}', "unstorable_value")
    event("integer-minus-2-pow-63-minus-1", b'{"type": "track", "messageId": "corpus-bad", "userId": "u", '
                                            b'"event": "e", "properties": {"n": -9223372036854775809}}',
          "unstorable_value")
    event("integer-10000-digits", b'{"type": "track", "messageId": "corpus-bad", "userId": "u", "event": "e", '
                                  b'"properties": {"x": ' + b"9" * 10_000 + b"}}", "unstorable_value")
    event("integer-40-digits-in-traits", b'{"type": "identify", "messageId": "corpus-bad", "userId": "u", '
                                         b'"traits": {"n": 1234567890123456789012345678901234567890}}',
          "unstorable_value")

    event("number-below-double-range", b'{"type": "track", "messageId": "corpus-bad", "userId": "u", "event": "e", '
                                       b'"properties": {"under": 1e-400}}', "unstorable_value")
    event("number-below-double-range-as-fraction", b'{"type": "track", "messageId": "corpus-bad", "userId": "u", '
                                                   b'"event": "e", "properties": {"under": 0.' + b"0" * 400 + b'1}}',
          "unstorable_value")

    # --- nesting deeper than jsonb or the parser holds: that event alone -------------------------
    event("nested-arrays-100k-as-an-event", b"[" * 100_000 + b"]" * 100_000, "invalid_event")
    event("nested-objects-in-properties-5000", b'{"type": "track", "messageId": "corpus-bad", "userId": "u", '
                                               b'"event": "e", "properties": ' + b'{"a": ' * 5000 + b"1"
                                               + b"}" * 5001, "unstorable_value")
    event("nested-arrays-in-properties-5000", b'{"type": "track", "messageId": "corpus-bad", "userId": "u", '
                                              b'"event": "e", "properties": {"a": ' + b"[" * 5000 + b"]" * 5000
                                              + b"}}", "unstorable_value")
    event("nested-arrays-in-context-300", b'{"type": "track", "messageId": "corpus-bad", "userId": "u", '
                                          b'"event": "e", "context": {"a": ' + b"[" * 300 + b"]" * 300 + b"}}",
          "unstorable_value")

    # --- odd Unicode ---------------------------------------------------------------------------------
    event("lone-high-surrogate-in-property-key", b'{"type": "track", "messageId": "corpus-bad", "userId": "u", '
                                                 b'"event": "e", "properties": {"\\ud800": 1}}', "unstorable_value")
    event("lone-low-surrogate-in-context", b'{"type": "track", "messageId": "corpus-bad", "userId": "u", '
                                           b'"event": "e", "context": {"ua": "x\\udfffy"}}', "unstorable_value")
    event("nul-in-traits-value", b'{"type": "identify", "messageId": "corpus-bad", "userId": "u", '
                                 b'"traits": {"name": "a\\u0000"}}', "unstorable_value")
    event("nul-in-anonymous-id", b'{"type": "track", "messageId": "corpus-bad", "anonymousId": "\\u0000", '
                                 b'"event": "e"}', "unstorable_value")
    stored("unicode-that-is-valid", dumps({"batch": [
        dict(GOOD, messageId="rtl-\u202eevil", event="Zero\u200bwidth \u200d joiner"),
        dict(GOOD, messageId="emoji-\U0001F600\U0001F3F3\uFE0F\u200D\U0001F308", userId="\u00e9"),
        dict(GOOD, messageId="nfd-e\u0301", userId="e\u0301"),  # NFD: another id than NFC "é"
        dict(GOOD, messageId="nfc-\u00e9"),
        dict(GOOD, messageId="noncharacters-\uffff\U0010ffff", properties={"\ufffe": "\ufdd0"}),
        dict(GOOD, messageId="controls-\t\n\r\x7f", event="line\nbreak"),
        dict(GOOD, messageId="escaped-nul-text", properties={"t": "\\u0000"}),
    ]}))
    stored("numbers-at-the-edges", b'{"batch": [{"type": "track", "messageId": "edges", "userId": 0, "event": "e", '
                                   b'"properties": {"max": 18446744073709551615, "min": -9223372036854775808, '
                                   b'"tiny": 5e-324, "negzero": -0.0, "zero": 0e-400, "big": 1.7976931348623157e308}}]}')


def main() -> None:
    build()
    for old in HERE.glob("*.json*"):
        if old.name != "manifest.json":
            old.unlink()
    manifest = {}
    for name, body, spec in ENTRIES:
        assert name not in manifest, name
        if spec.get("inflate") or len(body) > 64 * 1024 and "Content-Encoding" not in spec["headers"]:
            spec["inflate"] = True
            filename = f"{name}.json.gz"
            (HERE / filename).write_bytes(gz(body))
        else:
            filename = f"{name}.gz" if body[:2] == b"\x1f\x8b" else f"{name}.json"
            (HERE / filename).write_bytes(body)
        manifest[name] = {"file": filename, **spec}
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"{len(manifest)} cases")


if __name__ == "__main__":
    main()
