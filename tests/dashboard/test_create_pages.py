"""The create form's, the playground's and the charts' assets: served as page shells and modules under the
dashboard's CSP, uPlot vendored with its licence, and no page module using an HTML sink or inline style."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.dashboard.security import CSP
from tests.controlplane.conftest import Api

STATIC = Path(__file__).resolve().parents[2] / "controlplane" / "dashboard" / "static"
MINE = ["js/pages/new.js", "js/pages/endpoint-playground.js", "js/charts.js", "js/live.js"]


@pytest.mark.parametrize(("path", "page"), [("/ui/new", "new"),
                                            ("/ui/endpoints/alice/e1/playground", "endpoint-playground")])
def test_page_shells(api: Api, path: str, page: str) -> None:
    r = api.http.get(path)
    assert r.status_code == 200, r.text
    assert f'data-page="{page}"' in r.text and r.headers["content-security-policy"] == CSP


@pytest.mark.parametrize("asset", [*MINE, "live.css", "vendor/uplot/uPlot.esm.js", "vendor/uplot/uPlot.min.css",
                                   "vendor/uplot/LICENSE"])
def test_assets_are_served(api: Api, asset: str) -> None:
    r = api.http.get(f"/ui/static/{asset}")
    assert r.status_code == 200 and r.content == (STATIC / asset).read_bytes()
    if asset.endswith(".js"):
        assert "javascript" in r.headers["content-type"]


def test_uplot_is_the_pinned_release_with_its_licence() -> None:
    assert "uPlot" in (STATIC / "vendor/uplot/uPlot.esm.js").read_text()[:400]
    assert "MIT" in (STATIC / "vendor/uplot/LICENSE").read_text() or "Permission is hereby granted" in (
        STATIC / "vendor/uplot/LICENSE").read_text()
    # uPlot styles through the CSSOM only, which the CSP allows; a style attribute or an HTML sink would not pass.
    code = (STATIC / "vendor/uplot/uPlot.esm.js").read_text()
    assert "innerHTML" not in code and "setAttribute(\"style\"" not in code


@pytest.mark.parametrize("module", MINE)
def test_modules_write_text_only(module: str) -> None:
    code = (STATIC / module).read_text()
    assert code.startswith("// @ts-check")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 ".style.cssText", "setAttribute(\"style\""):
        assert sink not in code, (module, sink)
