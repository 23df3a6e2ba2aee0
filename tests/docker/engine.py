"""A private Docker engine for the image tests: its own dockerd, socket, data and state.

``dockerd --iptables=false --bridge=none`` with its own ``--data-root``, ``--exec-root``,
``--pidfile`` and a socket in a temporary directory; every ``docker`` command of the tests gets
``DOCKER_HOST`` pointing at that socket (and an empty ``DOCKER_CONFIG``), so no other engine or
socket on the machine is ever touched, and nothing else on the machine sees this one.
``stop()`` removes every container, network and volume of the engine by id, then stops dockerd
by its pid, also after a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from devtools.processes import start_process
from devtools.processes import stop_process
from devtools.processes import wait_until

REQUIRED_COMMANDS = ("dockerd", "docker", "debootstrap", "apt-get", "dpkg-deb", "tar")
START_TIMEOUT = 60.0


class EngineUnavailable(Exception):
    """No private engine can be started here; ``str()`` says why, in one line."""


def missing_prerequisite() -> str | None:
    """Why no engine can be started on this machine, or None."""
    if os.geteuid() != 0:
        return "dockerd and debootstrap need root"
    missing = [name for name in REQUIRED_COMMANDS if shutil.which(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install docker.io debootstrap)"
    return None


class PrivateEngine:
    """One dockerd this process started, and the docker CLI bound to it."""

    def __init__(self) -> None:
        # Short path: the socket's must fit in sun_path (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="fjr-dockerd-"))
        self.socket = self.root / "docker.sock"
        self.log_path = self.root / "dockerd.log"
        config = self.root / "client-config"
        config.mkdir()
        self.env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("DOCKER_") and name != "BUILDKIT_PROGRESS"
        }
        self.env.update(DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=str(config))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start dockerd and wait (bounded) until it answers; EngineUnavailable if it cannot."""
        argv = [
            "dockerd",
            "--iptables=false",
            "--bridge=none",
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "docker.pid"),
            "-H", f"unix://{self.socket}",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = start_process(argv, stdout=log, stderr=subprocess.STDOUT)

        def answers() -> bool:
            if self.process.poll() is not None:
                return True
            return self.run("info", check=False, capture=True).returncode == 0

        if not wait_until(answers, START_TIMEOUT, 0.25) or self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:]
            self.stop()
            raise EngineUnavailable(f"dockerd did not start: {' '.join(tail) or 'no output'}")

    def run(
        self,
        *args: str,
        check: bool = True,
        capture: bool = False,
        timeout: float = 600,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """``docker ARGS`` against this engine only."""
        return subprocess.run(
            ["docker", *args],
            env={**self.env, **(env or {})},
            cwd=cwd,
            check=check,
            stdin=subprocess.DEVNULL,
            capture_output=capture,
            text=True,
            timeout=timeout,
        )

    def ids(self, *args: str) -> list[str]:
        """Ids printed by a listing command (``ps -aq`` …)."""
        return self.run(*args, capture=True).stdout.split()

    def remove_everything(self) -> None:
        """Remove every container, user network and volume of this engine, by id."""
        for container in self.ids("ps", "-aq"):
            self.run("rm", "-f", "-v", container, check=False, capture=True)
        for network in self.ids("network", "ls", "-q", "--filter", "type=custom"):
            self.run("network", "rm", network, check=False, capture=True)
        for volume in self.ids("volume", "ls", "-q"):
            self.run("volume", "rm", "-f", volume, check=False, capture=True)

    def stop(self) -> None:
        """Remove what the engine holds, stop dockerd by pid, delete its directories."""
        try:
            if self.process is not None and self.process.poll() is None:
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self.remove_everything()
                stop_process(self.process, 30)
        finally:
            self._unmount_leftovers()
            shutil.rmtree(self.root, ignore_errors=True)

    def _unmount_leftovers(self) -> None:
        """A killed dockerd can leave overlay or netns mounts under its root: undo only those."""
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        points = [line.split()[1] for line in mounts if len(line.split()) > 1]
        for point in sorted((p for p in points if p.startswith(str(self.root))), reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def timed(label: str, stages: dict[str, float], function, *args: Sequence[str]):
    """Run ``function(*args)`` and record its wall time under ``label``."""
    started = time.monotonic()
    try:
        return function(*args)
    finally:
        stages[label] = time.monotonic() - started
