"""docker-compose.yml: valid for every profile, GPU reserved, engines cached in a volume, CPU fallback.

`docker compose config` (or Debian's docker-compose) parses, validates and interpolates the file without
a Docker engine; the assertions below read what it resolved.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import COMPOSE_FILE, REPO, run

PROFILE_SETS: list[tuple[str, ...]] = [(), ("cpu",), ("grafana",), ("engines",), ("cpu", "grafana")]
# Variables docker-compose.yml interpolates; cleared so that its defaults are what is tested.
COMPOSE_VARS = (
    "MODEL_DIR",
    "PROMETHEUS_PUBLISHED_PORT",
    "GRAFANA_PUBLISHED_PORT",
    "GRAFANA_ADMIN_PASSWORD",
    "COMPOSE_PROFILES",
    "COMPOSE_FILE",
    "COMPOSE_PROJECT_NAME",
)


def compose_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINGMARK_") and k not in COMPOSE_VARS}
    env.update(overrides)
    return env


@functools.cache
def _config_text(
    compose: tuple[str, ...], profiles: tuple[str, ...], env: tuple[tuple[str, str], ...]
) -> str:
    flags = [arg for p in profiles for arg in ("--profile", p)]
    result = run([*compose, "-f", str(COMPOSE_FILE), *flags, "config"], env=compose_env(**dict(env)))
    assert result.returncode == 0, f"compose config failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def resolved(compose: list[str], profiles: tuple[str, ...] = (), **env: str) -> dict[str, Any]:
    """What `compose [--profile P ...] config` resolves (each distinct call runs once per session)."""
    config: dict[str, Any] = yaml.safe_load(
        _config_text(tuple(compose), profiles, tuple(sorted(env.items())))
    )
    return config


def raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def active_services(profiles: tuple[str, ...]) -> set[str]:
    """Services `docker compose --profile ... up` starts: those without profiles or with an active one."""
    return {
        name
        for name, svc in raw()["services"].items()
        if not svc.get("profiles") or set(svc["profiles"]) & set(profiles)
    }


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = (
        service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    )
    return devices


def published_ports(service: dict[str, Any]) -> set[str]:
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(f"{port['published']}:{port['target']}")
        else:
            ports.add(str(port))
    return ports


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=lambda p: "+".join(p) or "default")
def test_config_is_valid_for_every_profile(compose: list[str], profiles: tuple[str, ...]) -> None:
    config = resolved(compose, profiles)
    assert set(config["services"]) >= active_services(profiles)
    if compose[-1] == "compose":  # the v2 plugin filters by profile; Debian's v1 lists every service
        result = run([*compose, "-f", str(COMPOSE_FILE), *[a for p in profiles for a in ("--profile", p)],
                      "config", "--services"], env=compose_env())  # fmt: skip
        assert set(result.stdout.split()) == active_services(profiles)


def test_default_profile_is_the_gpu_stack() -> None:
    assert active_services(()) == {"wingmark", "prometheus"}
    assert active_services(("grafana",)) == {"wingmark", "prometheus", "grafana"}
    assert active_services(("engines",)) == {"wingmark", "prometheus", "build-engines"}
    assert "wingmark-cpu" in active_services(("cpu",))


def test_gpu_services_reserve_one_nvidia_gpu(compose: list[str]) -> None:
    services = resolved(compose)["services"]
    for name in ("wingmark", "build-engines"):
        devices = gpu_devices(services[name])
        assert len(devices) == 1, name
        assert devices[0]["driver"] == "nvidia"
        assert "gpu" in devices[0]["capabilities"]
        assert [str(d) for d in devices[0]["device_ids"]] == ["0"]
        assert env_of(services[name])["WINGMARK_BACKEND"] == "tensorrt"
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile.gpu"


def test_gpu_id_and_ports_come_from_the_environment(compose: list[str]) -> None:
    services = resolved(
        compose, WINGMARK_GPU_ID="3", WINGMARK_PUBLISHED_PORT="18000", PROMETHEUS_PUBLISHED_PORT="19090"
    )["services"]
    assert [str(d) for d in gpu_devices(services["wingmark"])[0]["device_ids"]] == ["3"]
    assert published_ports(services["wingmark"]) == {"18000:8000"}
    assert published_ports(services["prometheus"]) == {"19090:9090"}


def test_engines_persist_in_a_named_volume_at_the_backends_cache_dir(compose: list[str]) -> None:
    from runtime.backends.tensorrt import CACHE_ENV  # the variable the TensorRT backend's engine cache reads

    config = resolved(compose, ("engines",))
    services = config["services"]
    assert services["build-engines"]["command"][0] == "engines"  # the runtime's builder: no train/
    assert services["wingmark"]["command"] == ["serve"]
    assert "engines" in config["volumes"]
    for name in ("wingmark", "build-engines"):
        engine_dir = env_of(services[name])[CACHE_ENV]
        mounts = services[name]["volumes"]
        targets = {
            (m["source"], m["target"]) if isinstance(m, dict) else tuple(m.split(":")[:2]) for m in mounts
        }
        assert ("engines", engine_dir) in targets, mounts


def test_prebuilt_engines_match_the_services_batch_profile(compose: list[str]) -> None:
    """build-engines passes the service's max batch size, so the engine key (which includes the batch
    profile) is the one the service looks up."""
    for size in ("32", "48"):
        services = resolved(compose, ("engines",), WINGMARK_MAX_BATCH_SIZE=size)["services"]
        command = services["build-engines"]["command"]
        assert command[command.index("--max-batch") + 1] == size
        assert env_of(services["wingmark"])["WINGMARK_MAX_BATCH_SIZE"] == size


def test_build_engines_command_is_accepted_by_the_cli(compose: list[str], tmp_path: Path) -> None:
    """The one-shot's arguments parse with the real `wingmark engines` (the runtime's torch-free builder);
    without a GPU it then stops with its 'no CUDA' status (3) instead of an argparse error (2)."""
    command = resolved(compose, ("engines",))["services"]["build-engines"]["command"]
    env = compose_env(WINGMARK_ENGINE_CACHE=str(tmp_path), WINGMARK_MODEL_ROOT=str(tmp_path))
    result = run([sys.executable, "-m", "tools.cli", *command], env=env)
    assert "usage:" not in result.stderr, result.stderr
    assert result.returncode != 2, result.stderr
    if result.returncode == 3:
        assert "wingmark engines:" in result.stderr


def test_cpu_profile_runs_onnxruntime_without_a_gpu(compose: list[str]) -> None:
    service = resolved(compose, ("cpu",))["services"]["wingmark-cpu"]
    assert gpu_devices(service) == []
    assert service["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    env = env_of(service)
    assert env["WINGMARK_BACKEND"] == "onnxruntime" and env["WINGMARK_DEVICE"] == "cpu"
    # Prometheus scrapes the DNS name "wingmark": the CPU service must answer to it as well.
    assert "wingmark" in service["networks"]["default"]["aliases"]


def test_service_settings_are_real_settings() -> None:
    """Every WINGMARK_* variable the compose file sets is a field of service.settings.Settings (or the
    engine cache folder, which the TensorRT backend reads itself)."""
    from runtime.backends.tensorrt import CACHE_ENV
    from service.settings import Settings

    prefix = "WINGMARK_"
    fields = {prefix + name.upper() for name in Settings.model_fields} | {CACHE_ENV}
    for name, svc in raw()["services"].items():
        for var in env_of(svc):
            if var.startswith(prefix):
                assert var in fields, f"{name}: {var} is not a setting of service/settings.py"


def test_service_environment_validates_as_settings(
    compose: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The values compose resolves (defaults included) are accepted by the service's settings."""
    from service.settings import Settings

    services = resolved(compose, ("cpu", "engines"))["services"]
    for name in ("wingmark", "wingmark-cpu", "build-engines"):
        with monkeypatch.context() as m:
            for key in [k for k in os.environ if k.startswith("WINGMARK_")]:
                m.delenv(key)
            for key, value in env_of(services[name]).items():
                m.setenv(key, value)
            settings = Settings()
        assert settings.host == "0.0.0.0" and settings.port == 8000, name
        assert settings.models == [] and str(settings.model_root) == "/models", name
        assert settings.backend == ("onnxruntime" if name == "wingmark-cpu" else "tensorrt"), name


