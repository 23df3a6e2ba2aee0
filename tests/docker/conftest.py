"""The real-engine tests: a private dockerd, the stand-in base images, ./build.sh as users run it.

Where no engine can be started (not root, docker.io or debootstrap missing, dockerd refusing),
the tests are skipped with the reason in one line; with REQUIRE_DOCKER=1 (CI) that is a
failure. The time of each stage and the image size are printed at the end of the run.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from tests.docker.engine import EngineUnavailable
from tests.docker.engine import PrivateEngine
from tests.docker.engine import missing_prerequisite
from tests.docker.report import REPORT


def skip_or_fail(reason: str, *, module_level: bool = False) -> None:
    """Skip with the reason, or fail under REQUIRE_DOCKER=1 (CI can always start an engine)."""
    if os.environ.get("REQUIRE_DOCKER") == "1":
        pytest.fail(f"REQUIRE_DOCKER=1 but no Docker engine can be started: {reason}", False)
    pytest.skip(f"Docker image tests skipped: {reason}", allow_module_level=module_level)


def pytest_collect_file(file_path, parent) -> None:
    """Check the prerequisites once, at collection: one skip line for the whole module."""
    reason = missing_prerequisite()
    if reason and file_path.name.startswith("test_"):
        skip_or_fail(reason, module_level=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def engine() -> Iterator[PrivateEngine]:
    """A private dockerd for the session, removed with everything in it at the end: also
    when the run is stopped by SIGTERM (a CI timeout), which pytest then handles as Ctrl-C,
    tearing fixtures down, instead of dying with dockerd and its containers left running."""
    engine = PrivateEngine()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            engine.start()
        except EngineUnavailable as error:
            skip_or_fail(str(error))
        try:
            yield engine
        finally:
            engine.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Image size and the time of each stage, when the image tests ran."""
    if REPORT:
        terminalreporter.section("Docker image")
        for name, value in REPORT.items():
            terminalreporter.write_line(f"{name}: {value}")
