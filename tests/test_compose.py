"""Static checks of the production panel stack (docker-compose.yml and Dockerfile).

No Docker engine on these hosts, so nothing is started: the files are read as data and
checked for what keeps the stack correct and safe. Plain pytest, no Django fixtures.
"""
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PANEL_STACK = {"postgres", "redis", "web", "worker", "beat", "migrate"}
BUILT_FROM_REPO = ("web", "worker", "beat", "migrate")


@pytest.fixture(scope="module")
def services():
    data = yaml.safe_load(COMPOSE.read_text())
    return data["services"]


def argv(command) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def volume_sources(service: dict) -> list[str]:
    sources = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            sources.append(str(volume.get("source", "")))
        else:
            sources.append(str(volume).split(":", 1)[0])
    return sources


def queues(command) -> list[str]:
    args = argv(command)
    found = []
    for i, arg in enumerate(args):
        if arg in ("-Q", "--queues") and i + 1 < len(args):
            found += args[i + 1].split(",")
        elif arg.startswith("--queues="):
            found += arg.split("=", 1)[1].split(",")
        elif arg.startswith("-Q") and len(arg) > 2:
            found += arg[2:].split(",")
    return found


def test_compose_has_panel_stack(services):
    assert PANEL_STACK <= set(services), f"missing: {PANEL_STACK - set(services)}"
    # Node agents run as root on the LXC hosts, never inside this stack.
    assert not any("agent" in name for name in services)


@pytest.mark.parametrize("name", BUILT_FROM_REPO)
def test_compose_panel_services_build_from_dockerfile(services, name):
    build = services[name].get("build")
    assert build is not None, f"{name} does not build the repository image"
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    assert (ROOT / context).resolve() == ROOT
    assert dockerfile == "Dockerfile"


def test_compose_worker_consumes_panel_queue(services):
    args = argv(services["worker"]["command"])
    assert "celery" in args[0] and "worker" in args
    assert "panel" in queues(args)
    assert "beat" in argv(services["beat"]["command"])
    assert argv(services["migrate"]["command"])[-2:] == ["migrate", "--noinput"]


def test_compose_redis_never_evicts_jobs(services):
    args = argv(services["redis"].get("command"))
    assert "--maxmemory-policy" in args
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--appendonly") + 1] == "yes"


def test_compose_no_privileged_service_or_docker_socket(services):
    for name, service in services.items():
        assert not service.get("privileged"), f"{name} is privileged"
        assert service.get("network_mode") != "host", f"{name} uses the host network"
        assert service.get("pid") != "host", f"{name} shares the host pid namespace"
        for source in volume_sources(service):
            assert "docker.sock" not in source, f"{name} mounts the Docker socket"


def test_compose_secrets_come_from_environment(services):
    interpolated = re.compile(r"^\$\{HAKO_SECRET_KEY(:?[?-][^}]*)?\}$")
    web_env = environment(services["web"])
    assert "HAKO_SECRET_KEY" in web_env
    for name, service in services.items():
        env = environment(service)
        if "HAKO_SECRET_KEY" in env:
            assert interpolated.match(env["HAKO_SECRET_KEY"]), f"{name} hard-codes the secret key"
            assert ":?" in env["HAKO_SECRET_KEY"], f"{name} must refuse to start without a key"
    # The database password is not written into the file either.
    db_password = environment(services["postgres"])["POSTGRES_PASSWORD"]
    assert db_password.startswith("${")
    url = web_env["HAKO_DATABASE_URL"]
    assert re.match(r"^postgres://hako:\$\{[^}]+\}@postgres:5432/hako$", url), url


def test_compose_waits_for_healthy_backends_and_migration(services):
    for name in ("postgres", "redis"):
        assert services[name].get("healthcheck"), f"{name} has no healthcheck"
    for name in ("web", "worker"):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"


def test_compose_images_pinned(services):
    for name, service in services.items():
        image = service.get("image")
        if image is None:
            assert "build" in service, f"{name} has neither image nor build"
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.match(r"^\d", tag), f"{name}: {image!r} is not a version tag"


def test_dockerfile_runs_as_non_root():
    assert DOCKERFILE.is_file()
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    base = [line.split()[1] for line in lines if line.upper().startswith("FROM ")]
    assert base and all(":" in b and not b.endswith(":latest") for b in base)
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users, "Dockerfile has no USER line: the panel would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
