"""The OpenAPI 3.1 document of the service, kept next to the handlers it describes.

Each route is one entry of :data:`OPERATIONS` built from a few shared pieces (the error shape,
the token response, the ways a token can be presented), so a new route is a few lines here; a
test checks that the document and Flask's URL map list the same routes and methods, the
OpenAPI validator checks the document, and schemathesis checks the running service against it.
"""

from __future__ import annotations

import functools
from typing import Any

from utils.token_lookup import ACCESS_COOKIE
from utils.token_lookup import CSRF_HEADER
from utils.token_lookup import REFRESH_COOKIE

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
PROMETHEUS_TEXT = "text/plain; version=1.0.0; charset=utf-8"

ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
}
TOKENS_SCHEMA = {
    "type": "object",
    "required": ["accessToken", "refreshToken", "tokenType", "expiresIn", "refreshExpiresIn"],
    "properties": {
        "accessToken": {"type": "string"},
        "refreshToken": {"type": "string"},
        "tokenType": {"const": "Bearer"},
        "expiresIn": {"type": "integer"},
        "refreshExpiresIn": {"type": "integer"},
    },
}
# COOKIE_MODE=true: the tokens are only in HttpOnly cookies; the body carries the CSRF value.
COOKIE_SESSION_SCHEMA = {
    "type": "object",
    "required": ["tokenType", "expiresIn", "refreshExpiresIn", "csrfToken"],
    "properties": {
        "tokenType": {"const": "Bearer"},
        "expiresIn": {"type": "integer"},
        "refreshExpiresIn": {"type": "integer"},
        "csrfToken": {"type": "string"},
    },
    "not": {
        "anyOf": [{"required": ["accessToken"]}, {"required": ["refreshToken"]}],
    },
}
NEW_ACCOUNT_SCHEMA = {
    "type": "object",
    "required": ["username", "password"],
    "properties": {
        "username": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{3,32}$"},
        "password": {"type": "string", "minLength": 8, "maxLength": 128},
    },
}
CREDENTIALS_SCHEMA = {
    "type": "object",
    "required": ["username", "password"],
    "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
}
SESSION_SCHEMA = {
    "type": "object",
    "required": [
        "id",
        "current",
        "createdAt",
        "refreshedAt",
        "expiresAt",
        "clientAddress",
        "userAgent",
    ],
    "properties": {
        "id": {"type": "string"},
        "current": {"type": "boolean"},
        "createdAt": {"type": "integer"},
        "refreshedAt": {"type": "integer"},
        "expiresAt": {"type": "integer"},
        "clientAddress": {"type": "string"},
        "userAgent": {"type": "string", "maxLength": 256},
    },
}
OAUTH_ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "error": {
            "enum": [
                "invalid_request",
                "invalid_grant",
                "unsupported_grant_type",
                "invalid_client",
                "temporarily_unavailable",
            ]
        },
        "error_description": {"type": "string"},
    },
}
OAUTH_TOKENS_SCHEMA = {
    "type": "object",
    "required": [
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
    ],
    "properties": {
        "access_token": {"type": "string"},
        "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer"},
        "refresh_token": {"type": "string"},
        "refresh_expires_in": {"type": "integer"},
    },
}
ERROR_MEANINGS = {
    "400": "Missing or malformed fields.",
    "401": "Bad credentials, or a token missing, malformed, expired, revoked or of the wrong type.",
    "403": f"A token taken from a cookie without the matching {CSRF_HEADER} header, or the "
    "right password of a disabled account.",
    "404": "Not found.",
    "409": "The username is taken.",
    "413": "The request body is over the limit.",
    "429": "Too many failed logins (for this username and client, or for this username from "
    "every client), or registrations from this client; see Retry-After.",
    "503": (
        "Redis is unreachable, or (logout, logout-all, ending a session, a password change, "
        "revocation, registration, every /admin change) the change could not be confirmed on "
        "enough Redis replicas and the request may be repeated; see Retry-After."
    ),
}
# Every route may answer these: a malformed request, a body over the limit, Redis failing.
COMMON_ERRORS = ("400", "413", "503")


