"""The errors handlers and the guard raise; one handler turns them into SPEC's JSON shape."""

from __future__ import annotations

from http import HTTPStatus

REALM = 'Bearer realm="flask-jwt-redis"'


class ApiError(Exception):
    """An error answered as ``{"code": status, "message": message}`` with extra headers."""

    status: int = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.body_fields: dict[str, str] = {}


class BadRequest(ApiError):
    """A field is missing or malformed."""

    status = HTTPStatus.BAD_REQUEST


class Unauthorized(ApiError):
    """No usable credentials; RFC 6750 asks for a ``WWW-Authenticate`` challenge."""

    status = HTTPStatus.UNAUTHORIZED

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        challenge = f'{REALM}, error="invalid_token"' if invalid_token else REALM
        super().__init__(message, {"WWW-Authenticate": challenge})


class BasicAuthRequired(ApiError):
    """HTTP Basic credentials of a configured client are missing or wrong (RFC 7617)."""

    status = HTTPStatus.UNAUTHORIZED

    def __init__(self, message: str, realm: str) -> None:
        super().__init__(message, {"WWW-Authenticate": f'Basic realm="{realm}"'})


class AccountDisabled(ApiError):
    """A correct password for an account an operator disabled."""

    status = HTTPStatus.FORBIDDEN

    def __init__(self) -> None:
        super().__init__("The account is disabled.")


class CsrfFailed(ApiError):
    """A cookie-authenticated request lacks the matching ``X-CSRF-Token`` header."""

    status = HTTPStatus.FORBIDDEN


class NotFound(ApiError):
    """The resource does not exist in this configuration."""

    status = HTTPStatus.NOT_FOUND


class Conflict(ApiError):
    """The username is taken."""

    status = HTTPStatus.CONFLICT


class TooManyAttempts(ApiError):
    """Too many failed logins (per username and address, or per username), or registrations
    from one address; ``Retry-After`` says when the window ends."""

    status = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(
        self, retry_after: int, message: str = "Too many failed logins; try again later."
    ) -> None:
        super().__init__(message, {"Retry-After": str(max(1, retry_after))})


class ServiceUnavailable(ApiError):
    """Redis cannot be reached, so nothing can be checked or recorded."""

    status = HTTPStatus.SERVICE_UNAVAILABLE

    def __init__(self, message: str = "The token store is unavailable; try again shortly.") -> None:
        super().__init__(message, {"Retry-After": "5"})


class OAuthError(ApiError):
    """An RFC 6749 §5.2 error: the body carries ``error`` and ``error_description`` as well.

    :param error: the RFC's code, such as ``invalid_grant``.
    """

    def __init__(
        self,
        error: str,
        message: str,
        status: int = HTTPStatus.BAD_REQUEST,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, headers)
        self.status = status
        self.body_fields = {"error": error, "error_description": message}
