"""One error catalog (shared/errors.py), and the documentation equal to it: every problem code
with its status in docs/errors.md, every per-event rejection code in docs/errors.md and
docs/ingest.md, and each code raised somewhere in the code (no dead entries)."""

from __future__ import annotations

import re

from shared.errors import HTTP_CODES, AppError, Rejection
from tests.helpers import ROOT

SOURCES = [p for package in ("ingest", "query", "plans", "shared", "tally") for p in (ROOT / package).rglob("*.py")]
CODE = "\n".join(p.read_text() for p in SOURCES if p.name != "errors.py")


def subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *subclasses(direct))]


# Classes that name a code of their own; a base such as the 503 `Retryable` names none.
CATALOG = [cls for cls in subclasses(AppError) if "code" in vars(cls)]


def table_rows(text: str, first_header: str) -> list[list[str]]:
    """The rows of the markdown table whose header starts with `first_header`, as cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def codes_in(cell: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", cell))


def test_every_problem_code_is_documented_with_its_status_and_nothing_else_is():
    documented = {(int(status), code) for status, codes, _ in table_rows((ROOT / "docs/errors.md").read_text(), "status")
                  for code in codes_in(codes)}
    declared = {(cls.status, cls.code) for cls in CATALOG} | {(AppError.status, AppError.code)}
    declared |= {(status, code) for status, (code, _) in HTTP_CODES.items()}
    assert documented == declared


def test_every_problem_class_is_raised_somewhere():
    unused = [cls.__name__ for cls in CATALOG if not re.search(rf"\b{cls.__name__}\b", CODE)]
    assert unused == []


def test_the_table_of_rejection_codes_is_the_catalog():
    text = (ROOT / "docs/errors.md").read_text()
    documented = set().union(*(codes_in(row[0]) for row in table_rows(text, "per-event code")))
    assert documented == {code.value for code in Rejection}


def test_docs_ingest_lists_exactly_the_rejection_codes():
    text = (ROOT / "docs/ingest.md").read_text()
    paragraph = text.split("Per-event rejection codes", 1)[1].split("\n\n", 1)[0]
    assert codes_in(paragraph) == {code.value for code in Rejection}


def test_every_rejection_code_is_raised_by_the_per_event_checks():
    checks = (ROOT / "ingest/checks.py").read_text()
    unused = [code.name for code in Rejection if f"Rejection.{code.name}" not in checks]
    assert unused == []
