"""docker-compose.yml, the Dockerfile and deploy/ keep the shape the README relies on.

Compose and image builds cannot run on the development machines, so the structure is checked here: the services
and their roles, healthchecks, start order, the monitoring profile, secrets (only from the environment, never
written in the file), the environment variables used, and the Prometheus targets. The container healthcheck
script itself is run against a loopback HTTP server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
import yaml
from helpers import free_port

from bot.config import load_config

ROOT = Path(__file__).resolve().parent.parent
APP = PurePosixPath("/app")  # where the Dockerfile puts the repository
ROLES = ("signals", "risk", "paper")
HTTP_PORT = 8787
CONFIG_IN_IMAGE = "/app/config/docker.yaml"

# Every environment variable the compose file may use (in a service, a secret's source or an interpolation);
# each is explained in the README's Docker section.
DOCUMENTED_VARIABLES = frozenset(
    {
        "ARBBOT_REDIS_URL",
        "ARBBOT_REDIS_PREFIX",
        "ARBBOT_REDIS_PASSWORD",
        "ARBBOT_REDIS_PASSWORD_FILE",
        "ARBBOT_SIGNING_KEY",
        "ARBBOT_SIGNING_KEY_FILE",
        "ARBBOT_HTTP_HOST",
        "ARBBOT_HTTP_PORT",
    }
)
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(compose_text)  # resolves the x-arbbot anchor and `<<` merges as compose does
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions((ROOT / "Dockerfile").read_text(encoding="utf-8"))


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    result = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1] :]


def _in_repo(path_in_image: str) -> Path:
    """The repository file that the image holds at `path_in_image` (the Dockerfile copies the repo to /app)."""
    return ROOT / PurePosixPath(path_in_image).relative_to(APP)


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    assert isinstance(command, list), "commands are exec-form lists, so no shell word-splitting applies"
    return [str(part) for part in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "environments are mappings"
    return {str(key): str(value) for key, value in environment.items()}


def _healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


# --- services, roles and start order ---------------------------------------------------------------------------


def test_redis_the_three_roles_and_the_optional_services(services: dict[str, Any]) -> None:
    assert set(services) == {"redis", *ROLES, "prometheus", "demo"}
    always_on = {name for name, service in services.items() if not service.get("profiles")}
    assert always_on == {"redis", *ROLES}, "`docker compose up -d` starts Redis and the roles only"


@pytest.mark.parametrize("role", ROLES)
def test_each_role_runs_the_daemon_with_its_role_only(services: dict[str, Any], role: str) -> None:
    command = _command(services[role])
    assert command[0] == "run"
    assert command[command.index("-c") + 1] == CONFIG_IN_IMAGE
    assert command[command.index("--roles") + 1] == role
    assert services[role]["restart"] == "unless-stopped"


def test_the_roles_share_one_image_built_from_the_dockerfile(services: dict[str, Any]) -> None:
    images = {services[role]["image"] for role in ROLES}
    assert len(images) == 1
    assert all(services[role]["build"] == "." for role in ROLES)


def test_the_image_runs_arbbot(dockerfile: list[tuple[str, str]]) -> None:
    final = dict(_final_stage(dockerfile))
    assert final["ENTRYPOINT"] == '["arbbot"]'


def test_the_containers_config_is_valid_and_listens_for_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("ARBBOT_")]:
        monkeypatch.delenv(name)
    config = load_config(_in_repo(CONFIG_IN_IMAGE))
    assert config.daemon.http_host == "0.0.0.0"
    assert config.daemon.http_port == HTTP_PORT
    assert not any(venue.simulated for venue in config.venues.values()), "the containers trade the real venues"
    assert urlsplit(config.redis.url).password is None


def test_the_paper_ledger_is_on_the_paper_services_named_volume(
    compose: dict[str, Any], services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith("ARBBOT_")]:
        monkeypatch.delenv(name)
    ledger = PurePosixPath(load_config(_in_repo(CONFIG_IN_IMAGE)).paper.ledger_path)
    mounts = [str(volume).split(":") for volume in services["paper"]["volumes"]]
    named = [(source, PurePosixPath(target)) for source, target, *_ in mounts if source in compose["volumes"]]
    assert any(ledger.is_relative_to(target) for _, target in named), (ledger, named)


def test_every_service_but_the_demo_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        if name == "demo":
            assert check == {"disable": True}
            continue
        assert check and not check.get("disable"), name
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert check["interval"] and check["timeout"] and check["retries"] >= 1, name


@pytest.mark.parametrize("role", ROLES)
def test_a_roles_healthcheck_probes_healthz_with_the_script_in_the_image(services: dict[str, Any], role: str) -> None:
    test = services[role]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    assert _in_repo(test[2]).is_file()
    assert test[3:] == ["/healthz"]


def test_redis_healthcheck_authenticates_and_needs_a_pong(services: dict[str, Any]) -> None:
    command = _healthcheck_command(services["redis"])
    assert "redis-cli ping" in command
    assert "REDISCLI_AUTH=" in command and "/run/secrets/redis_password" in command
    assert "grep -q PONG" in command, "redis-cli exits 0 on NOAUTH too"


def test_every_app_service_waits_for_a_healthy_redis(services: dict[str, Any]) -> None:
    for name in (*ROLES, "demo"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_signals_starts_after_risk_and_paper_are_healthy(services: dict[str, Any]) -> None:
    depends = services["signals"]["depends_on"]
    assert {name: depends[name]["condition"] for name in ("risk", "paper")} == {
        "risk": "service_healthy",
        "paper": "service_healthy",
    }


def test_redis_requires_a_password_and_persists_to_a_named_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    redis = services["redis"]
    script = " ".join(_command(redis))
    assert re.search(r"requirepass \"\$\$\(sed [^)]*/run/secrets/redis_password\)\"", script)
    assert "redis-server -" in script, "the password goes in on stdin, not in argv"
    assert "--appendonly yes" in script
    assert "redis_password" in redis["secrets"]
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in compose["volumes"]
    assert redis["image"].startswith("redis:7")
    assert redis["user"] == "redis"


# --- secrets and environment ---------------------------------------------------------------------------------


def test_secrets_come_from_the_environment_only(compose: dict[str, Any]) -> None:
    secrets = compose["secrets"]
    assert set(secrets) == {"redis_password", "signing_key"}
    assert {name: set(secret) for name, secret in secrets.items()} == {name: {"environment"} for name in secrets}
    assert secrets["redis_password"]["environment"] == "ARBBOT_REDIS_PASSWORD"
    assert secrets["signing_key"]["environment"] == "ARBBOT_SIGNING_KEY"


@pytest.mark.parametrize("service_name", [*ROLES, "demo"])
def test_app_services_read_secrets_from_files_they_are_granted(services: dict[str, Any], service_name: str) -> None:
    service = services[service_name]
    environment = _environment(service)
    granted = set(service["secrets"])
    assert granted == {"redis_password", "signing_key"}
    files = {name: value for name, value in environment.items() if name.endswith("_FILE")}
    assert files == {
        "ARBBOT_REDIS_PASSWORD_FILE": "/run/secrets/redis_password",
        "ARBBOT_SIGNING_KEY_FILE": "/run/secrets/signing_key",
    }
    assert {PurePosixPath(path).name for path in files.values()} <= granted


def test_no_service_carries_a_secret_value_in_its_environment(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert key.endswith("_FILE") and value.startswith("/run/secrets/"), (name, key)
            if "://" in value:
                assert urlsplit(value).password is None, (name, key)


def test_the_file_holds_no_secret_literal(compose_text: str) -> None:
    assert not re.search(r"://[^/\s@:]*:[^/\s@]+@", compose_text), "a URL with a password"
    for match in re.finditer(r"requirepass\s+(\S+)", compose_text):
        assert match.group(1).startswith('"$$('), "requirepass must read the secret file"
    assert not re.search(r"(?i)(password|secret|token|key)[ \t]*[:=][ \t]*[\"']?[A-Za-z0-9+/=_-]{8,}", compose_text)
    assert not re.search(r"\b[A-Fa-f0-9]{32,}\b|\b[A-Za-z0-9+/]{40,}={0,2}", compose_text), "a key-like literal"


def _strings(node: object) -> Iterator[str]:
    """Every key and value of a parsed YAML document that is a string."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def test_only_documented_variables_are_used(compose: dict[str, Any]) -> None:
    used = {key for service in compose["services"].values() for key in _environment(service)}
    used |= {secret["environment"] for secret in compose["secrets"].values()}
    # Compose interpolates ${VAR} and $VAR in every value; $$ is a literal dollar for the container's shell.
    for text in _strings(compose):
        unescaped = text.replace("$$", "")
        used |= set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", unescaped))
        assert "$" not in re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*", "", unescaped), f"a stray $ in {text!r}"
    assert used <= DOCUMENTED_VARIABLES, used - DOCUMENTED_VARIABLES