def _text(description: str, example: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if example is not None:
        schema["const"] = example
    return {"description": description, "content": {TEXT: {"schema": schema}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: str) -> dict[str, Any]:
    return {
        status: {"$ref": f"#/components/responses/Error{status}"}
        for status in sorted({*statuses, *COMMON_ERRORS})
    }


def _oauth_error(description: str) -> dict[str, Any]:
    """RFC 6749 §5.2's ``error`` and ``error_description`` beside ``code`` and ``message`` (a
    body that fails before the endpoint reads it answers the plain error shape)."""
    return _json(description, {"$ref": "#/components/schemas/OAuthError"})


def _oauth_errors(*statuses: str) -> dict[str, Any]:
    """An /oauth route's other errors (its own 400 is RFC 6749's): 429 and 503 carry RFC 6749's
    fields too, as ``temporarily_unavailable``; 413 (refused before the endpoint) does not."""
    responses = {k: v for k, v in _errors(*statuses).items() if k != "400"}
    for status in ("429", "503"):
        if status in responses:
            responses[status] = _oauth_error(f"temporarily_unavailable: {ERROR_MEANINGS[status]}")
    return responses


def _body(schema: dict[str, Any], *media_types: str) -> dict[str, Any]:
    return {"required": True, "content": {media: {"schema": schema} for media in media_types}}


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    tags: tuple[str, ...],
    security: list[dict[str, list[str]]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": list(tags),
        "parameters": [{"$ref": "#/components/parameters/RequestId"}],
        "responses": responses,
    }
    if security is not None:
        operation["security"] = security
    if body is not None:
        operation["requestBody"] = body
    return operation


# How an access token may be presented (TOKEN_LOOKUP's defaults); the refresh route also takes
# the jwt_refresh cookie. Optional routes list the anonymous alternative ({}).
ACCESS_TOKEN = [{"bearer": []}, {"queryToken": []}, {"cookieToken": []}]
REFRESH_TOKEN = [{"bearer": []}, {"queryToken": []}, {"refreshCookie": []}]
OPTIONAL_ACCESS_TOKEN = [*ACCESS_TOKEN, {}]

TOKENS = _json(
    "An access and a refresh token (never cached). With COOKIE_MODE=true no token: they are "
    f"set as HttpOnly cookies ({ACCESS_COOKIE}, {REFRESH_COOKIE}) beside the readable "
    "csrf_token cookie, whose value the body repeats for the X-CSRF-Token header.",
    {
        "oneOf": [
            {"$ref": "#/components/schemas/Tokens"},
            {"$ref": "#/components/schemas/CookieSession"},
        ]
    },
)
PUBLIC, USER, OAUTH, OPERATIONS_TAG = ("public",), ("user",), ("oauth",), ("operations",)
ADMIN_TAG = ("admin",)
ADMIN_CLIENT = [{"adminClient": []}]


def _form(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return _body({"type": "object", "required": required, "properties": properties}, FORM)


STRING = {"type": "string"}

OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "/public/ping": {
        "get": _operation(
            "Liveness, in the tutorial's words.", {"200": _text("pong", "pong")}, tags=PUBLIC
        ),
    },
    "/public/register": {
        "post": _operation(
            "Create an account (username 3-32 of A-Z a-z 0-9 _ . -, password 8-128 characters).",
            {
                "201": _json(
                    "Created.",
                    {
                        "type": "object",
                        "required": ["username"],
                        "properties": {"username": {"type": "string"}},
                    },
                ),
                **_errors("400", "409", "429"),
            },
            tags=PUBLIC,
            body=_body(NEW_ACCOUNT_SCHEMA, FORM, JSON),
        ),
    },
    "/public/login": {
        "post": _operation(
            "Check the credentials and issue a token pair in a new session.",
            {"200": TOKENS, **_errors("400", "401", "403", "429")},
            tags=PUBLIC,
            body=_body(CREDENTIALS_SCHEMA, FORM, JSON),
        ),
    },
    "/public/refresh": {
        method: _operation(
            "Spend a refresh token for a new pair; a spent one presented again ends its session.",
            {"200": TOKENS, **_errors("400", "401", "403")},
            tags=PUBLIC,
            security=REFRESH_TOKEN,
        )
        for method in ("get", "post")
    },
    "/public/feed": {
        "get": _operation(
            "The feed for everyone: user is null for anonymous callers.",
            {
                "200": _json(
                    "The feed.",
                    {
                        "type": "object",
                        "required": ["user", "items"],
                        "properties": {
                            "user": {"type": ["string", "null"]},
                            "items": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                ),
                **_errors("400", "401"),
            },
            tags=PUBLIC,
            security=OPTIONAL_ACCESS_TOKEN,
        ),
    },
    "/user/welcome": {
        "get": _operation(
            "Greet the token's user.",
            {"200": _text("Welcome ! <username>"), **_errors("400", "401")},
            tags=USER,
            security=ACCESS_TOKEN,
        ),
    },
    "/user/logout": {
        method: _operation(
            "End this session: its access and refresh tokens stop working at once.",
            {"200": _text("Logout success", "Logout success"), **_errors("400", "401", "403")},
            tags=USER,
            security=ACCESS_TOKEN,
        )
        for method in ("get", "post")
    },
    "/user/logout-all": {
        "post": _operation(
            "End every session of this user.",
            {
                "200": _json(
                    "The sessions ended.",
                    {
                        "type": "object",
                        "required": ["message", "sessions"],
                        "properties": {
                            "message": {"type": "string"},
                            "sessions": {"type": "integer"},
                        },
                    },
                ),
                **_errors("400", "401", "403"),
            },
            tags=USER,
            security=ACCESS_TOKEN,
        ),
    },
    "/user/publish": {
        "post": _operation(
            "The gin-jwt upload case: a title and an optional file, the token in a form field.",
            {
                "200": _json(
                    "What was received.",
                    {
                        "type": "object",
                        "required": ["user", "title", "bytes"],
                        "properties": {
                            "user": {"type": "string"},
                            "title": {"type": "string"},
                            "bytes": {"type": "integer"},
                        },
                    },
                ),
                **_errors("400", "401", "403"),
            },
            tags=USER,
            security=ACCESS_TOKEN,
            body=_body(
                {
                    "type": "object",
                    "required": ["title"],
                    "properties": {
                        "title": {"type": "string"},
                        "token": {"type": "string"},
                        "data": {"type": "string", "contentMediaType": "application/octet-stream"},
                    },
                },
                MULTIPART,
            ),
        ),
    },
    "/user/sessions": {
        "get": _operation(
            "The caller's live sessions, newest first; current marks this token's session.",
            {
                "200": _json(
                    "The sessions.",
                    {
                        "type": "object",
                        "required": ["sessions"],
                        "properties": {"sessions": {"type": "array", "items": SESSION_SCHEMA}},
                    },
                ),
                **_errors("400", "401"),
            },
            tags=USER,
            security=ACCESS_TOKEN,
        ),
    },
    "/user/sessions/{session_id}": {
        "delete": {
            **_operation(
                "End one of the caller's sessions: its tokens stop working at once.",
                {
                    "200": _json(
                        "The session ended.",
                        {
                            "type": "object",
                            "required": ["ended"],
                            "properties": {"ended": STRING},
                        },
                    ),
                    **_errors("400", "401", "403", "404"),
                },
                tags=USER,
                security=ACCESS_TOKEN,
            ),
            "parameters": [
                {"$ref": "#/components/parameters/RequestId"},
                {"name": "session_id", "in": "path", "required": True, "schema": STRING},
            ],
        },
    },
    "/user/password": {
        "post": _operation(
            "Change the password (the current one checked like a login); other sessions end.",
            {
                "200": _json(
                    "How many other sessions ended.",
                    {
                        "type": "object",
                        "required": ["endedSessions"],
                        "properties": {"endedSessions": {"type": "integer"}},
                    },
                ),
                **_errors("400", "401", "403", "429"),
            },
            tags=USER,
            security=ACCESS_TOKEN,
            body=_body(
                {
                    "type": "object",
                    "required": ["password", "newPassword"],
                    "properties": {
                        "password": STRING,
                        "newPassword": {"type": "string", "minLength": 8, "maxLength": 128},
                    },
                },
                FORM,
                JSON,
            ),
        ),
    },
    "/oauth/token": {
        "post": _operation(
            "RFC 6749 token endpoint: the password and refresh_token grants.",
            {
                "200": _json(
                    "Tokens (never cached), in the body whatever COOKIE_MODE says; no cookie.",
                    OAUTH_TOKENS_SCHEMA,
                ),
                "400": _oauth_error(
                    "invalid_request, unsupported_grant_type, or invalid_grant (bad credentials "
                    "or a bad, spent or revoked refresh token)."
                ),
                "403": _oauth_error("invalid_grant: the right password of a disabled account."),
                **_oauth_errors("429"),
            },
            tags=OAUTH,
            body=_form(
                ["grant_type"],
                grant_type={"enum": ["password", "refresh_token"]},
                username=STRING,
                password=STRING,
                refresh_token=STRING,
                client_id=STRING,
            ),
        ),
    },
    "/oauth/revoke": {
        "post": _operation(
            "RFC 7009: end the session of the token; an invalid token is also a 200.",
            {
                "200": _json("Done (whatever the token was).", {"type": "object"}),
                "400": _oauth_error("invalid_request: no token."),
                **_oauth_errors(),
            },
            tags=OAUTH,
            body=_form(
                ["token"],
                token=STRING,
                token_type_hint=STRING,
            ),
        ),
    },
    "/oauth/introspect": {
        "post": _operation(
            "RFC 7662 for resource servers in INTROSPECTION_CLIENTS (HTTP Basic); 404 when none.",
            {
                "200": _json(
                    "Whether the token is live, and its claims if it is.",
                    {
                        "type": "object",
                        "required": ["active"],
                        "properties": {
                            "active": {"type": "boolean"},
                            "token_type": {"enum": ["access_token", "refresh_token"]},
                            "sub": STRING,
                            "username": STRING,
                            "sid": STRING,
                            "jti": STRING,
                            "iss": STRING,
                            "aud": STRING,
                            "exp": {"type": "integer"},
                            "iat": {"type": "integer"},
                        },
                    },
                ),
                "400": _oauth_error("invalid_request: no token."),
                "401": _oauth_error("invalid_client: no or wrong client credentials."),
                **_oauth_errors("404"),
            },
            tags=OAUTH,
            security=[{"introspectionClient": []}],
            body=_form(["token"], token=STRING),
        ),
    },
    "/healthz": {
        "get": _operation(
            "200 while the process serves.",
            {"200": _json("Serving.", {"type": "object", "required": ["status"]})},
            tags=OPERATIONS_TAG,
        ),
    },
    "/readyz": {
        "get": _operation(
            "200 when Redis answers.",
            {"200": _json("Ready.", {"type": "object", "required": ["status"]}), **_errors()},
            tags=OPERATIONS_TAG,
        ),
    },
    "/.well-known/jwks.json": {
        "get": _operation(
            "The public keys (RFC 7517) with asymmetric algorithms; 404 with an HMAC secret.",
            {
                "200": _json(
                    "The key set.",
                    {
                        "type": "object",
                        "required": ["keys"],
                        "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
                    },
                ),
                **_errors("404"),
            },
            tags=OPERATIONS_TAG,
        ),
    },
    "/openapi.json": {
        "get": _operation(
            "This document.",
            {"200": _json("OpenAPI 3.1.", {"type": "object", "required": ["openapi"]})},
            tags=OPERATIONS_TAG,
        ),
    },
    "/metrics": {
        "get": _operation(
            "Prometheus metrics of every worker, for METRICS_ALLOW_IPS; 404 to anyone else.",
            {
                "200": {
                    "description": "Prometheus text format.",
                    "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}},
                },
                **_errors("404"),
            },
            tags=OPERATIONS_TAG,
        ),
    },
}


def _object(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


def _admin(
    summary: str,
    answer: dict[str, Any],
    *errors: str,
    path_parameters: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
    status: str = "200",
) -> dict[str, Any]:
    """An ``/admin`` operation: HTTP Basic with an ADMIN_CLIENTS client (401 without), 404 for
    an unknown user and for anyone ADMIN_CLIENTS and ADMIN_ALLOW_IPS leave out."""
    operation = _operation(
        summary,
        {status: _json("Done.", answer), "401": ADMIN_UNAUTHORIZED, **_errors("404", *errors)},
        tags=ADMIN_TAG,
        security=ADMIN_CLIENT,
        body=body,
    )
    operation["parameters"] = [
        {"$ref": "#/components/parameters/RequestId"},
        *(
            {"name": name, "in": "path", "required": True, "schema": STRING}
            for name in path_parameters
        ),
    ]
    return operation


ADMIN_UNAUTHORIZED = {
    "description": "No or wrong client credentials (HTTP Basic; "
    'WWW-Authenticate: Basic realm="flask-jwt-redis admin").',
    "headers": {"WWW-Authenticate": {"schema": STRING}},
    "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
}
USER_PATH = ("username",)
ADMIN_SESSION_SCHEMA = {
    **SESSION_SCHEMA,
    "required": [name for name in SESSION_SCHEMA["required"] if name != "current"],
    "properties": {k: v for k, v in SESSION_SCHEMA["properties"].items() if k != "current"},
}
ENDED_SESSIONS = _object(endedSessions={"type": "integer", "minimum": 0})

ADMIN_OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "/admin/users": {
        "get": {
            **_admin(
                "Every account, a page at a time (follow next until it is null).",
                _object(
                    users={"type": "array", "items": STRING, "maxItems": 1000},
                    next={"type": ["string", "null"]},
                ),
                "400",
            ),
            "parameters": [
                {"$ref": "#/components/parameters/RequestId"},
                {"name": "cursor", "in": "query", "required": False, "schema": STRING},
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                },
            ],
        },
        "post": _admin(
            "Create an account by the register rules.",
            _object(username=STRING),
            "400",
            "409",
            body=_body(NEW_ACCOUNT_SCHEMA, FORM, JSON),
            status="201",
        ),
    },
    "/admin/users/{username}": {
        "get": _admin(
            "The account, whether it is disabled, and its live sessions.",
            _object(
                username=STRING,
                createdAt={"type": "integer"},
                disabled={"type": "boolean"},
                sessions={"type": "array", "items": ADMIN_SESSION_SCHEMA},
            ),
            path_parameters=USER_PATH,
        ),
        "delete": _admin(
            "Remove the account, its sessions, tokens and counts; the name is free again.",
            _object(deleted=STRING),
            path_parameters=USER_PATH,
        ),
    },
    "/admin/users/{username}/sessions": {
        "delete": _admin(
            "End every session of the user at once.", ENDED_SESSIONS, path_parameters=USER_PATH
        ),
    },
    "/admin/users/{username}/sessions/{session_id}": {
        "delete": _admin(
            "End one live session of the user (404 when it is not one).",
            _object(ended=STRING),
            path_parameters=(*USER_PATH, "session_id"),
        ),
    },
    "/admin/users/{username}/disable": {
        "post": _admin(
            "End every session at once; from then on a correct password gets 403.",
            _object(
                username=STRING,
                disabled={"const": True},
                endedSessions={"type": "integer", "minimum": 0},
            ),
            path_parameters=USER_PATH,
        ),
    },
    "/admin/users/{username}/enable": {
        "post": _admin(
            "Let the user log in again.",
            _object(username=STRING, disabled={"const": False}),
            path_parameters=USER_PATH,
        ),
    },
    "/admin/users/{username}/unlock": {
        "post": _admin(
            "Start the user's failed-login counts (every address, and the account's) from zero.",
            _object(username=STRING),
            path_parameters=USER_PATH,
        ),
    },
    "/admin/users/{username}/password": {
        "post": _admin(
            "Set the password (register rules); every session of the user ends.",
            ENDED_SESSIONS,
            "400",
            path_parameters=USER_PATH,
            body=_body(
                _object(newPassword={"type": "string", "minLength": 8, "maxLength": 128}),
                FORM,
                JSON,
            ),
        ),
    },
}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole document (built once per process)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flask-jwt-redis",
            "version": "1.0.0",
            "description": "JWT login with a Redis allowlist: access and refresh tokens, "
            "rotation with reuse detection, immediate revocation.",
        },
        "paths": OPERATIONS | ADMIN_OPERATIONS,
        "components": {
            "schemas": {
                "Error": ERROR_SCHEMA,
                "OAuthError": OAUTH_ERROR_SCHEMA,
                "Tokens": TOKENS_SCHEMA,
                "CookieSession": COOKIE_SESSION_SCHEMA,
            },
            "parameters": {
                "RequestId": {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "description": "Kept when it matches [A-Za-z0-9._-]{1,64}, else replaced; "
                    "echoed on the response and logged.",
                    "schema": {"type": "string"},
                }
            },
            "responses": {
                f"Error{status}": _json(meaning, {"$ref": "#/components/schemas/Error"})
                for status, meaning in ERROR_MEANINGS.items()
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token"},
                "cookieToken": {"type": "apiKey", "in": "cookie", "name": ACCESS_COOKIE},
                "refreshCookie": {"type": "apiKey", "in": "cookie", "name": REFRESH_COOKIE},
                "introspectionClient": {"type": "http", "scheme": "basic"},
                "adminClient": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "An ADMIN_CLIENTS id and secret, from ADMIN_ALLOW_IPS.",
                },
            },
        },
    }
