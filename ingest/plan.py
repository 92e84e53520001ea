"""The tracking plan as each ingest worker holds it: a compiled validator per schema revision.

Reloaded every second by shared.reload, so a schema written through any process applies on
every worker within about a second, without a restart, and a request costs no query. A schema
is compiled once per revision (every write gets a new one) and reused until it changes: the
reload ships schema bodies only for revisions this worker has not compiled yet.

Until a worker has loaded the plan once, ingest answers 503 (the service checks `loaded`): it
cannot know which events to check. After that a failed reload keeps the last plan in force.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import jsonschema_rs
from psycopg_pool import AsyncConnectionPool

from ingest import sql
from shared.json_schema import SchemaCompileError, compile_schema

log = logging.getLogger("tally.ingest.plan")

@dataclass(frozen=True, slots=True)
class Rule:
    mode: str  # "enforce" or "flag"
    revision: int
    validator: jsonschema_rs.Validator


NO_RULES: dict[str, Rule] = {}


class TrackingPlan:
    """project -> event name -> Rule; replaced whole on each reload, so readers need no lock."""

    def __init__(self) -> None:
        self._rules: dict[str, dict[str, Rule]] = {}
        self.loaded_at: float | None = None  # time.monotonic() of the last successful load

    @property
    def loaded(self) -> bool:
        return self.loaded_at is not None

    def rules_for(self, project: str) -> dict[str, Rule]:
        return self._rules.get(project, NO_RULES)

    def __len__(self) -> int:
        return sum(len(rules) for rules in self._rules.values())

    async def refresh(self, pool: AsyncConnectionPool, timeout: float) -> None:
        compiled = {rule.revision: rule.validator for rules in self._rules.values() for rule in rules.values()}
        async with pool.connection(timeout=timeout) as conn:
            rows = await (await conn.execute(sql.LOAD_PLAN, {"compiled": list(compiled)})).fetchall()
        plan: dict[str, dict[str, Rule]] = {}
        for project, event, mode, revision, schema in rows:
            validator = compiled.get(revision)
            if validator is None:
                try:
                    validator = compile_schema(schema)
                except SchemaCompileError as exc:
                    # Every schema was compiled when it was written; this only happens if a
                    # new jsonschema-rs reads an old schema differently. The event goes
                    # unchecked rather than every one of its events being refused.
                    log.error("stored schema does not compile", extra={"project": project, "error": str(exc)})
                    continue
            plan.setdefault(project, {})[event] = Rule(mode, revision, validator)
        self._rules = plan
        self.loaded_at = time.monotonic()
