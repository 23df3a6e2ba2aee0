"""The documentation holds together: relative links stay inside the repository and lead
somewhere (the file exists, and so does the heading), and docs/api.md lists the same routes,
methods and statuses as the service's /openapi.json.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.v1.openapi import openapi_document

ROOT = Path(__file__).resolve().parent.parent
API_REFERENCE = ROOT / "docs" / "api.md"
DOCUMENTS = sorted(
    [
        ROOT / "README.md",
        ROOT / "BENCHMARKS.md",
        ROOT / "bench" / "README.md",
        *ROOT.glob("docs/*.md"),
    ]
)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens, -N on repeats."""
    anchors: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def _relative_links(document: Path) -> list[str]:
    links = LINK.findall(_prose(document.read_text(encoding="utf-8")))
    return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:", link)]


def test_the_documents_are_found() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in DOCUMENTS}
    assert {"README.md", "BENCHMARKS.md", "bench/README.md", "docs/security.md"} <= names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(document: Path) -> None:
    broken = []
    for link in _relative_links(document):
        target_name, _, fragment = link.partition("#")
        target = (document.parent / target_name).resolve() if target_name else document
        if not target.is_relative_to(ROOT):
            broken.append(f"{link}: outside the repository (dead in every other clone)")
        elif not target.exists():
            broken.append(f"{link}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in _anchors(target):
            broken.append(f"{link}: no heading #{fragment} in {target.relative_to(ROOT)}")
    assert not broken, f"{document.relative_to(ROOT)}: {broken}"


# docs/api.md's convention: a heading "### METHOD[, METHOD] /path" per route (OpenAPI's
# {parameter} syntax), then a table whose first column lists every status the route answers.
ROUTE_HEADING = re.compile(r"^###\s+([A-Z]+(?:,\s*[A-Z]+)*)\s+(/\S*)\s*$", re.MULTILINE)
STATUS_ROW = re.compile(r"^\|\s*(\d{3})\s*\|", re.MULTILINE)
ANY_HEADING = re.compile(r"^#{1,6}\s", re.MULTILINE)


def documented_routes(text: str) -> dict[tuple[str, str], set[str]]:
    """``{(method, path): statuses}`` from docs/api.md's route sections."""
    text = FENCE.sub("", text)
    routes: dict[tuple[str, str], set[str]] = {}
    for heading in ROUTE_HEADING.finditer(text):
        following = ANY_HEADING.search(text, heading.end())
        section = text[heading.end() : following.start() if following else len(text)]
        statuses = set(STATUS_ROW.findall(section))
        for method in re.split(r",\s*", heading.group(1)):
            assert (method, heading.group(2)) not in routes, f"{method} {heading.group(2)} twice"
            routes[(method, heading.group(2))] = statuses
    return routes


def openapi_routes() -> dict[tuple[str, str], set[str]]:
    """``{(method, path): statuses}`` from the service's OpenAPI document."""
    return {
        (method.upper(), path): set(operation["responses"])
        for path, operations in openapi_document()["paths"].items()
        for method, operation in operations.items()
    }


def test_the_api_reference_parses_as_its_convention_says():
    sample = """
### GET, POST /a/{id}

| status | when |
| --- | --- |
| 200 | fine |
| 404 | gone |

## Next

| 500 | not the route's: after another heading |
"""
    assert documented_routes(sample) == {
        ("GET", "/a/{id}"): {"200", "404"},
        ("POST", "/a/{id}"): {"200", "404"},
    }


def test_the_api_reference_and_openapi_list_the_same_routes_and_statuses():
    documented = documented_routes(API_REFERENCE.read_text(encoding="utf-8"))
    served = openapi_routes()
    routes = {
        "only in docs/api.md": sorted(documented.keys() - served.keys()),
        "only in /openapi.json": sorted(served.keys() - documented.keys()),
    }
    assert routes == {"only in docs/api.md": [], "only in /openapi.json": []}
    differences = {
        f"{method} {path}": {
            "only in docs/api.md": sorted(documented[route] - served[route]),
            "only in /openapi.json": sorted(served[route] - documented[route]),
        }
        for route in served
        for method, path in [route]
        if documented[route] != served[route]
    }
    assert not differences, differences


def test_the_openapi_document_is_what_the_service_serves(client):
    assert client.get("/openapi.json").get_json() == openapi_document()
