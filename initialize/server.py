"""``python main.py``: serve the app with gunicorn embedded, as the Go app ran on endless."""

from __future__ import annotations

import importlib
from pathlib import Path

from gunicorn.app.base import Application

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONFIG = PROJECT_ROOT / "gunicorn.conf.py"


class _EmbeddedGunicorn(Application):
    """gunicorn configured only by gunicorn.conf.py (no command line), serving ``main:app``."""

    def init(self, parser: object, opts: object, args: object) -> None:
        """No command-line settings: gunicorn.conf.py and the environment say it all."""

    def load_config(self) -> None:
        self.load_config_from_file(str(GUNICORN_CONFIG))

    def load(self) -> object:
        """``main:app``, imported in the worker as ``gunicorn main:app`` imports it."""
        return importlib.import_module("main").app


def run() -> None:
    """Serve until SIGTERM/SIGINT; SIGHUP reloads gracefully (new workers, old ones drain)."""
    _EmbeddedGunicorn().run()
