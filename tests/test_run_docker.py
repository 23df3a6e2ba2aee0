"""devtools/docker.py, the Docker mode behind ``./run.sh --docker`` and ``./run.sh stop``.

tests/test_deploy_scripts.py runs it through run.sh against a recording stand-in of the docker
CLI (the exact commands, the secret, the messages); tests/docker/ against a real engine. Here:
its rules one by one, and what it does when docker itself fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import docker
from tests.conftest import SERVICE_VARIABLES

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("value", ["19090", "127.0.0.1:19090", "[::1]:8080", "[::]:19090"])
def test_publish_takes_a_port_or_an_address_and_a_port(value):
    assert docker.check_publish(value) == value


@pytest.mark.parametrize("value", ["", "x", "localhost:80", "19090:9090", "1.2.3.4:", "::1:80"])
def test_a_malformed_publish_names_the_variable(value):
    with pytest.raises(docker.DockerError, match=r"^DOCKER_PUBLISH must be \[address:\]port"):
        docker.check_publish(value)


@pytest.mark.parametrize(
    ("publish", "host"),
    [
        ("19090", "127.0.0.1"),
        ("0.0.0.0:19090", "127.0.0.1"),
        ("10.1.2.3:19090", "10.1.2.3"),
        ("[::]:19090", "[::1]"),
        ("[::1]:19090", "[::1]"),
    ],
)
def test_the_printed_curl_reaches_the_published_address_from_this_machine(publish, host):
    assert docker.curl_host(publish) == host


def test_optional_settings_pass_by_name_when_set_even_empty():
    environ = {"DEMO_USERS": "alice:wonderland-42", "COOKIE_MODE": "", "UNRELATED": "1"}
    assert docker.passthrough_args(environ) == ["-e", "COOKIE_MODE", "-e", "DEMO_USERS"]
    assert docker.passthrough_args({}) == []


STUB = """#!/bin/sh
# docker stand-in: an engine that answers, has the image, and refuses to run containers.
case "$1" in
info) exit 0 ;;
image) exit 0 ;;
network | volume | container) [ "$2" = create ] && exit 0; exit 1 ;;
run) echo "docker: Error response from daemon: stand-in refuses." >&2; exit 125 ;;
*) exit 3 ;;
esac
"""


def run_module(tmp_path: Path, *args: str, stub: bool = True) -> subprocess.CompletedProcess:
    """``python -m devtools.docker args`` with only the stand-in docker (or none) on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if stub:
        (bin_dir / "docker").write_text(STUB)
        (bin_dir / "docker").chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    environ.update(PATH=str(bin_dir), DATA_DIR=str(tmp_path / "data"))
    return subprocess.run(
        [sys.executable, "-m", "devtools.docker", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_failing_docker_command_stops_with_its_status_and_one_line(tmp_path):
    result = run_module(tmp_path, "up")
    assert result.returncode == 125
    lines = result.stderr.splitlines()
    assert "docker: Error response from daemon: stand-in refuses." in lines
    assert lines[-1] == "run.sh: error: docker run failed (exit 125)"
    assert not any("starting flask-jwt-redis" in line for line in lines)  # stopped at Redis
    assert result.stdout == ""


def test_without_the_docker_cli_it_says_so(tmp_path):
    for command in ("up", "stop"):
        result = run_module(tmp_path, command, stub=False)
        assert result.returncode == 1
        assert result.stderr == "run.sh: error: docker is not installed (or not on PATH)\n"


@pytest.mark.parametrize("args", [[], ["down"], ["up", "now"]])
def test_anything_but_up_or_stop_is_a_usage_error(tmp_path, args):
    result = run_module(tmp_path, *args)
    assert result.returncode == 2
    assert "usage: python3 -m devtools.docker up|stop" in result.stderr
