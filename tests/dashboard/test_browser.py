"""The dashboard in a real browser (Debian's chromium through Playwright) against a real `endpointctl up` stack with
the real model (SmolLM2-135M-Instruct): what a user does, page by page. Screenshots go to
test-artifacts/screenshots/. Figures (up → rendered list, API state change → page) are printed, never asserted on.
"""

from __future__ import annotations

import sys
import threading
import time

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ADMIN_TOKEN, Api, create_body
from tests.fixtures.browser import screenshot, sign_in
from tests.fixtures.processes import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.realmodel, pytest.mark.slow]

XSS = '<img src=x onerror="window.__xss=1">'
XSS_PATH = "%3Cimg%20src=x%20onerror=window.__xss=2%3E"  # the replica logs the decoded path: `<img src=x ...>`


def _figure(name: str, value: float) -> None:
    print(f"\n[dashboard figure] {name}: {value:.2f} s", file=sys.stderr)


def _no_injected_markup(page) -> None:
    """Payloads rendered as text: no element came from them and no handler ran (the CSP would block an inline
    handler anyway, so the element count is what shows escaping)."""
    assert page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    assert page.evaluate("window.__xss === undefined")


def _mint(api: Api, namespace: str) -> tuple[str, int]:
    r = api.http.post("/api/tokens", json={"namespace": namespace, "name": f"{namespace}-browser"})
    assert r.status_code == 201, r.text
    return r.json()["token"], r.json()["id"]


