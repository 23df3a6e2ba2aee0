"""Signing and verification keys: an HMAC secret, or an asymmetric key pair with rotation.

With RS256, ES256 or EdDSA the service signs with JWT_PRIVATE_KEY_FILE and puts the key's
RFC 7638 thumbprint in every token header as ``kid``; it verifies with that key and with
JWT_PREVIOUS_PUBLIC_KEY_FILES, each found only by ``kid`` in this local set (never through a
``jku``, ``x5u`` or ``jwk`` header: RFC 8725 §3.10), and publishes them all as a JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from dataclasses import field
from functools import cached_property
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import ECAlgorithm
from jwt.algorithms import OKPAlgorithm
from jwt.algorithms import RSAAlgorithm

MIN_RSA_BITS = 2048
# RFC 7638 §3.2: the members that enter the thumbprint, per key type.
THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}
_KEY_TYPES: dict[str, tuple[type, str]] = {
    "RS256": (rsa.RSAPublicKey, f"an RSA key of at least {MIN_RSA_BITS} bits"),
    "ES256": (ec.EllipticCurvePublicKey, "an EC P-256 key"),
    "EdDSA": (ed25519.Ed25519PublicKey, "an Ed25519 key"),
}
_TO_JWK = {"RS256": RSAAlgorithm.to_jwk, "ES256": ECAlgorithm.to_jwk, "EdDSA": OKPAlgorithm.to_jwk}


class KeyFileError(ValueError):
    """A key file is unreadable or does not fit the algorithm."""


@dataclass(frozen=True)
class KeySet:
    """What signs new tokens and what may verify presented ones."""

    algorithm: str
    signing_key: Any
    current_kid: str | None = None
    verification_keys: dict[str, Any] = field(default_factory=dict)

    @property
    def is_asymmetric(self) -> bool:
        return self.current_kid is not None

    def verification_key(self, header: dict[str, Any]) -> Any:
        """The key for a token header: the secret, or the local public key named by ``kid``."""
        if not self.is_asymmetric:
            return self.signing_key
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in self.verification_keys:
            raise jwt.InvalidKeyError("unknown kid")
        return self.verification_keys[kid]

    @cached_property
    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """RFC 7517 key set of every public key that may verify a live token (built once)."""
        return {
            "keys": [
                {**public_jwk(key, self.algorithm), "kid": kid, "use": "sig", "alg": self.algorithm}
                for kid, key in self.verification_keys.items()
            ]
        }


def hmac_key_set(algorithm: str, secret: bytes) -> KeySet:
    """A shared secret both signs and verifies."""
    return KeySet(algorithm, secret)


def load_private_key(algorithm: str, path: str) -> Any:
    """Read a PEM private key that fits ``algorithm``; KeyFileError otherwise."""
    private_key = _load(path, serialization.load_pem_private_key, password=None)
    _check_fits(algorithm, private_key.public_key(), path)
    return private_key


def load_public_key(algorithm: str, path: str) -> Any:
    """Read a PEM public key (a rotated-out signing key) that fits ``algorithm``."""
    public_key = _load(path, serialization.load_pem_public_key)
    _check_fits(algorithm, public_key, path)
    return public_key


def asymmetric_key_set(algorithm: str, private_key: Any, previous_public_keys: list[Any]) -> KeySet:
    """Sign with ``private_key``; verify with its public key and the previous ones, by kid."""
    current = private_key.public_key()
    verification_keys = {thumbprint(current, algorithm): current}
    for key in previous_public_keys:
        verification_keys.setdefault(thumbprint(key, algorithm), key)
    return KeySet(algorithm, private_key, thumbprint(current, algorithm), verification_keys)


def public_jwk(public_key: Any, algorithm: str) -> dict[str, str]:
    """The public key as a JWK dict (kty and its parameters)."""
    return _TO_JWK[algorithm](public_key, as_dict=True)


def thumbprint(public_key: Any, algorithm: str) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url without padding)."""
    jwk = public_jwk(public_key, algorithm)
    members = {name: jwk[name] for name in THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def generate_private_key_pem(algorithm: str) -> bytes:
    """A new private key for ``algorithm`` as unencrypted PKCS#8 PEM."""
    if algorithm == "RS256":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    elif algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise KeyFileError(f"{algorithm} is not an asymmetric algorithm")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(private_key_pem: bytes) -> bytes:
    """The PEM public key of a PEM private key."""
    private_key = serialization.load_pem_private_key(private_key_pem, password=None)
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load(path: str, loader: Any, **kwargs: Any) -> Any:
    try:
        return loader(Path(path).read_bytes(), **kwargs)
    except OSError as error:
        raise KeyFileError(f"{path} cannot be read ({error.strerror})") from None
    except (ValueError, TypeError) as error:
        raise KeyFileError(f"{path} is not a PEM key ({type(error).__name__})") from None


def _check_fits(algorithm: str, public_key: Any, path: str) -> None:
    expected_type, description = _KEY_TYPES[algorithm]
    fits = isinstance(public_key, expected_type)
    if fits and algorithm == "RS256":
        fits = public_key.key_size >= MIN_RSA_BITS
    if fits and algorithm == "ES256":
        fits = isinstance(public_key.curve, ec.SECP256R1)
    if not fits:
        raise KeyFileError(f"{path} is not {description}, as {algorithm} needs")
