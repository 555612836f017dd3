"""docker-compose.yml and the Dockerfile keep the shape the README relies on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return dict(compose["services"])


def test_redis_and_demo_services_exist(services: dict[str, Any]) -> None:
    assert {"redis", "demo"} <= services.keys()


def test_redis_has_a_ping_healthcheck(services: dict[str, Any]) -> None:
    check = services["redis"]["healthcheck"]["test"]
    command = " ".join(check) if isinstance(check, list) else check
    assert "redis-cli ping" in command


def test_demo_waits_for_healthy_redis(services: dict[str, Any]) -> None:
    assert services["demo"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_demo_uses_the_redis_service(services: dict[str, Any]) -> None:
    url = urlsplit(services["demo"]["environment"]["ARBBOT_REDIS_URL"])
    assert url.scheme == "redis"
    assert url.hostname == "redis"


def test_dockerfile_installs_with_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^RUN .*pip install .*-c constraints\.txt", dockerfile, re.MULTILINE)


def test_constraints_pin_exact_versions() -> None:
    lines = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    assert pins
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[^\s=]+", pin) for pin in pins), pins
