"""Development tools: the local runner behind ``./run.sh --local`` and its helpers.

Not part of the service: the image does not ship this package (.dockerignore), and nothing in
the service's packages imports it.
"""
