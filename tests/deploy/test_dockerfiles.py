"""The images' Dockerfiles: hadolint-clean, multi-stage, pinned, non-root, health-checked, and every
file they COPY from the build context is let through by .dockerignore (a build would fail otherwise)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import DOCKER, REPO, run

DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "gpu": DOCKER / "Dockerfile.gpu"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by build stage (the global ARGs before the first FROM are dropped)."""
    groups: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            groups.append([])
        if groups:
            groups[-1].append(ins)
    return groups


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    args: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG" and "=" in ins.args:
            name, value = ins.args.split("=", 1)
            args[name] = value
    return args


def env_vars(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.args):
                name, _, value = item.partition("=")
                env[name] = value
    return env


# .dockerignore, with Docker's rules: patterns are matched against the path and each of its parents;
# `*` and `?` stay within one path segment, `**` spans any number; the last matching line wins; `!`
# lets a path back in.
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line[1:] if include else line
        pattern = pattern.strip("/")
        rules.append((include, _pattern_regex(pattern)))
    return rules


def excluded(path: str) -> bool:
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for include, regex in dockerignore_rules():
        if any(regex.match(c) for c in candidates):
            verdict = not include
    return verdict


def test_dockerignore_matcher_follows_docker_rules() -> None:
    assert _pattern_regex("**/__pycache__").match("service/__pycache__")
    assert _pattern_regex("**/__pycache__").match("__pycache__")
    assert not _pattern_regex("*.py").match("service/app.py")


def test_dockerignore_keeps_the_context_small() -> None:
    for path in (".venv/bin/python", "tests/service/test_app.py", ".git/HEAD", "runs/x/metrics.json",
                 "data/300w/a.pts", "service/__pycache__/app.cpython-311.pyc", ".mypy_cache/x",
                 "engines/a.engine", "docs/deploy.md", "train/loop.py"):  # fmt: skip
        assert excluded(path), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "README.md", "service/app.py", "model_store/models", "tools/cli.py",
                 "runtime/cascade.py", "docker/healthcheck.py", "docker/entrypoint.sh"):  # fmt: skip
        assert not excluded(path), f"{path} is needed by the image build"


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_hadolint_is_clean(hadolint: str, variant: str) -> None:
    result = run([hadolint, "--no-color", str(DOCKERFILES[variant])])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_copy_sources_exist_and_reach_the_build_context(variant: str) -> None:
    for stage in stages(parse(DOCKERFILES[variant])):
        for ins in stage:
            if ins.keyword not in {"COPY", "ADD"}:
                continue
            words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
            if "--from=" in ins.args:
                continue
            for source in words[:-1]:
                assert (REPO / source).exists(), f"{variant}: COPY {source}: not in the repository"
                assert not excluded(source), f"{variant}: COPY {source} is excluded by .dockerignore"


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_images_copy_the_serving_layers_and_no_train(variant: str) -> None:
    """model_store/, runtime/ and service/ go in; train/ (torch, training, export) never does, and nothing
    run at build time imports it (the GPU image's engines are built by runtime/backends/tensorrt.py)."""
    instructions = parse(DOCKERFILES[variant])
    sources = [
        w.rstrip("/")
        for ins in instructions
        if ins.keyword in {"COPY", "ADD"} and "--from=" not in ins.args
        for w in [w for w in shlex.split(ins.args) if not w.startswith("--")][:-1]
    ]
    assert {"model_store", "runtime", "service"} <= set(sources), sources
    assert not [s for s in sources if s == "." or s.split("/")[0] == "train"], sources
    runs = " ".join(ins.args for ins in instructions if ins.keyword == "RUN")
    assert not re.search(r"\btrain\b[./]", runs), "a build step imports or copies train"
    assert excluded("train/export/onnx.py"), ".dockerignore lets train/ into the build context"


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_multi_stage_pinned_non_root_with_healthcheck(variant: str) -> None:
    instructions = parse(DOCKERFILES[variant])
    groups = stages(instructions)
    assert len(groups) >= 2, "build and runtime stages"
    args = global_args(instructions)
    for stage in groups:
        image = stage[0].args.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        _, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{variant}: base {image} is not pinned"
    final = groups[-1]
    users = [ins.args for ins in final if ins.keyword == "USER"]
    assert users, f"{variant}: the runtime stage runs as root"
    stage_args = {
        ins.args.split("=")[0]: ins.args.split("=")[1]
        for ins in final
        if ins.keyword == "ARG" and "=" in ins.args
    }
    user = re.sub(r"\$\{(\w+)\}", lambda m: stage_args[m.group(1)], users[-1]).split(":")[0]
    assert user not in {"root", "0"}, f"{variant}: USER {users[-1]}"
    health = [ins.args for ins in final if ins.keyword == "HEALTHCHECK"]
    assert len(health) == 1 and "healthcheck.py" in health[0]
    keywords = [ins.keyword for ins in final]
    assert "ENTRYPOINT" in keywords and "CMD" in keywords
    assert "EXPOSE" in keywords and env_vars(final)["WINGMARK_PORT"] == "8000"
    assert env_vars(final)["WINGMARK_HOST"] == "0.0.0.0"  # reachable from outside the container


def test_image_settings_are_real_settings() -> None:
    from runtime.backends.tensorrt import CACHE_ENV
    from service.settings import Settings

    fields = {"WINGMARK_" + name.upper() for name in Settings.model_fields} | {CACHE_ENV}
    for variant, path in DOCKERFILES.items():
        env = env_vars(stages(parse(path))[-1])
        for name in env:
            if name.startswith("WINGMARK_"):
                assert name in fields, f"{variant}: ENV {name} is not a setting"
        backend = env["WINGMARK_BACKEND"]
        assert backend == {"cpu": "onnxruntime", "gpu": "tensorrt"}[variant]
        assert (
            Settings.model_validate({"backend": backend, "device": env["WINGMARK_DEVICE"]}).backend == backend
        )


def test_cpu_image_has_no_torch_and_gpu_image_uses_nvidia_tensorrt() -> None:
    def pip_installs(path: Path) -> list[str]:
        commands = [c for ins in parse(path) if ins.keyword == "RUN" for c in ins.args.split("&&")]
        return [c for c in commands if "pip install" in c]

    cpu = pip_installs(DOCKERFILES["cpu"])
    # `pip install ".[fast]"`: the package and OpenCV for the crops, no other extra (no torch)
    assert cpu and all("torch" not in c and c.count("[") == ('".[fast]"' in c) for c in cpu), cpu
    assert any('".[fast]"' in c for c in cpu), cpu
    gpu = pip_installs(DOCKERFILES["gpu"])
    assert gpu and all("torch" not in c and "[" not in c for c in gpu), gpu  # TensorRT: the base's own
    assert any("cuda-python==12." in c for c in gpu), gpu
    assert global_args(parse(DOCKERFILES["gpu"]))["TENSORRT_IMAGE"].startswith("nvcr.io/nvidia/tensorrt:")
    checks = " ".join(ins.args for ins in parse(DOCKERFILES["gpu"]) if ins.keyword == "RUN")
    assert "import tensorrt" in checks, "the build fails early when the base has no TensorRT bindings"
