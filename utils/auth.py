"""The account flows that several routes share: log in, rotate, and end a token's session.

``/public/login`` and ``/oauth/token``'s password grant log in the same way, ``/public/refresh``
and the refresh_token grant rotate the same way, and ``/user/logout`` and ``/oauth/revoke`` end a
session the same way; only the shape of their answers differs, which stays in the handlers.
"""

from __future__ import annotations

import hmac
from typing import Any

from utils import audit
from utils.errors import AccountDisabled
from utils.errors import TooManyAttempts
from utils.errors import Unauthorized
from utils.net import Caller
from utils.passwords import hash_password
from utils.passwords import verify_password
from utils.redis import Rotation
from utils.state import get_state
from utils.token_lookup import MAX_TOKEN_LENGTH
from utils.tokens import TokenPair

BAD_CREDENTIALS = "Please provide valid login details."


def log_in(username: str, password: str, caller: Caller) -> TokenPair:
    """Check the password (throttled per username and address) and start a session."""
    state = get_state()
    settings, store = state.settings, state.store
    account_version = check_password(username, password, caller)
    pair = state.tokens.issue_pair(username)
    if not store.record_tokens(
        pair,
        caller,
        account_version=account_version,
        max_sessions=settings.max_sessions_per_user,
        reset_failures=True,
    ):  # the password changed (or the account went) while it was being checked
        raise Unauthorized(BAD_CREDENTIALS)
    audit.audit(audit.LOGIN_SUCCEEDED, username, pair.session_id)
    return pair


def check_password(username: str, password: str, caller: Caller) -> int:
    """A login's check: counted per username and address (429 beyond LOGIN_MAX_FAILURES) and
    per username from every address (429 beyond ACCOUNT_MAX_FAILURES: credential stuffing),
    401 for a wrong password or an unknown user (the same answer, at the same cost), 403 for
    the right password of a disabled account (only then is the account's state told).
    Returns the account version read with the hash, for the change the check allows.

    The audit lines name the user only when the account exists: what was typed as a
    username may be a password typed into the wrong field.
    """
    state = get_state()
    settings = state.settings
    attempt = state.store.begin_login(username, caller.address, settings.login_lock_seconds)
    known_user = username if attempt.password_hash is not None else None
    if attempt.attempts > settings.login_max_failures:
        audit.audit(audit.LOGIN_LOCKED, known_user)
        raise TooManyAttempts(attempt.retry_after)
    if attempt.account_attempts > settings.account_max_failures:
        audit.audit(audit.LOGIN_LOCKED, known_user)
        raise TooManyAttempts(attempt.account_retry_after)
    if not verify_password(attempt.password_hash, password):
        audit.audit(audit.LOGIN_FAILED, known_user)
        raise Unauthorized(BAD_CREDENTIALS)
    if attempt.disabled:
        raise AccountDisabled()
    return attempt.account_version


def rotate(refresh_claims: dict[str, Any], caller: Caller) -> TokenPair:
    """Spend a verified refresh token for a new pair in its session; reuse ends the session
    (but within REFRESH_REUSE_GRACE_SECONDS of the spending it gets a pair too)."""
    state = get_state()
    settings = state.settings
    pair = state.tokens.issue_pair(refresh_claims["username"], session_id=refresh_claims["sid"])
    outcome = state.store.rotate_refresh_token(
        refresh_claims["jti"],
        refresh_claims["exp"],
        pair,
        caller,
        reuse_grace_seconds=settings.refresh_reuse_grace_seconds,
    )
    username, sid = refresh_claims["username"], refresh_claims["sid"]
    if outcome is Rotation.REUSED:
        audit.audit(audit.REFRESH_REUSE_DETECTED, username, sid)
        raise Unauthorized(
            "The refresh token was already used; its session has been ended.", invalid_token=True
        )
    if outcome is Rotation.REVOKED:
        raise Unauthorized("The token has been revoked.", invalid_token=True)
    audit.audit(audit.REFRESHED, username, sid)
    return pair


def change_password(
    claims: dict[str, Any], password: str, new_password: str, caller: Caller
) -> int:
    """Check the current password like a login, store the new one and end every other
    session of the user (RFC 9700 §4.14.2); returns how many sessions ended."""
    username = claims["username"]
    account_version = check_password(username, password, caller)
    ended = get_state().store.change_password(
        username,
        hash_password(new_password),
        claims["sid"],
        caller,
        account_version=account_version,
    )
    if ended < 0:  # the account went, or changed (another password change) since the check
        raise Unauthorized(BAD_CREDENTIALS)
    audit.audit(audit.PASSWORD_CHANGED, username, claims["sid"])
    return ended


def revoke(claims: dict[str, Any]) -> None:
    """End the session a verified token belongs to (RFC 7009 revocation)."""
    get_state().store.end_session(claims["username"], claims["sid"])
    audit.audit(audit.TOKEN_REVOKED, claims["username"], claims["sid"])


def verified_claims(token: str) -> dict[str, Any] | None:
    """The claims of a token of either type whose signature and claims hold, else None."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        return get_state().tokens.verify_any(token)
    except Unauthorized:
        return None


def live_claims(token: str) -> dict[str, Any] | None:
    """As :func:`verified_claims`, and the token is still on the allowlist (not revoked)."""
    claims = verified_claims(token)
    if claims is None:
        return None
    live = get_state().store.is_token_active(claims["username"], claims["sid"], claims["jti"])
    return claims if live else None


def is_configured_client(
    client_id: str | None, secret: str | None, clients: tuple[tuple[str, str], ...]
) -> bool:
    """Whether HTTP Basic credentials name a configured client (INTROSPECTION_CLIENTS,
    ADMIN_CLIENTS), compared in constant time.

    Every configured pair is compared, so the time taken says nothing about which part, or
    which client, nearly matched.
    """
    given_id, given_secret = (client_id or "").encode(), (secret or "").encode()
    matched = False
    for known_id, known_secret in clients:
        id_matches = hmac.compare_digest(given_id, known_id.encode())
        secret_matches = hmac.compare_digest(given_secret, known_secret.encode())
        matched |= id_matches & secret_matches
    return matched
