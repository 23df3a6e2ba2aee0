"""Entry point: ``python main.py`` serves with gunicorn; ``gunicorn main:app`` imports ``app``."""

import os
import sys

from initialize import ConfigError

if __name__ == "__main__":
    from initialize.config import load_settings

    try:  # before gunicorn is imported: its config module parses WEB_CONCURRENCY on import
        load_settings(os.environ)
    except ConfigError as error:
        sys.exit(str(error))
    # The master builds no app: each worker imports this module as ``main`` and builds its
    # own, after gunicorn.conf.py has prepared the metrics directory.
    from initialize.server import run

    run()
else:
    from initialize import create_app

    try:
        app = create_app()
    except ConfigError as error:
        sys.exit(str(error))
