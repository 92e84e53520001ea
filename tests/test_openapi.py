"""The OpenAPI document says what the server does: every operation that needs a token declares
both token schemes, and the documented limits follow the settings, not a copy of them."""

from __future__ import annotations

import base64

import pytest

from shared.events import EVENT_TYPES, MAX_EVENT_NAME, MAX_MESSAGE_ID
from tally.app import create_app
from tests.factories import token_for
from tests.helpers import make_settings

def spec_of(database_url: str, **overrides) -> dict:
    return create_app(make_settings(database_url, **overrides)).openapi()  # no lifespan needed


def test_the_bearer_token_and_the_write_key_are_declared_schemes(database_url):
    schemes = spec_of(database_url)["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["writeKey"] == {**schemes["writeKey"], "type": "http", "scheme": "basic"}


def test_every_operation_that_needs_a_token_declares_either_scheme(database_url):
    operations = [(path, method, op) for path, methods in spec_of(database_url)["paths"].items()
                  for method, op in methods.items()]
    assert len(operations) >= 13
    for path, method, op in operations:
        assert op.get("security") == [{"bearer": []}, {"writeKey": []}], (method, path)
        assert "401" in op["responses"] and "403" in op["responses"], (method, path)


@pytest.mark.parametrize("limit", [50, 1000])
def test_the_documented_batch_size_is_the_setting(database_url, limit):
    batch = spec_of(database_url, max_batch_events=limit)["components"]["schemas"]["BatchIn"]["properties"]["batch"]
    assert batch["maxItems"] == limit


def test_the_documented_event_follows_the_shared_vocabulary(database_url):
    event = spec_of(database_url)["components"]["schemas"]["EventIn"]["properties"]
    assert event["messageId"]["maxLength"] == MAX_MESSAGE_ID
    assert event["event"]["anyOf"][0]["maxLength"] == MAX_EVENT_NAME
    assert event["type"]["anyOf"][0]["enum"] == list(EVENT_TYPES)
    # A numeric userId is accepted whole or fractional (stored as its decimal string).
    assert {"type": "number"} in event["userId"]["anyOf"]


def test_the_docs_ui_can_call_an_operation_with_a_write_key(client, project):
    # What /docs sends after "Authorize" with the writeKey scheme: Basic base64(token:).
    key = base64.b64encode(f"{token_for(project, 'query')}:".encode()).decode()
    response = client.get("/v1/events", headers={"Authorization": f"Basic {key}"})
    assert response.status_code == 200, response.text
