"""The floor of the layers (the Go app's ``global`` package): typed places in ``app.extensions``.

Nothing is created at import time, and nothing of the app is imported here, not even for type
names: what a slot holds is declared where its type lives (``utils.state``). ``create_app``
fills each slot once; code running inside a request reads it through ``current_app``.
"""

from __future__ import annotations

from typing import Generic
from typing import TypeVar

from flask import Flask
from flask import current_app

T = TypeVar("T")


class AppSlot(Generic[T]):
    """One named entry of ``app.extensions``, set by the factory, read for the current app."""

    def __init__(self, name: str) -> None:
        self.name = name

    def bind(self, app: Flask, value: T) -> None:
        """Store ``value`` on ``app`` (once, at start-up)."""
        app.extensions[self.name] = value

    def get(self) -> T:
        """The current app's value; fails loudly if the app was not built by ``create_app``."""
        try:
            return current_app.extensions[self.name]
        except KeyError:
            raise RuntimeError(f"{self.name} is not initialised: use create_app()") from None
