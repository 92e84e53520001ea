"""The Prometheus and Grafana files of the compose stack, checked without a Docker engine.

Every metric a dashboard panel queries must be a series the service exposes: the names are
checked against a live /metrics scrape of `tally serve` after one ingest and one query request
(a labelled metric has no series before its first observation). The scrape is read with
prometheus-client's own parser, so a histogram's series are its `_bucket`, `_sum` and `_count`
samples and the bare family name is not one: a panel that forgot `_bucket` fails here.
"""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tally.app import create_app
from tally.cli import build_parser
from tests.factories import auth_headers, make_batch
from tests.helpers import ROOT, make_settings

DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
DATASOURCES = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
PROVIDERS = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "tally.yml").read_text())
DASHBOARD_FILES = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
DASHBOARDS = {path.name: json.loads(path.read_text()) for path in DASHBOARD_FILES}

# Series Prometheus makes itself for every target, and the labels it adds to every series.
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"job", "instance"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
COUNTER_FUNCTIONS = ("rate", "irate", "increase")


# --- PromQL, read just enough -------------------------------------------------------------------

def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def selectors(expr: str) -> list[tuple[str, set[str], dict[str, str]]]:
    """(metric, label names matched, {label: value} of equality matchers) per series selector."""
    found = []
    for match in re.finditer(r"([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?", expr):
        name, braces = match.group(1), match.group(2) or ""
        tail = expr[match.end():].lstrip()
        # A name followed by "(" is a function; by "by (...)" or "without (...)", an aggregation.
        if name in KEYWORDS or tail.startswith("(") or re.match(r"(?:by|without)\b", tail):
            continue
        if (match.start() and expr[match.start() - 1] == "$") or _inside_grouping(expr, match.start()):
            continue  # a Grafana variable ($__rate_interval), or a label of by (...)/on (...)
        matchers = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', braces)
        found.append((name, {m[0] for m in matchers}, {m[0]: m[2] for m in matchers if m[1] in ("=", "=~")}))
    return found


def _inside_grouping(expr: str, position: int) -> bool:
    for match in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        if match.start(1) <= position < match.end(1):
            return True
    return False


def metric_names(expr: str) -> set[str]:
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", _strip_strings(expr))
    return {name for name, _, _ in selectors(bare)}


def grouping_labels(expr: str) -> set[str]:
    labels = set()
    for match in re.finditer(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in match.group(1).split(",") if label.strip()}
    return labels


def call_arguments(expr: str, function: str) -> list[str]:
    """The text inside each call of `function(...)`, with nested parentheses balanced."""
    arguments = []
    for match in re.finditer(rf"\b{function}\s*\(", expr):
        depth, start = 1, match.end()
        for i in range(start, len(expr)):
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            if depth == 0:
                arguments.append(expr[start:i])
                break
    return arguments


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.extend([panel] if panel["type"] != "row" else [])
        found.extend(panel.get("panels", []))
    return found


def expressions() -> list[tuple[str, str]]:
    return [
        (f"{name}: {panel['title']} {target['refId']}", target["expr"])
        for name, dashboard in DASHBOARDS.items() for panel in panels(dashboard) for target in panel["targets"]
    ]


def test_the_promql_reader_finds_metrics_labels_and_groupings():
    expr = ('histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{job="ingest", route!~"/m|/h"}'
            '[$__rate_interval]))) / on (job) b_total or up * 0')
    assert metric_names(expr) == {"a_bucket", "b_total", "up"}
    assert grouping_labels(expr) == {"le", "route", "job"}
    assert ("a_bucket", {"job", "route"}, {"job": "ingest"}) in selectors(expr)
    assert call_arguments("f(g(x), h(y))", "f") == ["g(x), h(y)"]


# --- the files parse and point at each other -----------------------------------------------------

def test_there_is_a_dashboard_and_every_file_parses():
    assert DASHBOARD_FILES
    assert PROMETHEUS["scrape_configs"] and DATASOURCES["datasources"] and PROVIDERS["providers"]
    for name, dashboard in DASHBOARDS.items():
        assert dashboard["uid"] and dashboard["title"], name
        assert panels(dashboard), name