class StateWatch:
    """The API's view of an endpoint's state, sampled every 50 ms on a thread: (epoch ms, state) per change."""

    def __init__(self, api: Api, name: str) -> None:
        self.api, self.name = api, name
        self.changes: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = httpx.Client(base_url=self.api.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
        while not self._stop.wait(0.05):
            r = client.get(f"/v2/endpoint/admin/{self.name}")
            if r.status_code != 200:
                continue
            state = r.json()["status"]["state"]
            if not self.changes or self.changes[-1][1] != state:
                self.changes.append((time.time() * 1000, state))
        client.close()

    def __enter__(self) -> StateWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


RECORD_ROW_STATES = """([selector, bodyId]) => {
  window.__pageMarker = "no-reload";
  window.__states = [];
  const record = () => {
    const row = document.querySelector(selector);
    if (!row) return;
    const s = row.dataset.state;
    const last = window.__states[window.__states.length - 1];
    if (!last || last[1] !== s) window.__states.push([Date.now(), s]);
  };
  new MutationObserver(record).observe(document.getElementById(bodyId), {childList: true, subtree: true,
    attributes: true});
  record();
}"""


RECORD_MAIN_STATES = """() => {
  window.__states = [[Date.now(), document.querySelector("main").dataset.state]];
  new MutationObserver(() => {
    const s = document.querySelector("main").dataset.state;
    if (window.__states[window.__states.length - 1][1] !== s) window.__states.push([Date.now(), s]);
  }).observe(document.querySelector("main"), {attributes: true, attributeFilter: ["data-state"]});
}"""


def _latencies(api_changes: list[tuple[float, str]], page_changes: list[list]) -> dict[str, float]:
    first_api = {}
    for ts, state in api_changes:
        first_api.setdefault(state, ts)
    return {state: (ts - first_api[state]) / 1000 for ts, state in page_changes if state in first_api}


def test_sign_in_and_watch_an_endpoint_come_up(dashboard_stack, page, real_model_dir) -> None:
    stack = dashboard_stack
    api = Api(stack.url)
    signing_in = time.monotonic()
    sign_in(page, stack.url, ADMIN_TOKEN)
    page.wait_for_selector("main[data-loaded=true]")
    _figure("endpointctl up (stack start → API ready)", stack.start_seconds)
    _figure("sign-in form submitted → list rendered", time.monotonic() - signing_in)
    _figure("endpointctl up → signed-in list rendered", time.monotonic() - stack.started_monotonic)
    page.evaluate(RECORD_ROW_STATES, ['tr[data-endpoint="admin/live"]', "endpoints-body"])

    body = create_body("live", str(real_model_dir))
    body["model"]["env"]["DASHBOARD_NOTE"] = XSS
    with StateWatch(api, "live") as watch:
        created = time.monotonic()
        assert api.http.post("/v2/endpoint/admin", json=body).status_code == 201
        page.wait_for_selector('tr[data-endpoint="admin/live"][data-state=running]', timeout=300_000)
        _figure("create → running on the page", time.monotonic() - created)
        time.sleep(0.3)
    seen = [state for _, state in page.evaluate("window.__states")]
    assert page.evaluate("window.__pageMarker") == "no-reload"
    assert seen[-1] == "running" and "initializing" in seen, seen
    order = ["pending", "initializing", "running"]
    assert [s for s in seen if s in order] == [s for s in order if s in seen], seen  # never backwards
    for state, delay in _latencies(watch.changes, page.evaluate("window.__states")).items():
        _figure(f"API shows {state} → list shows it", delay)
    row = page.locator('tr[data-endpoint="admin/live"]')
    assert "1 / 1" in row.inner_text()
    assert row.locator(".url").inner_text().endswith("/endpoints/admin/live")
    screenshot(page, "endpoints-list")

    # Filters: state "paused" hides it, "running" shows it.
    page.select_option("#filter-state", "paused")
    assert page.locator('tr[data-endpoint="admin/live"]').count() == 0
    page.select_option("#filter-state", "running")
    assert page.locator('tr[data-endpoint="admin/live"]').count() == 1


def test_endpoint_page_text_logs_actions_and_delete(dashboard_stack, page, real_model_dir) -> None:
    stack = dashboard_stack
    api = Api(stack.url)
    if api.http.get("/v2/endpoint/admin/live").status_code == 404:  # run alone: bring it up here
        body = create_body("live", str(real_model_dir))
        body["model"]["env"]["DASHBOARD_NOTE"] = XSS
        api.http.post("/v2/endpoint/admin", json=body)
    api.wait_state("live", "running", timeout=300)
    gateway = f"{stack.url}/endpoints/admin/live"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    httpx.get(f"{gateway}/{XSS_PATH}", headers=headers, timeout=30)  # a log line carrying markup

    sign_in(page, stack.url, ADMIN_TOKEN)
    page.goto(f"{stack.url}/ui/endpoints/admin/live")
    page.wait_for_selector("main[data-state=running]")
    assert page.locator(".env-value").filter(has_text=XSS).count() == 1
    expect(page.locator("#logs")).to_contain_text("onerror=window.__xss=2", timeout=30_000)
    assert "<img src=x onerror=window.__xss=2>" in page.locator("#logs").text_content()
    _no_injected_markup(page)
    # Logs follow live: a new request shows up without touching the page.
    httpx.get(f"{gateway}/followed-line-marker", headers=headers, timeout=30)
    expect(page.locator("#logs")).to_contain_text("/followed-line-marker", timeout=30_000)
    screenshot(page, "endpoint-page")

    # Pause: the page shows it, and the gateway refuses requests.
    page.evaluate(RECORD_MAIN_STATES)
    with StateWatch(api, "live") as watch:
        clicked = time.monotonic()
        page.click("#pause")
        page.wait_for_selector("main[data-state=paused]", timeout=60_000)
        _figure("click Pause → page shows paused (the worker stops the replica first)", time.monotonic() - clicked)
        time.sleep(0.3)
    delays = _latencies(watch.changes, page.evaluate("window.__states"))
    assert "paused" in delays
    _figure("API shows paused → endpoint page shows it", delays["paused"])
    assert httpx.get(f"{gateway}/health", headers=headers, timeout=30).status_code == 503
    assert page.is_disabled("#pause") and page.is_enabled("#resume")
    page.wait_for_selector("#events li[data-reason]")
    # Resume: back to running, live.
    page.click("#resume")
    page.wait_for_selector("main[data-state=running]", timeout=300_000)
    assert httpx.get(f"{gateway}/health", headers=headers, timeout=60).status_code == 200

    # Scale to zero, then change the replica bounds: each shows on the page without a reload.
    page.click("#scale-to-zero")
    page.wait_for_selector("main[data-state=scaledToZero]", timeout=120_000)
    assert page.is_enabled("#resume") and page.is_disabled("#scale-to-zero")
    page.fill("#max-replica", "2")
    page.click("#update-replicas")
    expect(page.locator("#config")).to_contain_text("1–2 replicas", timeout=30_000)
    assert api.get("live")["compute"]["scaling"]["maxReplica"] == 2

    # Delete needs the name typed.
    page.click("#delete")
    assert page.is_disabled("#confirm-delete")
    page.fill("#confirm-name", "liv")
    assert page.is_disabled("#confirm-delete")
    page.fill("#confirm-name", "live")
    page.click("#confirm-delete")
    page.wait_for_selector("#gone", timeout=120_000)
    wait_until(lambda: api.http.get("/v2/endpoint/admin/live").status_code == 404, timeout=120, what="live deleted")
    page.goto(f"{stack.url}/ui/")
    page.wait_for_selector("main[data-loaded=true]")
    assert page.locator('tr[data-endpoint="admin/live"]').count() == 0


def test_failure_message_and_events_render_as_text(dashboard_stack, page) -> None:
    stack = dashboard_stack
    api = Api(stack.url)
    body = create_body("broken", f"/nonexistent/{XSS}")
    assert api.http.post("/v2/endpoint/admin", json=body).status_code == 201, body
    sign_in(page, stack.url, ADMIN_TOKEN)
    page.wait_for_selector('tr[data-endpoint="admin/broken"][data-state=failed]', timeout=300_000)
    message = page.locator('tr[data-endpoint="admin/broken"] .message')
    assert "onerror" in message.inner_text()  # the stuck endpoint's status.message, inline in the list
    page.goto(f"{stack.url}/ui/endpoints/admin/broken")
    page.wait_for_selector("main[data-state=failed]")
    expect(page.locator("#events .event-message").filter(has_text="onerror").first).to_be_visible(timeout=60_000)
    _no_injected_markup(page)
    screenshot(page, "endpoint-failed")
    api.http.delete("/v2/endpoint/admin/broken")


def test_another_tenant_sees_nothing(dashboard_stack, page) -> None:
    stack = dashboard_stack
    api = Api(stack.url)
    if api.http.get("/v2/endpoint/admin/mine").status_code == 404:
        assert api.http.post("/v2/endpoint/admin", json=create_body("mine", "/nonexistent/model")).status_code == 201
    token, _ = _mint(api, "bob")
    sign_in(page, stack.url, token)
    page.wait_for_selector("main[data-loaded=true]")
    assert page.locator("#signed-in-as").inner_text() == "bob"
    assert page.locator("#endpoints-body tr").count() == 0 and page.is_visible("#endpoints-empty")
    page.goto(f"{stack.url}/ui/endpoints/admin/mine")
    page.wait_for_selector("#gone")
    page.goto(f"{stack.url}/ui/tokens")
    page.wait_for_selector("#tokens-body tr")
    assert set(page.locator("#tokens-body tr td:nth-child(2)").all_inner_texts()) == {"bob"}
    api.http.delete("/v2/endpoint/admin/mine")


def test_tokens_shown_once_and_a_revoked_session_lands_on_sign_in(dashboard_stack, page) -> None:
    stack = dashboard_stack
    api = Api(stack.url)
    token, token_id = _mint(api, "carol")
    sign_in(page, stack.url, token)
    page.goto(f"{stack.url}/ui/tokens")
    page.fill("#token-name", "laptop")
    page.click("#token-form button[type=submit]")
    shown = page.locator("#new-token-value").inner_text()
    assert shown.startswith("epc_")
    assert httpx.get(f"{stack.url}/api/whoami-v2", headers={"Authorization": f"Bearer {shown}"}).json()["name"] == "carol"
    screenshot(page, "tokens")
    page.reload()
    page.wait_for_selector("#tokens-body tr")
    assert shown not in page.content()  # shown once: never again
    # Revoke the very token this session signed in with: the next API call is a 401 and the page goes to sign-in.
    page.click(f'tr[data-token-id="{token_id}"] button.revoke')
    page.wait_for_url("**/ui/signin**", timeout=60_000)
    page.goto(f"{stack.url}/ui/")
    page.wait_for_url("**/ui/signin**")


def test_hardware_page(dashboard_stack, page) -> None:
    sign_in(page, dashboard_stack.url, ADMIN_TOKEN)
    page.goto(f"{dashboard_stack.url}/ui/hardware")
    page.wait_for_selector("main[data-loaded=true]")
    assert page.locator("#hardware-body tr").count() > 0
    assert page.locator("#hardware-body").inner_text().count("intel-icl") >= 1
    screenshot(page, "hardware")


def test_sign_out(dashboard_stack, page) -> None:
    sign_in(page, dashboard_stack.url, ADMIN_TOKEN)
    page.wait_for_selector("#sign-out")
    screenshot(page, "signed-in")
    page.click("#sign-out")
    page.wait_for_url("**/ui/signin**")
    assert [c for c in page.context.cookies() if c["name"] == "endpointctl_session"] == []
    page.goto(f"{dashboard_stack.url}/ui/tokens")
    page.wait_for_url("**/ui/signin**")
    screenshot(page, "signin")


def test_a_page_cannot_post_without_the_csrf_header(dashboard_stack, page) -> None:
    """The browser holds the cookie; a script that does not send X-CSRF-Token (what a foreign page could at most
    make it do) is refused."""
    sign_in(page, dashboard_stack.url, ADMIN_TOKEN)
    status = page.evaluate("""async () => (await fetch('/v2/endpoint/admin', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: '{}'})).status""")
    assert status == 403


def test_keyboard_only_sign_in(dashboard_stack, page) -> None:
    """The token field has focus on arrival, Enter signs in, and Tab reaches the skip link first, then the nav."""
    page.goto(f"{dashboard_stack.url}/ui/signin")
    page.wait_for_selector("#token:focus")
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_selector("main[data-loaded=true]")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_a_token_with_several_namespaces_filters_by_namespace(dashboard_stack, page) -> None:
    stack = dashboard_stack
    api = Api(stack.url)
    r = api.http.post("/api/tokens", json={"namespace": "dora", "name": "browser", "orgs": ["dora-team"]})
    assert r.status_code == 201, r.text
    dora = Api(stack.url, token=r.json()["token"])
    for ns, name in (("dora", "own-one"), ("dora-team", "team-one")):
        assert dora.http.post(f"/v2/endpoint/{ns}", json=create_body(name, "/nonexistent/model")).status_code == 201
    sign_in(page, stack.url, r.json()["token"])
    page.wait_for_selector('tr[data-endpoint="dora-team/team-one"]')
    assert page.locator("#endpoints-body tr").count() == 2
    assert page.locator("#endpoints thead").inner_text().count("Namespace") == 1
    page.select_option("#filter-namespace", "dora-team")
    assert [row.get_attribute("data-endpoint") for row in page.locator("#endpoints-body tr").all()] == [
        "dora-team/team-one"]
    screenshot(page, "endpoints-list-namespaces")
    for ns, name in (("dora", "own-one"), ("dora-team", "team-one")):
        dora.http.delete(f"/v2/endpoint/{ns}/{name}")
