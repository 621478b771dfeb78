"""docs/deploy.md stays in step with the code: every service setting, compose service and profile is
documented, and the commands it shows name files that exist."""

from __future__ import annotations

import re

import yaml

from tests.deploy.conftest import COMPOSE_FILE, REPO

DOC = REPO / "docs" / "deploy.md"


def test_every_setting_is_documented() -> None:
    from runtime.backends.tensorrt import CACHE_ENV
    from service.settings import Settings

    text = DOC.read_text()
    for name in [f"WINGMARK_{field.upper()}" for field in Settings.model_fields] + [CACHE_ENV]:
        assert f"`{name}`" in text, f"{name} is missing from docs/deploy.md"


def test_documented_settings_exist() -> None:
    from runtime.backends.tensorrt import CACHE_ENV
    from service.settings import Settings

    known = {f"WINGMARK_{field.upper()}" for field in Settings.model_fields} | {CACHE_ENV}
    compose_vars = set(re.findall(r"\$\{(WINGMARK_\w+)", COMPOSE_FILE.read_text()))
    extra = {"WINGMARK_HEALTHCHECK_URL", "WINGMARK_PUBLISHED_PORT", "WINGMARK_GPU_ID"}  # script / compose
    for name in set(re.findall(r"\bWINGMARK_[A-Z_]+\b", DOC.read_text())):
        assert name in known | compose_vars | extra, f"docs/deploy.md names {name}, which nothing reads"


def test_services_profiles_and_files_are_documented() -> None:
    text = DOC.read_text()
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name, svc in services.items():
        assert f"`{name}`" in text
        for profile in svc.get("profiles", []):
            assert f"`{profile}`" in text
    for path in set(re.findall(r"`((?:docker|docs|service|tests)/[\w./-]+)`", text)):
        assert (REPO / path).exists(), f"docs/deploy.md refers to {path}, which does not exist"
