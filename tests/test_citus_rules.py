"""The rule every statement keeps so that it runs on Citus as on one Postgres (docs/scaling.md):
no volatile function in the SET of an UPDATE or an ON CONFLICT DO UPDATE, no ctid, no
statement that writes two project tables, and every statement on a project table names the
project. Checked over every statement of the SQL modules, and the checker over bad ones."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from psycopg.sql import Composable

from ingest import sql as ingest_sql
from plans import sql as plans_sql
from query import sql as query_sql
from lifecycle import sql as lifecycle_sql
from shared import counts, idempotency, projects, revocation, suppressions
from tally.distribute import DISTRIBUTED, REFERENCE

PROJECT_TABLES = (set(DISTRIBUTED) | set(REFERENCE)) - {"revoked_tokens"}
VOLATILE = re.compile(r"\b(now|nextval|random|clock_timestamp|statement_timestamp|transaction_timestamp|gen_random_uuid)\s*\(", re.I)
SET_CLAUSE = re.compile(r"\b(?:UPDATE\s+\w+(?:\s+AS\s+\w+)?|DO\s+UPDATE)\s+SET\b(.*?)(?=\bWHERE\b|\bRETURNING\b|\)\s*,|$)", re.I | re.S)
WRITES = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.I)
# Statements that read every project on purpose, and why (docs/scaling.md).
ACROSS_PROJECTS = {
    "LOAD_PLAN": "each worker's per-second copy of the whole tracking plan: event_schemas is a reference table",
    "PURGE_EXPIRED_KEYS": "maintenance every 10 minutes over every project's expired keys",
    "PROJECTS_WITH_DELTAS": "the fold finds the projects it then folds one at a time",
    "LOAD_PROJECTS": "each worker's per-second copy of every project's settings: a reference table",
    "LOAD_SUPPRESSIONS": "each ingest worker's per-second copy of the suppressed ids: a reference table",
    "UNFINISHED_ERASURES": "the erasure runner's queue, over a partial index of the jobs not finished",
    "PROJECTS_WITH_EVENTS": "the retention pass (every 30 s) finds the projects a default retention applies to",
}


def violations(text: str) -> list[str]:
    found = []
    for clause in SET_CLAUSE.findall(text):
        if VOLATILE.search(clause):
            found.append("volatile function in SET")
    if re.search(r"\bctid\b", text, re.I):
        found.append("ctid")
    written = {t.lower() for t in WRITES.findall(text)} & PROJECT_TABLES
    if len(written) > 1:
        found.append(f"writes {len(written)} project tables: {', '.join(sorted(written))}")
    tables = {t for t in PROJECT_TABLES if re.search(rf"\b{t}\b", text)}
    if tables and "%(project)s" not in text:
        found.append("a project table without %(project)s")
    return found


def text_of(statement: str | Composable) -> str:
    return statement if isinstance(statement, str) else statement.as_string(None)


def statements() -> Iterator[tuple[str, str]]:
    for module in (ingest_sql, plans_sql, query_sql, lifecycle_sql, counts, idempotency, projects, revocation,
                   suppressions):
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, (str, Composable)):
                text = text_of(value)
                if re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\b", text):
                    yield f"{module.__name__}.{name}", text
    # Composed per request: every variant.
    for events in (False, True):
        for after in (False, True):
            for users in (False, True):
                yield f"query.sql.counts_window({events}, {after}, {users})", text_of(
                    query_sql.counts_window(events=events, after=after, unique_users=users))
    yield "query.sql.list_events(all)", text_of(query_sql.list_events(frozenset(query_sql._EVENT_FILTERS) - {"no_violations"}))


STATEMENTS = dict(statements())


def test_the_scan_finds_the_statements():
    assert {"ingest.sql.INSERT_EVENTS", "ingest.sql.STORE_EVENTS", "shared.counts.APPEND_COUNTS",
            "shared.counts.TAKE_DELTAS", "plans.sql.REPLACE_SCHEMA", "shared.idempotency.UPSERT_RESPONSE"} <= set(STATEMENTS)


# The one statement that writes two project tables, and why (docs/scaling.md): split in two it
# cost 15 to 20% of ingest throughput on one Postgres, so it is the write on one Postgres only;
# with TALLY_CITUS the service runs STORE_EVENTS and APPEND_COUNTS instead (both scanned here).
TWO_TABLES = {"INSERT_EVENTS"}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_every_statement_keeps_the_citus_rule(name):
    found = violations(STATEMENTS[name])
    short = name.rsplit(".", 1)[-1]
    if short in ACROSS_PROJECTS:
        found = [v for v in found if v != "a project table without %(project)s"]
    if short in TWO_TABLES:
        found = [v for v in found if not v.startswith("writes 2 project tables")]
    assert found == [], f"{name}: {found}"


@pytest.mark.parametrize("bad, why", [
    ("INSERT INTO idempotency_keys (project_id, key) VALUES (%(project)s, 1) ON CONFLICT (project_id, key) "
     "DO UPDATE SET created_at = now()", "volatile function in SET"),
    ("UPDATE event_schemas SET revision = nextval('s') WHERE project_id = %(project)s", "volatile function in SET"),
    ("DELETE FROM event_count_deltas WHERE ctid = ANY(ARRAY(SELECT ctid FROM event_count_deltas)) AND project_id = %(project)s", "ctid"),
    ("WITH i AS (INSERT INTO events (project_id) VALUES (%(project)s) RETURNING event) "
     "INSERT INTO event_count_deltas SELECT %(project)s FROM i", "writes 2 project tables: event_count_deltas, events"),
    ("SELECT count(*) FROM events", "a project table without %(project)s"),
])
def test_the_checker_catches_each_kind_of_violation(bad, why):
    assert why in violations(bad)
