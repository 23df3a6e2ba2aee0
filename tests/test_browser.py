"""A real browser: a single-page app on one origin, the service (gunicorn) on another.

Debian's Chromium and chromium-driver, driven through Selenium, run the session a single-page
app runs in cookie mode (docs/browser-and-native-clients.md): login, welcome, a logout refused
without the CSRF header, refresh, logout. Everything the page's script can see is checked for
tokens: the answers (bodies and readable headers) and ``document.cookie``, which may hold only
``csrf_token``. A page from an origin not in CORS_ORIGINS must not read an answer at all.

Without Chromium the test skips with one line, unless REQUIRE_BROWSER=1 (as in CI).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.processes import free_port
from tests.test_server import GUNICORN
from tests.test_server import Served
from tests.test_server import server_env
from tests.test_server import start
from tests.test_server import stop

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
TIMEOUT_SECONDS = 20

# The page's only code: call the API with the browser's cookies and report what a script sees.
# Selenium's execute_async_script calls it with (path, options) and a callback.
PAGE = """<!doctype html><meta charset="utf-8"><title>spa</title>
<script>
const API = "%(api)s";
async function call(path, options, done) {
  try {
    const answer = await fetch(API + path, {credentials: "include", ...options});
    const headers = [...answer.headers].map(([name, value]) => name + ": " + value);
    done({status: answer.status, body: await answer.text(), headers, cookie: document.cookie});
  } catch (error) {
    done({error: String(error), cookie: document.cookie});
  }
}
</script>"""


def browser_binaries() -> tuple[str, str]:
    """Chromium and chromedriver; skips in one line without them unless REQUIRE_BROWSER=1."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {', '.join(missing)} is not installed")
        pytest.skip("no Chromium (apt-get install chromium chromium-driver)")
    return CHROMIUM, CHROMEDRIVER


class PageServer:
    """A tiny HTTP server on a loopback port of its own (its own origin) serving one page."""

    def __init__(self, page: str) -> None:
        body = page.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Quiet: the test reports what matters."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def pages() -> Iterator[tuple[PageServer, PageServer, str]]:
    """The app's page and a stranger's page, each on its own origin, and the API's origin."""
    api = f"http://127.0.0.1:{free_port()}"
    app_page, stranger_page = PageServer(PAGE % {"api": api}), PageServer(PAGE % {"api": api})
    yield app_page, stranger_page, api
    app_page.close()
    stranger_page.close()


@pytest.fixture
def service(redis_server, real_redis, tmp_path, pages) -> Iterator[Served]:
    """gunicorn in cookie mode, allowing only the app page's origin."""
    app_page, _, api = pages
    env = server_env(
        APP_ENV="development",
        REDIS_URL=redis_server.url,
        PORT=api.rsplit(":", 1)[1],
        WEB_CONCURRENCY="1",
        COOKIE_MODE="true",
        CORS_ORIGINS=app_page.origin,
    )
    served = start(GUNICORN, env, tmp_path / "gunicorn.log")
    yield served
    stop(served)


@pytest.fixture
def browser(tmp_path: Path):
    """Headless Chromium with a fresh profile, through chromedriver; quit afterwards."""
    chromium, chromedriver = browser_binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(TIMEOUT_SECONDS)
    driver.set_script_timeout(TIMEOUT_SECONDS)
    yield driver
    driver.quit()


def call(driver, path: str, **options: object) -> dict:
    """Run the page's ``call`` in the browser: what the page's script gets back."""
    return driver.execute_async_script(
        "call(arguments[0], arguments[1], arguments[2])", path, options
    )


def service_json(seen: dict) -> dict:
    """The answer's JSON body, as the page's script read it."""
    return json.loads(seen["body"])


def assert_no_token(seen: dict) -> None:
    """No JWT (they all start with ``eyJ``) in anything the script could read."""
    readable = [seen.get("body", ""), *seen.get("headers", []), seen["cookie"]]
    assert not any("eyJ" in text for text in readable), seen


def test_a_single_page_app_on_another_origin_never_sees_a_token(browser, pages, service):
    app_page, stranger_page, _ = pages
    browser.get(app_page.origin + "/")

    login = call(
        browser,
        "/public/login",
        method="POST",
        headers={"Content-Type": "application/json"},
        body='{"username": "kesa", "password": "123"}',
    )
    assert login["status"] == 200, login
    assert_no_token(login)
    csrf = service_json(login)["csrfToken"]
    assert set(service_json(login)) == {"tokenType", "expiresIn", "refreshExpiresIn", "csrfToken"}
    assert login["cookie"] == f"csrf_token={csrf}"  # jwt and jwt_refresh are HttpOnly

    welcome = call(browser, "/user/welcome")
    assert (welcome["status"], welcome["body"]) == (200, "Welcome ! kesa")

    refused = call(browser, "/user/logout", method="POST")  # no X-CSRF-Token
    assert refused["status"] == 403, refused
    assert call(browser, "/user/welcome")["status"] == 200  # nothing ended

    refreshed = call(browser, "/public/refresh", method="POST", headers={"X-CSRF-Token": csrf})
    assert refreshed["status"] == 200, refreshed
    assert_no_token(refreshed)  # an injected script calling refresh gets no token either
    new_csrf = service_json(refreshed)["csrfToken"]
    assert new_csrf != csrf and refreshed["cookie"] == f"csrf_token={new_csrf}"
    assert call(browser, "/user/welcome")["status"] == 200

    # a page on an origin not in CORS_ORIGINS (same host, another port): the service answers
    # it with no CORS header, so the browser keeps every answer from the page's script
    browser.get(stranger_page.origin + "/")
    for path in ("/user/welcome", "/public/feed"):
        stranger = call(browser, path)
        assert "status" not in stranger and "TypeError" in stranger["error"], stranger

    browser.get(app_page.origin + "/")
    logout = call(browser, "/user/logout", method="POST", headers={"X-CSRF-Token": new_csrf})
    assert (logout["status"], logout["body"]) == (200, "Logout success")
    assert logout["cookie"] == ""
    assert call(browser, "/user/welcome")["status"] == 401