def test_service_containers_are_locked_down(compose: list[str]) -> None:
    services = resolved(compose, ("cpu", "engines"))["services"]
    for name in ("wingmark", "wingmark-cpu", "build-engines"):
        assert services[name]["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in services[name]["security_opt"], name
    assert services["wingmark-cpu"]["read_only"] is True
    assert "/tmp" in services["wingmark-cpu"]["tmpfs"]


def test_mounted_host_files_exist(compose: list[str]) -> None:
    services = resolved(compose, ("cpu", "grafana"))["services"]
    for name, svc in services.items():
        for mount in svc.get("volumes", []):
            source = mount["source"] if isinstance(mount, dict) else mount.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts {source}, which is not in the repository"
    services = resolved(compose, ("cpu", "engines"))["services"]
    for name in ("wingmark", "wingmark-cpu", "build-engines"):
        sources = {m["source"] if isinstance(m, dict) else m.split(":")[0] for m in services[name]["volumes"]}
        assert str(REPO / "model_store" / "models") in sources


MULTI_GPU = REPO / "docker" / "compose.multi-gpu.yml"
NGINX_CONF = REPO / "docker" / "nginx.conf"


def test_multi_gpu_example_pins_one_gpu_per_replica_behind_nginx(compose: list[str]) -> None:
    result = run([*compose, "-f", str(MULTI_GPU), "--profile", "grafana", "config"], env=compose_env())
    assert result.returncode == 0, result.stdout + result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    replicas = {name: svc for name, svc in services.items() if gpu_devices(svc)}
    assert len(replicas) >= 2
    gpu_ids = [str(gpu_devices(svc)[0]["device_ids"][0]) for svc in replicas.values()]
    assert len(set(gpu_ids)) == len(gpu_ids), "two replicas reserve the same GPU"
    for name, svc in replicas.items():
        assert not svc.get("ports"), f"{name} is reached through the load balancer only"
        assert "wingmark" in svc["networks"]["default"]["aliases"], "Prometheus finds replicas by this name"
        assert env_of(svc)["WINGMARK_DEVICE"] == "cuda:0"  # the one reserved GPU, whichever it is
        for mount in svc["volumes"]:
            source = mount["source"] if isinstance(mount, dict) else mount.split(":")[0]
            assert not source.startswith("/") or Path(source).exists(), source
    upstream = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", NGINX_CONF.read_text(), flags=re.M)
    assert sorted(upstream) == sorted((name, "8000") for name in replicas)
    assert published_ports(services["lb"]) == {"8000:8000"}
    for name in ("lb", "prometheus", "grafana"):
        for mount in services[name]["volumes"]:
            source = mount["source"] if isinstance(mount, dict) else mount.split(":")[0]
            assert not source.startswith("/") or Path(source).exists(), f"{name}: {source}"


def test_nginx_accepts_the_largest_request_the_service_accepts() -> None:
    from service.settings import Settings

    match = re.search(r"client_max_body_size\s+(\d+)m;", NGINX_CONF.read_text())
    assert match is not None
    assert int(match.group(1)) * 1024 * 1024 >= Settings.model_fields["max_request_bytes"].default
