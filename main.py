"""Entry point: ``python main.py`` serves with gunicorn; ``gunicorn main:app`` imports ``app``."""

import sys

from initialize import ConfigError
from initialize import create_app

try:
    app = create_app()
except ConfigError as error:
    sys.exit(str(error))

if __name__ == "__main__":
    from initialize.server import run

    run()
