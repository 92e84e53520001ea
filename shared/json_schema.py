"""JSON Schema for the tracking plan: compiling a schema once, and describing how an event broke it.

Used by the schema API (a schema that does not compile is refused with 422) and by ingest (one
compiled validator per schema revision, cached by every worker). jsonschema-rs compiles a
draft 2020-12 schema into a Rust validator, the fastest of the validators compared in
docs/tracking-plan.md and the only fast one past draft 7.

Compiled with:
- draft 2020-12 whatever the schema says: a `$schema` naming another draft is refused, so a
  plan never changes meaning with a keyword's draft;
- `format` asserted, not just annotated: "format": "email" rejects "nope";
- no network and no files: `$ref` resolves inside the schema only, so storing a schema can
  neither make the server fetch a URL nor wait on one;
- the linear-time regex engine (no lookaround, no backreferences): a `pattern` cannot make a
  check take exponential time.
"""

from __future__ import annotations

from dataclasses import dataclass

import jsonschema_rs

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# A compiled regex may take at most this much memory: bounds what one `pattern` can cost.
REGEX_SIZE_LIMIT = 1 << 20
# Violations kept per flagged event, and shown per rejected one: the first few tell what to fix.
MAX_VIOLATIONS = 10


class SchemaCompileError(ValueError):
    """The schema cannot be used as a tracking-plan schema; the message says why."""


@dataclass(frozen=True, slots=True)
class Violation:
    pointer: str  # JSON pointer into the event, e.g. /properties/total
    rule: str  # JSON pointer into the schema, to the keyword that failed, e.g. /properties/total/minimum
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "rule": self.rule, "message": self.message}

    def describe(self) -> str:
        return f"{self.pointer or '/'}: {self.message} (rule {self.rule})"


def compile_schema(schema: object) -> jsonschema_rs.Validator:
    """A validator for a stored or submitted schema, or SchemaCompileError saying what is wrong."""
    if not isinstance(schema, dict):
        raise SchemaCompileError("schema must be a JSON object")
    declared = schema.get("$schema")
    if declared is not None and (not isinstance(declared, str) or declared.rstrip("#") != DRAFT_2020_12):
        raise SchemaCompileError(f"$schema must be {DRAFT_2020_12} (draft 2020-12) or absent")
    try:
        return jsonschema_rs.Draft202012Validator(
            schema,
            validate_formats=True,
            offline=True,
            pattern_options=jsonschema_rs.RegexOptions(size_limit=REGEX_SIZE_LIMIT),
        )
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        # The first paragraph names the keyword and the value; the rest repeats them.
        raise SchemaCompileError(str(exc).split("\n\n", 1)[0][:500]) from None


def violations(validator: jsonschema_rs.Validator, properties: object, limit: int = MAX_VIOLATIONS) -> list[Violation]:
    """How `properties` (an event's, or {} when it sent none) breaks the schema; [] when it does not.

    The fast path is one is_valid call; errors are collected only for an event that fails.
    """
    if validator.is_valid(properties):
        return []
    found = []
    for error in validator.iter_errors(properties):
        found.append(Violation(
            pointer=_pointer(["properties", *error.instance_path]),
            rule=_pointer(error.schema_path),
            message=error.message[:300],
        ))
        if len(found) == limit:
            break
    return found


def _pointer(path: list) -> str:
    """RFC 6901: "/" + tokens, with "~" written "~0" and "/" written "~1"."""
    return "".join("/" + str(token).replace("~", "~0").replace("/", "~1") for token in path)
