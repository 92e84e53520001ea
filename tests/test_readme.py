"""The README stays true to the code: every setting and every metric is documented, and the quick
start is the two commands."""

from __future__ import annotations

import re

import pytest

from shared.settings import Settings
from tally.app import create_app
from tests.helpers import ROOT, make_settings

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_in_the_configuration_table(field):
    name = "TALLY_" + field.upper()
    # A row of the table, not a passing mention: `| `TALLY_X` | default | meaning |`.
    assert re.search(rf"^\| `{name}` \|", README, re.MULTILINE), f"{name} has no row in README.md"


def test_quick_start_is_make_run_and_make_test():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.search(r"```\n(.*?)```", quick_start, re.DOTALL)
    assert commands is not None, "the quick start has no command block"
    assert commands.group(1).split("\n")[:-1] == ["make run", "make test"]



def test_the_metrics_table_is_every_registered_metric(database_url):
    app = create_app(make_settings(database_url, role="all"))  # no lifespan: the pool stays closed
    registered = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in app.state.services.metrics.registry.collect()
    }
    table = README.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(tally_[a-z_]+)` \|", table, re.MULTILINE))
    assert documented == registered
