"""docker-compose.yml and the Dockerfile, checked without a Docker engine: every command is a real
`tally` (or locust) command line, start-up order is by health and completion, every service
declares its health, every mounted file is in the repository, and the image is built from the
hash-checked lock with no secret in it. The Prometheus and Grafana files: tests/test_dashboards.py."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from shared.settings import Settings
from tally.cli import build_parser
from tests.helpers import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# Services running the image's own entrypoint (`tally`); locust runs the same image with its own.
TALLY_SERVICES = [
    name for name, service in SERVICES.items() if service.get("image") == "tally:local" and "entrypoint" not in service
]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def subcommands() -> set[str]:
    parser = build_parser()
    (action,) = [a for a in parser._subparsers._group_actions if a.dest == "command"]
    return set(action.choices)


def test_the_expected_services_exist():
    assert {"postgres", "migrate", "ingest", "query", "prometheus", "grafana", "locust"} <= SERVICES.keys()
    assert set(TALLY_SERVICES) == {"migrate", "ingest", "query"}


def test_only_locust_is_behind_a_profile_so_up_starts_everything_else():
    profiled = {name: service["profiles"] for name, service in SERVICES.items() if "profiles" in service}
    assert profiled == {"locust": ["load"]}


def test_the_image_entrypoint_is_tally():
    entrypoints = [args for name, args in instructions() if name == "ENTRYPOINT"]
    assert entrypoints == ['["tally"]']


@pytest.mark.parametrize("name", TALLY_SERVICES)
def test_each_service_command_is_a_valid_tally_command_line(name):
    command = SERVICES[name]["command"]
    assert command[0] in subcommands()
    build_parser().parse_args(command)  # exits (SystemExit) on anything argparse would refuse


def test_ingest_and_query_serve_only_their_role():
    for name in ("ingest", "query"):
        args = build_parser().parse_args(SERVICES[name]["command"])
        assert (args.command, args.role, args.host) == ("serve", name, "0.0.0.0")
    assert build_parser().parse_args(SERVICES["migrate"]["command"]).command == "migrate"


def test_start_up_waits_for_a_healthy_database_and_a_finished_migration():
    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in SERVICES[name]["depends_on"].items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    for name in ("ingest", "query"):
        assert conditions(name) == {"postgres": "service_healthy", "migrate": "service_completed_successfully"}
    assert SERVICES["migrate"]["restart"] == "no"
    assert conditions("grafana") == {"prometheus": "service_healthy"}
    assert conditions("locust") == {"ingest": "service_healthy", "query": "service_healthy"}


def test_every_dependency_waits_for_a_state_the_dependency_can_reach():
    for name, service in SERVICES.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in SERVICES, (name, dep)
            if spec["condition"] == "service_healthy":
                assert SERVICES[dep]["healthcheck"].get("disable") is not True, (name, dep)
            else:
                assert spec["condition"] == "service_completed_successfully", (name, dep)
                assert SERVICES[dep]["restart"] == "no", (name, dep)


def test_postgres_is_probed_over_tcp_not_the_init_servers_socket():
    probe = " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert "pg_isready -h 127.0.0.1" in probe


def test_every_long_running_service_has_a_healthcheck():
    one_shot = {
        dep for service in SERVICES.values() for dep, spec in service.get("depends_on", {}).items()
        if spec["condition"] == "service_completed_successfully"
    }
    assert one_shot == {"migrate"}
    for name, service in SERVICES.items():
        assert "healthcheck" in service, name
        if name in one_shot:
            assert service["healthcheck"] == {"disable": True}  # said explicitly, not forgotten
        else:
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


def test_the_api_healthchecks_ask_readyz_on_the_served_port():
    for name in ("ingest", "query"):
        port = build_parser().parse_args(SERVICES[name]["command"]).port
        probe = " ".join(SERVICES[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in probe


def test_postgres_keeps_its_data_in_a_named_volume():
    (mount,) = SERVICES["postgres"]["volumes"]
    volume, _, path = mount.partition(":")
    assert path == "/var/lib/postgresql/data"
    assert volume in COMPOSE["volumes"]


def test_every_bind_mount_is_a_file_or_directory_of_the_repository():
    for name, service in SERVICES.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, mount)
                assert mount.endswith(":ro"), (name, mount)  # configuration is read, never written
            else:
                assert source in COMPOSE["volumes"], (name, mount)


def test_the_unauthenticated_uis_are_published_on_loopback_only():
    for name in ("prometheus", "locust"):
        assert all(port.startswith("127.0.0.1:") for port in SERVICES[name]["ports"]), name


def test_locust_runs_the_repository_locustfile_against_both_roles():
    service = SERVICES["locust"]
    assert service["entrypoint"] == ["locust"]
    assert "./loadtests:/app/loadtests:ro" in service["volumes"]
    command = service["command"]
    assert command[command.index("--host") + 1] == "http://ingest:8000"
    assert command[command.index("--query-host") + 1] == "http://query:8000"
    # locust itself parses the command line with the locustfile's own options (--list exits
    # after parsing). A subprocess: locust patches the standard library with gevent on import.
    args = [arg.replace("/app/", f"{ROOT}/") for arg in command]
    env = {**os.environ, "TALLY_JWT_SECRET": "s" * 32}
    run = subprocess.run([sys.executable, "-m", "locust", *args, "--list"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert {"SdkUser", "DashboardUser"} <= set(run.stdout.split())


def test_settings_come_from_the_environment_as_known_tally_settings():
    known = {f"TALLY_{name.upper()}" for name in Settings.model_fields}
    for name in TALLY_SERVICES:
        environment = SERVICES[name]["environment"]
        assert set(environment) <= known, set(environment) - known
        assert "TALLY_DATABASE_URL" in environment


def test_no_secret_is_written_in_compose_or_baked_into_the_image():
    for name, service in SERVICES.items():
        for key, value in service.get("environment", {}).items():
            if re.search(r"SECRET|PASSWORD", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), (name, key, value)
    for instruction, args in instructions():
        if instruction in ("ENV", "ARG"):
            assert not re.search(r"SECRET|PASSWORD|TOKEN|TALLY_JWT", args), args
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".tally/" in ignored


def test_the_image_installs_from_the_lock_with_hashes_then_the_project_without_deps():
    steps = instructions()
    runs = [(i, args) for i, (name, args) in enumerate(steps) if name == "RUN"]
    (lock_step,) = [i for i, args in runs if "-r requirements.lock" in args]
    (project_step,) = [i for i, args in runs if re.search(r"pip install .*--no-deps", args)]
    lock_args = shlex.split(steps[lock_step][1])
    assert lock_args[:2] == ["pip", "install"] and "--require-hashes" in lock_args
    copies = [i for i, (name, args) in enumerate(steps) if name == "COPY" and "requirements.lock" in args]
    assert copies and copies[0] < lock_step < project_step
    # Nothing but the lock installs packages.
    pip_installs = [args for _, args in runs if "pip install" in args]
    assert len(pip_installs) == 2
