"""The import arrows (tally -> ingest, query, plans -> shared; the three features independent),
checked by import-linter against the contracts in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.helpers import ROOT


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert len(contracts) >= 3
    for contract in contracts:
        assert f"{contract['name']} KEPT" in result.stdout
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout
