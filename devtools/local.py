"""The local mode of ``./run.sh``: pick a Redis, start gunicorn, stop what it started.

``./run.sh --local`` prepares .venv and then runs ``python -m devtools.local``. In the foreground:

1. the configuration is checked first (one line naming the variable, nothing started);
2. a Redis is chosen (``LOCAL_REDIS``): ``REDIS_URL``, else one answering on 127.0.0.1:6379,
   else a private redis-server (redis-local.conf, AOF, data in ``$DATA_DIR/redis-$PORT``), else
   the embedded in-memory stand-in (nothing persists);
3. ``$DATA_DIR/local-$PORT.json`` tells ``flask --app devtools.local …`` in another shell which
   Redis this instance uses (removed on exit);
4. gunicorn serves until it exits or this process gets SIGINT/SIGTERM/SIGHUP; then gunicorn is
   stopped gracefully, then the Redis it started (each bounded by ``STOP_TIMEOUT``).

``create_app`` is the app of that running instance for the Flask command line: users created
with ``flask --app devtools.local create-user NAME`` land in the Redis the instance serves from.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from flask import Flask

from devtools.processes import redis_answers
from devtools.processes import start_process
from devtools.processes import start_redis_server
from devtools.processes import stop_process
from devtools.processes import wait_until
from initialize import create_app as create_service_app
from initialize.config import DEVELOPMENT_DEMO_USERS
from initialize.config import DEVELOPMENT_SECRET
from initialize.config import ConfigError
from initialize.config import load_settings
from utils.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LOCAL_REDIS_CHOICES = ("auto", "private", "embedded")
DEFAULT_REDIS_PORT = 6379
START_TIMEOUT = 15.0
EMBEDDED_WARNING = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  EMBEDDED IN-MEMORY REDIS STAND-IN (fakeredis) on 127.0.0.1:{port} -- NOTHING PERSISTS:
!!  users, sessions and tokens are lost when this stops.
!!  Install redis-server or set REDIS_URL for a real Redis.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


class LocalError(Exception):
    """Why the local mode cannot start; ``str()`` is the one line to print."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Options:
    """The local mode's own settings (the service's are validated by initialize.config)."""

    local_redis: str
    port: int
    data_dir: Path
    stop_timeout: float
    environ: dict[str, str]

    @property
    def state_file(self) -> Path:
        return self.data_dir / f"local-{self.port}.json"


@dataclass
class ChosenRedis:
    """The Redis this instance uses, and the process behind it when this instance started it."""

    url: str
    description: str
    name: str = ""
    process: subprocess.Popen | None = None
    workdir: Path | None = None


def log(message: str) -> None:
    """Progress lines on stderr, as run.sh prints them."""
    print(f"run.sh: {message}", file=sys.stderr, flush=True)


def read_options(environ: Mapping[str, str]) -> Options:
    """Options from the environment; APP_ENV defaults to development here."""
    local_redis = environ.get("LOCAL_REDIS") or "auto"
    if local_redis not in LOCAL_REDIS_CHOICES:
        raise LocalError(
            f"LOCAL_REDIS must be one of {', '.join(LOCAL_REDIS_CHOICES)} (got {local_redis!r})", 2
        )
    port_text = environ.get("PORT") or "9090"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise LocalError(f"PORT must be a TCP port number (got {port_text!r})", 2)
    timeout_text = environ.get("STOP_TIMEOUT") or "40"
    if not timeout_text.isdigit():
        raise LocalError(f"STOP_TIMEOUT must be a number of seconds (got {timeout_text!r})", 2)
    data_dir = Path(environ.get("DATA_DIR") or ROOT / "data").resolve()
    service_environ = {
        **environ,
        "PORT": port_text,
        "APP_ENV": environ.get("APP_ENV") or "development",
    }
    return Options(local_redis, int(port_text), data_dir, float(timeout_text), service_environ)


def check_settings(environ: Mapping[str, str]) -> Settings:
    """The service's settings, checked before anything starts."""
    try:
        return load_settings(environ)
    except ConfigError as error:
        raise LocalError(str(error)) from None