def test_prometheus_scrapes_each_tally_role_on_the_port_it_serves():
    mounted = [v for v in SERVICES["prometheus"]["volumes"] if v.startswith("./deploy/prometheus/prometheus.yml:")]
    assert mounted == ["./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    for role in ("ingest", "query"):
        args = build_parser().parse_args(SERVICES[role]["command"])
        (sd,) = jobs[role]["dns_sd_configs"]
        assert (sd["names"], sd["port"], jobs[role]["metrics_path"]) == ([role], args.port, "/metrics")


def test_grafana_provisions_one_prometheus_datasource_and_the_dashboard_directory():
    (source,) = DATASOURCES["datasources"]
    assert source["type"] == "prometheus" and source["uid"]
    assert source["url"] == "http://prometheus:9090"
    (provider,) = PROVIDERS["providers"]
    volumes = SERVICES["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in volumes


def test_every_panel_and_target_uses_the_provisioned_datasource_uid():
    (source,) = DATASOURCES["datasources"]
    for name, dashboard in DASHBOARDS.items():
        for panel in panels(dashboard):
            assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == source["uid"], (name, panel["title"])


def test_the_dashboard_covers_what_operators_asked_for():
    text = " ".join(expr for _, expr in expressions())
    for needed in (
        "tally_ingest_events_total", "tally_ingest_batch_size_bucket", "tally_http_request_duration_seconds_bucket",
        'status=~"5.."', "tally_db_pool_requests_waiting", "tally_query_duration_seconds_bucket",
    ):
        assert needed in text, needed


def test_every_job_a_panel_selects_is_a_scrape_job():
    jobs = {job["job_name"] for job in PROMETHEUS["scrape_configs"]}
    for where, expr in expressions():
        for _, _, equal in selectors(expr):
            if "job" in equal:
                assert set(equal["job"].split("|")) <= jobs, where


def test_histogram_quantiles_read_buckets_grouped_by_le():
    for where, expr in expressions():
        for argument in call_arguments(expr, "histogram_quantile"):
            assert all(name.endswith("_bucket") for name in metric_names(argument)), where
            assert "le" in grouping_labels(argument), where


# --- against what the service exposes ------------------------------------------------------------

@pytest.fixture(scope="module")
def exposed(live_server) -> dict[str, tuple[str, set[str]]]:
    """{series name: (family type, label names)} from a live scrape after real traffic."""
    project = "dash_" + uuid.uuid4().hex[:12]
    headers = auth_headers(project)
    batch = make_batch(2)
    batch["batch"].append({"type": "track", "event": "No Id", "userId": "u"})  # rejected: missing_message_id
    with httpx.Client(base_url=live_server, headers=headers, timeout=10) as client:
        assert client.post("/v1/batch", json=batch).status_code == 200
        assert client.get("/v1/aggregates", params={"interval": "hour"}).status_code == 200
        assert client.get("/v1/events").status_code == 200
        scrape = client.get("/metrics").text
    series: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            _, labels = series.get(sample.name, (family.type, set()))
            series[sample.name] = (family.type, labels | set(sample.labels))
    return series


def test_every_metric_a_panel_queries_is_exposed_by_the_service(exposed):
    for where, expr in expressions():
        missing = metric_names(expr) - exposed.keys() - PROMETHEUS_SERIES
        assert not missing, (where, missing)


def test_every_label_a_panel_matches_or_groups_by_exists_on_its_metrics(exposed):
    for where, expr in expressions():
        for name, matched, _ in selectors(expr):
            if name in exposed:
                assert matched <= exposed[name][1] | TARGET_LABELS, (where, name, matched - exposed[name][1])
        available = set().union(*(exposed.get(name, ("", set()))[1] for name in metric_names(expr))) | TARGET_LABELS
        assert grouping_labels(expr) <= available, (where, grouping_labels(expr) - available)


def test_counters_and_histogram_series_are_only_read_through_rate_or_increase(exposed):
    for where, expr in expressions():
        for name in metric_names(expr):
            kind = exposed.get(name, ("gauge",))[0]
            if kind in ("counter", "histogram", "summary"):
                every = len(re.findall(rf"\b{name}\b", expr))
                rated = len(re.findall(rf"\b(?:{'|'.join(COUNTER_FUNCTIONS)})\(\s*{name}\b", expr))
                assert every == rated, (where, name)


@pytest.mark.parametrize("role", ["ingest", "query"])
def test_a_metric_selected_with_job_role_is_registered_by_that_role(role, database_url, exposed):
    """The live server serves every role; each compose role registers only its own metrics."""
    app = create_app(make_settings(database_url, role=role))  # no lifespan: the pool stays closed
    families = {family.name for family in app.state.services.metrics.registry.collect()}
    series = {name for name in exposed if any(name == f or name.startswith(f + "_") for f in families)}
    for where, expr in expressions():
        for name, _, equal in selectors(expr):
            if equal.get("job") == role and name not in PROMETHEUS_SERIES:
                assert name in series, (where, name, role)
