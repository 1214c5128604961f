"""The page shells and static assets: where they live, the headers every dashboard response carries, and that no
path input reaches the page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controlplane.dashboard.security import CSP
from tests.controlplane.conftest import Api

STATIC = Path(__file__).resolve().parents[2] / "controlplane" / "dashboard" / "static"


def test_root_redirects_to_the_dashboard(api: Api) -> None:
    r = api.http.get("/", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/ui/"
    assert r.headers["content-security-policy"] == CSP


@pytest.mark.parametrize("path", ["/ui/", "/ui/signin", "/ui/tokens", "/ui/hardware", "/ui/endpoints/alice/e1"])
def test_pages_are_shells_with_strict_headers(api: Api, path: str) -> None:
    r = api.http.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in r.text and " style=" not in r.text and " on" not in r.text.lower().replace("-", "")


def test_static_assets_are_served_with_the_csp(api: Api) -> None:
    r = api.http.get("/ui/static/js/api.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert r.headers["content-security-policy"] == CSP
    assert api.http.get("/ui/static/../../auth.py").status_code == 404


@pytest.mark.parametrize("path", ["/ui/nope", "/ui/endpoints/alice/Bad_Name", "/ui/endpoints/al%20ice/e1",
                                  "/ui/endpoints/alice/e1/<script>", "/ui/endpoint", "/ui/..%2fapp"])
def test_unknown_pages_are_404_without_echo(api: Api, path: str) -> None:
    r = api.http.get(path)
    assert r.status_code == 404
    assert "script" not in r.text and "Bad_Name" not in r.text and "nope" not in r.text


def test_api_routes_keep_their_own_headers(api: Api) -> None:
    assert "content-security-policy" not in api.http.get("/healthz").headers


SINKS = re.compile(r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(|"
                   r"setAttribute\(\s*[\"']on|createContextualFragment|DOMParser")


def test_no_html_sinks_in_the_dashboard_scripts() -> None:
    """Text reaches the page through textContent only: no script of ours may use an HTML sink (vendored libraries
    are outside our escaping rules and are checked by their own projects)."""
    scripts = [p for p in STATIC.rglob("*.js") if "vendor" not in p.parts]
    assert len(scripts) >= 5
    hits = [f"{p.relative_to(STATIC)}:{n}: {line.strip()}" for p in scripts
            for n, line in enumerate(p.read_text().splitlines(), 1) if SINKS.search(line)]
    assert hits == []


def test_html_has_no_inline_code_or_style() -> None:
    for page in STATIC.rglob("*.html"):
        text = page.read_text()
        assert re.search(r"<script(?![^>]*\bsrc=)", text) is None, page
        assert re.search(r"\sstyle=|<style|\son[a-z]+=", text) is None, page