def test_the_documented_variables_are_in_the_readmes_docker_section() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Docker\n", 1)[1].split("\n## ", 1)[0]
    assert [name for name in sorted(DOCUMENTED_VARIABLES) if name not in section] == []
    for words in ("docker compose up -d", "--profile monitoring", "/healthz", "/readyz", "/metrics"):
        assert words in section, words


@pytest.mark.parametrize("role", ROLES)
def test_roles_listen_on_all_container_interfaces_at_the_http_port(services: dict[str, Any], role: str) -> None:
    environment = _environment(services[role])
    assert environment["ARBBOT_HTTP_HOST"] == "0.0.0.0"
    assert int(environment["ARBBOT_HTTP_PORT"]) == HTTP_PORT
    url = urlsplit(environment["ARBBOT_REDIS_URL"])
    assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379)


def test_published_ports_are_bound_to_the_hosts_loopback(services: dict[str, Any]) -> None:
    published = [(name, str(port)) for name, service in services.items() for port in service.get("ports", [])]
    assert published
    assert all(port.startswith("127.0.0.1:") for _, port in published), published
    assert "redis" not in {name for name, _ in published}, "Redis stays on the compose network"


# --- Prometheus ----------------------------------------------------------------------------------------------


def test_prometheus_is_optional_under_the_monitoring_profile(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert prometheus["restart"] == "unless-stopped"


def _mounted(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → repository file, for the service's bind mounts of repository files."""
    mounts = {}
    for volume in service["volumes"]:
        source, target, *_ = str(volume).split(":")
        if source.startswith("./"):
            mounts[target] = ROOT / source
    return mounts


def test_prometheus_scrapes_each_roles_metrics(services: dict[str, Any]) -> None:
    mounts = _mounted(services["prometheus"])
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {target for group in job["static_configs"] for target in group["targets"]}
    assert targets == {f"{role}:{HTTP_PORT}" for role in ROLES}
    for group in job["static_configs"]:
        assert "role" not in group.get("labels", {}), "a target label `role` would clash with the metrics' own"
    for rules in config.get("rule_files", []):
        assert rules in mounts, f"{rules} is not mounted into the container"


def test_alert_rules_use_metrics_the_readme_documents(services: dict[str, Any]) -> None:
    mounts = _mounted(services["prometheus"])
    alerts = yaml.safe_load(mounts["/etc/prometheus/alerts.yml"].read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    assert rules
    for rule in rules:
        for metric in re.findall(r"\barbbot_[a-z0-9_]+", rule["expr"]):
            assert f"`{metric}`" in readme, f"{rule['alert']}: {metric} is not a documented metric"


# --- Dockerfile and build context ------------------------------------------------------------------------------


def test_dockerfile_final_stage_is_slim_python_311_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    final = _final_stage(dockerfile)
    assert final[0][1].split()[0] == "python:3.11-slim"
    users = [args for word, args in final if word == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_exposes_the_http_port_with_a_healthcheck(dockerfile: list[tuple[str, str]]) -> None:
    final = _final_stage(dockerfile)
    exposed = {int(port.split("/")[0]) for word, args in final if word == "EXPOSE" for port in args.split()}
    assert HTTP_PORT in exposed
    (healthcheck,) = [args for word, args in final if word == "HEALTHCHECK"]
    assert "deploy/healthcheck.py" in healthcheck and "/healthz" in healthcheck


def test_dockerfile_installs_with_constraints(dockerfile: list[tuple[str, str]]) -> None:
    runs = [args for word, args in _final_stage(dockerfile) if word == "RUN"]
    assert any(re.search(r"pip install .*-c constraints\.txt", run) for run in runs)


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".git", ".venv", ".env", "secrets", "chain/node_modules", ".arbbot"} <= ignored


def test_constraints_pin_exact_versions() -> None:
    lines = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    assert pins
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[^\s=]+", pin) for pin in pins), pins


# --- the healthcheck script ------------------------------------------------------------------------------------


class _Probed(BaseHTTPRequestHandler):
    statuses: ClassVar[dict[str, int]] = {"/healthz": 200, "/readyz": 503}

    def do_GET(self) -> None:
        status = self.statuses.get(self.path, 404)
        body = b"ok\n" if status == 200 else b"no\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def probed_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Probed)
    thread = threading.Thread(target=server.serve_forever, name="probed", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _healthcheck(port: int, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    env.update(ARBBOT_HTTP_PORT=str(port), **extra_env)
    script = ROOT / "deploy" / "healthcheck.py"
    return subprocess.run(
        [sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_healthcheck_passes_on_200(probed_port: int) -> None:
    result = _healthcheck(probed_port)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"127.0.0.1:{probed_port}/healthz: HTTP 200" in result.stdout


def test_healthcheck_fails_on_503(probed_port: int) -> None:
    result = _healthcheck(probed_port, "/readyz")
    assert result.returncode == 1
    assert "HTTP 503" in result.stdout


def test_healthcheck_fails_when_nothing_listens() -> None:
    result = _healthcheck(free_port())
    assert result.returncode == 1
    assert result.stderr == ""


def test_healthcheck_ignores_a_proxy_set_for_the_exchanges(probed_port: int) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    result = _healthcheck(probed_port, http_proxy=dead_proxy, HTTP_PROXY=dead_proxy)
    assert result.returncode == 0, result.stdout + result.stderr
