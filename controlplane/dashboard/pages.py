"""Dashboard pages: `/` → `/ui/`, and one HTML shell for every page, which names the page's module
(`static/js/pages/<page>.js`); the module fetches what it shows from the public API. A page exists when its module
does, so adding a page is adding a module (and, for a new address shape, a route here).

The shell is the same static file for every page, with the page's name (from the module list, never from the URL)
put in. Paths that cannot name a page, namespace or endpoint answer 404 without echoing them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from common.errors import NotFound
from controlplane.services.validation import MAX_NAME, NAME_RE, NAMESPACE_RE

STATIC = Path(__file__).parent / "static"
PAGES = STATIC / "js" / "pages"
PAGE_RE = re.compile(r"[a-z][a-z0-9-]{0,40}")
TITLES = {"list": "Endpoints", "endpoint": "Endpoint", "signin": "Sign in", "tokens": "Tokens",
          "hardware": "Hardware", "new": "New endpoint"}

router = APIRouter(include_in_schema=False)


def static_app() -> StaticFiles:
    return StaticFiles(directory=STATIC, follow_symlink=False)


@lru_cache
def _shell() -> str:
    return (STATIC / "shell.html").read_text(encoding="utf-8")


def _page(page: str) -> HTMLResponse:
    if not PAGE_RE.fullmatch(page) or not (PAGES / f"{page}.js").is_file():
        raise NotFound("no such dashboard page")
    title = TITLES.get(page, page.replace("-", " ").capitalize())
    html = _shell().replace("{{page}}", page).replace("{{title}}", title)
    return HTMLResponse(html)


def _check_endpoint(namespace: str, name: str) -> None:
    if (NAMESPACE_RE.fullmatch(namespace) is None or len(name) > MAX_NAME or NAME_RE.fullmatch(name) is None):
        raise NotFound("no such endpoint address")


@router.get("/")
def read_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=302)


@router.get("/ui")
def read_ui_bare() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=302)


@router.get("/ui/")
def read_list_page() -> HTMLResponse:
    return _page("list")


@router.get("/ui/endpoints/{namespace}/{name}")
def read_endpoint_page(namespace: str, name: str) -> HTMLResponse:
    _check_endpoint(namespace, name)
    return _page("endpoint")


@router.get("/ui/endpoints/{namespace}/{name}/{view}")
def read_endpoint_subpage(namespace: str, name: str, view: str) -> HTMLResponse:
    """`/ui/endpoints/<ns>/<name>/<view>` is the page `endpoint-<view>` (e.g. the playground)."""
    _check_endpoint(namespace, name)
    if not PAGE_RE.fullmatch(view):
        raise NotFound("no such dashboard page")
    return _page(f"endpoint-{view}")


@router.get("/ui/{page}")
def read_page(page: str) -> HTMLResponse:
    if page in ("list", "endpoint") or page.startswith("endpoint-"):
        raise NotFound("no such dashboard page")
    return _page(page)
