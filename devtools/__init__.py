"""Development tools: the local and Docker modes behind ``./run.sh`` and their helpers.

Not part of the service: the image does not ship this package (.dockerignore), and nothing in
the service's packages imports it.
"""
