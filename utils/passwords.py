"""Password hashing with Argon2id at OWASP's recommended minimum (19 MiB, t=2, p=1).

Logins for unknown users verify against a dummy hash so that both failures cost the same.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError
from argon2.exceptions import VerificationError

_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
_DUMMY_HASH = _HASHER.hash("flask-jwt-redis dummy password, never a real one")


def hash_password(password: str) -> str:
    """Return a salted Argon2id hash string (parameters are part of the string)."""
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check ``password``; with no stored hash, spend the same work and answer False."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