def choose_redis(options: Options) -> ChosenRedis:
    """The Redis for this instance, started here when none is given or found."""
    url = options.environ.get("REDIS_URL")
    if options.local_redis == "auto":
        if url:
            return ChosenRedis(url, "the Redis of REDIS_URL from the environment")
        if redis_answers(DEFAULT_REDIS_PORT):
            return ChosenRedis(
                f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0",
                f"the Redis answering on 127.0.0.1:{DEFAULT_REDIS_PORT}",
            )
        if shutil.which("redis-server"):
            return start_private_redis(options)
        return start_embedded_redis(options)
    if url:
        log(f"LOCAL_REDIS={options.local_redis}: ignoring REDIS_URL")
    if options.local_redis == "private":
        return start_private_redis(options)
    return start_embedded_redis(options)


def start_private_redis(options: Options) -> ChosenRedis:
    """redis-server with redis-local.conf (AOF on), data in $DATA_DIR/redis-$PORT."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise LocalError(
            "LOCAL_REDIS=private but redis-server is not installed (apt-get install redis-server)"
        )
    directory = options.data_dir / f"redis-{options.port}"
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    pid_file = directory / "redis.pid"
    if _pid_file_names_a_live_redis(pid_file):
        raise LocalError(
            f"a redis-server (pid {pid_file.read_text().strip()}) already serves {directory}: "
            f"is another ./run.sh --local running with PORT={options.port}? "
            "Stop it or choose another PORT"
        )
    pid_file.unlink(missing_ok=True)
    config = ["--pidfile", str(pid_file), "--logfile", str(directory / "redis.log")]
    try:
        process, port = start_redis_server(
            binary, directory, str(ROOT / "redis-local.conf"), *config, timeout=START_TIMEOUT
        )
    except RuntimeError as error:
        raise LocalError(f"{error} (see {directory / 'redis.log'})") from None
    return ChosenRedis(
        f"redis://127.0.0.1:{port}/0",
        f"a private redis-server (pid {process.pid}) on 127.0.0.1:{port}, AOF on, "
        f"data in {directory} (log: {directory / 'redis.log'})",
        "the private redis-server",
        process,
    )


def _pid_file_names_a_live_redis(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().strip())
        command = Path(f"/proc/{pid}/comm").read_text()
    except (OSError, ValueError):
        return False
    return "redis" in command


def start_embedded_redis(options: Options) -> ChosenRedis:
    """The in-memory stand-in (fakeredis's TCP server), installing fakeredis when missing."""
    try:
        import fakeredis  # noqa: F401
    except ImportError:
        spec = _fakeredis_pin()
        log(f"installing {spec} into {sys.prefix} for the embedded Redis stand-in")
        subprocess.run(  # noqa: S603 - our own interpreter's pip, a pinned requirement
            [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", spec],
            check=True,
        )
    workdir = Path(tempfile.mkdtemp(prefix="standin-redis-"))
    port_file = workdir / "port"
    argv = [sys.executable, "-m", "devtools.standin_redis", "--port", "0"]
    process = start_process([*argv, "--port-file", str(port_file)], cwd=ROOT)

    def answering() -> bool:
        if process.poll() is not None:
            return True
        return port_file.exists() and redis_answers(int(port_file.read_text()))

    if not wait_until(answering, START_TIMEOUT) or process.poll() is not None:
        stop_process(process, 5)
        shutil.rmtree(workdir, ignore_errors=True)
        raise LocalError("the embedded Redis stand-in did not start")
    port = int(port_file.read_text())
    print(EMBEDDED_WARNING.format(port=port), file=sys.stderr, flush=True)
    return ChosenRedis(
        f"redis://127.0.0.1:{port}/0",
        f"the embedded Redis stand-in (pid {process.pid}) on 127.0.0.1:{port}",
        "the embedded Redis stand-in",
        process,
        workdir,
    )


def _fakeredis_pin() -> str:
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        if line.strip().lower().startswith("fakeredis"):
            return line.strip()
    return "fakeredis[lua]"


def signing_key_line(settings: Settings, environ: Mapping[str, str]) -> str:
    """What signs tokens, for the banner: the truth for HMAC secrets and key files alike."""
    if settings.keys.is_asymmetric:
        path = environ["JWT_PRIVATE_KEY_FILE"]
        return f"{settings.jwt_algorithm} private key from JWT_PRIVATE_KEY_FILE ({path})"
    if settings.keys.signing_key == DEVELOPMENT_SECRET:
        return "the built-in DEVELOPMENT secret (tokens are not safe)"
    source = "JWT_SECRET_FILE" if environ.get("JWT_SECRET_FILE") else "JWT_SECRET"
    return f"{settings.jwt_algorithm} secret from {source}"


def banner(settings: Settings, environ: Mapping[str, str]) -> str:
    """The development banner: what is insecure about this instance."""
    # Only the built-in demo user's password is public; DEMO_USERS' own stay unprinted.
    users = ", ".join(
        f"{name} / {password}" if f"{name}:{password}" == DEVELOPMENT_DEMO_USERS else name
        for name, password in settings.demo_users
    )
    return "\n".join(
        [
            "=" * 72,
            " APP_ENV=development (the default of ./run.sh --local)",
            f"  - signing key: {signing_key_line(settings, environ)}",
            f"  - demo users: {users or 'none (DEMO_USERS is empty)'}",
            " For anything real: APP_ENV=production JWT_SECRET=<32+ random bytes>",
            "=" * 72,
        ]
    )


def write_state(options: Options, redis: ChosenRedis) -> None:
    """Tell `flask --app devtools.local` in other shells which Redis this instance uses."""
    state = {
        "pid": os.getpid(),
        "redis_url": redis.url,
        "redis_key_prefix": options.environ.get("REDIS_KEY_PREFIX", "jwt:"),
    }
    options.data_dir.mkdir(parents=True, exist_ok=True)
    partial = options.state_file.with_suffix(".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as sink:
        json.dump(state, sink)
    partial.replace(options.state_file)


class _Signals:
    """Remembers the first stop signal; the runner checks it between bounded steps."""

    def __init__(self) -> None:
        self.status: int | None = None
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._note)

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        if self.status is None:
            self.status = 129 if signum == signal.SIGHUP else 0


def serve(options: Options) -> int:
    """Run the local mode in the foreground; the exit status."""
    settings = check_settings(options.environ)
    signals = _Signals()
    redis: ChosenRedis | None = None
    gunicorn: subprocess.Popen | None = None
    try:
        redis = choose_redis(options)
        log(f"using {redis.description}")
        environ = {**options.environ, "REDIS_URL": redis.url}
        write_state(options, redis)
        if settings.is_development:
            for line in banner(settings, environ).splitlines():
                log(line)
        where = environ.get("BIND") or f"127.0.0.1:{options.port}"
        log(f"serving on http://{where} (APP_ENV={settings.app_env}); Ctrl-C stops")
        if signals.status is not None:
            return signals.status
        gunicorn = start_process(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "main:app"],
            cwd=ROOT,
            env=environ,
        )
        log(f"gunicorn (pid {gunicorn.pid}) started")
        while gunicorn.poll() is None and signals.status is None:
            time.sleep(0.2)
        if signals.status is not None:
            return signals.status
        log(f"gunicorn exited (status {gunicorn.returncode})")
        return gunicorn.returncode
    finally:
        _stop_all(options, gunicorn, redis)


def _stop_all(
    options: Options, gunicorn: subprocess.Popen | None, redis: ChosenRedis | None
) -> None:
    """Stop what this instance started, gunicorn first (it drains), then its Redis."""
    if gunicorn is not None and gunicorn.poll() is None:
        log(f"stopping gunicorn (pid {gunicorn.pid})")
        stop_process(gunicorn, options.stop_timeout)
    if redis is not None and redis.process is not None:
        log(f"stopping {redis.name} (pid {redis.process.pid})")
        stop_process(redis.process, options.stop_timeout)
    if redis is not None and redis.workdir is not None:
        shutil.rmtree(redis.workdir, ignore_errors=True)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(options.state_file.read_text()).get("pid") == os.getpid():
            options.state_file.unlink()


def create_app() -> Flask:
    """The app of the local instance on $PORT, for ``flask --app devtools.local COMMAND``.

    It reaches the Redis that instance uses (or REDIS_URL, or 127.0.0.1:6379 when none runs),
    seeds nothing and needs no key configuration: the command line only manages accounts and
    key files.
    """
    options = read_options(os.environ)
    environ = {
        name: value for name, value in options.environ.items() if not name.startswith("JWT_")
    }
    environ.update(APP_ENV="development", DEMO_USERS="")
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(options.state_file.read_text())
        environ.update(REDIS_URL=state["redis_url"], REDIS_KEY_PREFIX=state["redis_key_prefix"])
    return create_service_app(environ)


def main() -> int:
    """Entry point of ``python -m devtools.local`` (run.sh --local)."""
    try:
        return serve(read_options(os.environ))
    except LocalError as error:
        print(f"run.sh: error: {error}", file=sys.stderr)
        return error.status


if __name__ == "__main__":
    sys.exit(main())
