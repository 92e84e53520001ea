"""schemathesis against the service's own OpenAPI document, in-process (ASGI), on the real database.

Every operation in /openapi.json gets generated requests (the schema's examples, the coverage
phase's boundary and invalid values, then seeded fuzzing), sent with a valid token of a fresh
project holding every scope. Each response must not be a 5xx, and its status code, Content-Type,
headers and body must be the ones the document declares. Generation is derandomized with a fixed
seed so that CI runs are repeatable; the run takes well under a minute.

schemathesis' ASGI transport starts the app's lifespan (the pool opens in it) on the first
request and ends it at the test's teardown, so the requests reach Postgres:
`test_fuzz_reached_the_database` checks that generated events were stored and queries answered 200.
"""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from tally.app import create_app
from tests.factories import token_for
from tests.helpers import make_settings

SEED = 20261126
MAX_EXAMPLES = 25

CONFIG = f"""
seed = {SEED}

[generation]
max-examples = {MAX_EXAMPLES}
deterministic = true
database = "none"

[phases.stateful]
enabled = false

# Not checked: positive_data_acceptance. Schema-valid requests are refused by design where the
# document cannot say why: an Idempotency-Key the generator reuses with another body (422, the
# replay contract), and query bounds that are ISO-8601 text read in `tz` ("from=" is a string).
[checks.positive_data_acceptance]
enabled = false

# Ingest answers 200 with per-event rejections (Segment's contract: one bad event does not sink
# the batch), so an event that violates EventIn is counted in `rejected`, not refused with a 4xx.
[[operations]]
include-tag = "ingest"
checks.negative_data_rejection.enabled = false

# A repeated `event` query parameter is a list of strings, and in a URL every value is a string:
# the "invalid" items the generator draws (numbers, objects) reach the server as valid names.
[[operations]]
include-name = ["GET /v1/events", "GET /v1/aggregates"]
checks.negative_data_rejection.enabled = false
"""


# The schema is loaded at collection time, from an app that is never started (the document does
# not depend on the database); the requests go to `fuzz_app`, started on the test database.
# (schemathesis.pytest.from_fixture would defer loading, but 4.32 fails on pytest 9.2's Node:
# it sets `request.node._nodeid`, which no longer exists.)
_DOC_APP = create_app(make_settings("postgresql://schema-only@127.0.0.1:1/none"))
schema = schemathesis.openapi.from_dict(_DOC_APP.openapi(), config=SchemathesisConfig.from_str(CONFIG))

# A fresh project holding every scope: the run starts from an empty tenant.
PROJECT = "p_fuzz_" + uuid.uuid4().hex[:10]


@schema.auth()
class BearerAllScopes:
    def get(self, case, ctx):
        return token_for(PROJECT)

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture
def fuzz_app(settings):
    # One app per operation: schemathesis ends the app's lifespan at each test's teardown, and a
    # closed pool is not reopened.
    return create_app(settings)


@schema.parametrize()
# The app is deliberately shared by the examples of one operation (it is the server under test).
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_openapi_conformance(case, fuzz_app):
    # The `ignored_auth` check (the document declares the token schemes) resends the request
    # without credentials through the schema's own transport, which knows only the schema's app.
    case.operation.schema.app = fuzz_app
    response = case.call_and_validate(app=fuzz_app)
    STATUSES.setdefault(case.operation.label, set()).add(response.status_code)


STATUSES: dict[str, set[int]] = {}


def test_fuzz_reached_the_database(db):
    """The generated requests were served by a started app on Postgres, not refused before it."""
    if not STATUSES:
        pytest.skip("runs after test_openapi_conformance")
    stored = db.execute("SELECT count(*) FROM events WHERE project_id = %s", [PROJECT]).fetchone()[0]
    assert stored > 0, STATUSES
    assert 200 in STATUSES["POST /v1/batch"] and 200 in STATUSES["GET /v1/events"], STATUSES
