"""The playground and the charts in a real Chromium against a real stack serving SmolLM2-135M-Instruct: streamed chat
through the gateway with the session cookie, a paused endpoint's refusal, resume, a wake from zero that the page
announces, charts drawn from the traffic, and model output with markup shown as text."""

from __future__ import annotations

import json

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ADMIN_TOKEN, Api, create_body
from tests.fixtures.browser import screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.realmodel, pytest.mark.slow]

NAME = "chatty"
PLAYGROUND = f"/ui/endpoints/admin/{NAME}/playground"
REPLY_TIMEOUT = 180_000  # ms: a wake from zero loads the model before the first token


@pytest.fixture(scope="module")
def chat_endpoint(dashboard_stack, real_model_dir) -> Api:
    api = Api(dashboard_stack.url)
    body = create_body(NAME, str(real_model_dir))
    body["model"]["env"] = {"MAX_TOTAL_TOKENS": "1024", "MAX_INPUT_TOKENS": "768"}
    r = api.http.post("/v2/endpoint/admin", json=body)
    assert r.status_code == 201, r.text
    api.wait_state(NAME, "running", timeout=300)
    yield api
    api.http.delete(f"/v2/endpoint/admin/{NAME}")


def _open(page, stack) -> None:
    sign_in(page, stack.url, ADMIN_TOKEN)
    page.goto(stack.url + PLAYGROUND)
    expect(page.locator("#pg-input")).to_be_visible()


def _watch_reply(page) -> None:
    """Record every text the newest assistant bubble shows, as it changes (to tell a stream from one late write)."""
    page.evaluate("""() => {
      window.__seen = [];
      new MutationObserver(() => {
        const all = document.querySelectorAll('.msg-assistant .content');
        const last = all[all.length - 1];
        if (last && (window.__seen.length === 0 || window.__seen[window.__seen.length - 1] !== last.textContent))
          window.__seen.push(last.textContent);
      }).observe(document.getElementById('transcript'), {subtree: true, childList: true, characterData: true});
    }""")


def _send(page, text: str, *, keyboard: bool = False) -> None:
    page.fill("#pg-input", text)
    if keyboard:
        page.press("#pg-input", "Enter")  # as a keyboard user sends
    else:
        page.click("#pg-send")  # the submit handler marks the new reply as streaming before it awaits anything
    expect(page.locator("#transcript .streaming")).to_have_count(0, timeout=REPLY_TIMEOUT)
    expect(page.locator("#pg-send")).to_be_enabled()


def test_chat_streams_and_charts_draw_the_traffic(page, dashboard_stack, chat_endpoint):
    _open(page, dashboard_stack)
    page.fill("#pg-system", "You are a geography teacher. Answer in one short sentence.")
    page.fill("#pg-temperature", "0")
    page.fill("#pg-max-tokens", "40")
    _watch_reply(page)
    _send(page, "What is the capital of France?")
    expect(page.locator("#pg-error")).to_be_empty()
    reply = page.locator(".msg-assistant .content").last.text_content()
    assert "Paris" in reply, reply
    seen = [s for s in page.evaluate("window.__seen") if s]
    assert len(seen) >= 3 and all(b.startswith(a) for a, b in zip(seen, seen[1:])), seen  # grew token by token
    # The code beside the chat is the same request, with the endpoint's URL and the conversation so far.
    curl = page.locator("#code-curl code").text_content()
    assert f"{dashboard_stack.url}/endpoints/admin/{NAME}/v1/chat/completions" in curl
    assert "ENDPOINTCTL_TOKEN" in curl and ADMIN_TOKEN not in page.content()
    assert "capital of France" in page.locator("#code-openai code").text_content()
    assert "InferenceClient(base_url=" in page.locator("#code-hub code").text_content()
    screenshot(page, "playground")

    # The charts on the endpoint page draw the traffic (canvas drawn, points measured). A rate or a percentile
    # needs a previous sample to difference against: the first sample of a young endpoint is only a baseline, and
    # traffic before it is never charted. So the traffic is sent once the rates chart shows a rate (a baseline
    # exists), and the percentiles appear at the next sample.
    page.goto(f"{dashboard_stack.url}/ui/endpoints/admin/{NAME}")
    for chart in ("requests", "tokens", "ttft", "latency", "replicas"):
        expect(page.locator(f"#chart-{chart} canvas")).to_be_visible()
    expect(page.locator("#chart-requests")).not_to_have_attribute("data-points", "0", timeout=90_000)
    for _ in range(4):
        httpx.post(f"{dashboard_stack.url}/endpoints/admin/{NAME}/v1/chat/completions", timeout=120,
                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                   json={"model": "tgi", "max_tokens": 16, "messages": [{"role": "user", "content": "Count to 5."}]})
    expect(page.locator("#chart-tokens")).not_to_have_attribute("data-points", "0", timeout=30_000)
    expect(page.locator("#chart-ttft")).not_to_have_attribute("data-points", "0", timeout=60_000)
    expect(page.locator("#chart-latency")).not_to_have_attribute("data-points", "0", timeout=30_000)
    page.locator("#charts").scroll_into_view_if_needed()
    screenshot(page, "endpoint-charts")


def test_paused_is_refused_resume_serves_and_zero_wakes(page, dashboard_stack, chat_endpoint):
    api = chat_endpoint
    _open(page, dashboard_stack)
    page.fill("#pg-max-tokens", "8")
    assert api.http.post(f"/v2/endpoint/admin/{NAME}/pause").status_code == 200
    _send(page, "Hello?")
    expect(page.locator("#pg-error")).to_contain_text("paused; resume it to serve requests")
    screenshot(page, "playground-paused")

    api.wait_state(NAME, "paused", timeout=120)  # as a user sees it on the endpoint page before resuming
    assert api.http.post(f"/v2/endpoint/admin/{NAME}/resume").status_code == 200
    api.wait_state(NAME, "running", timeout=300)
    _send(page, "Hello again", keyboard=True)
    assert page.locator(".msg-user .content").last.text_content() == "Hello again"
    expect(page.locator("#pg-error")).to_be_empty()
    assert page.locator(".msg-assistant .content").last.text_content()

    assert api.http.post(f"/v2/endpoint/admin/{NAME}/scale-to-zero").status_code == 200
    api.wait_state(NAME, "scaledToZero", timeout=120)
    page.reload()
    expect(page.locator("#endpoint-state")).to_contain_text("scaledToZero")
    page.fill("#pg-input", "Wake up")
    page.click("#pg-send")
    notice = page.locator("#pg-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("waking up")
    screenshot(page, "playground-waking")
    expect(page.locator("#pg-send")).to_be_enabled(timeout=REPLY_TIMEOUT)
    expect(page.locator("#pg-error")).to_be_empty()
    expect(notice).to_be_hidden()
    assert page.locator(".msg-assistant .content").last.text_content()
    assert api.state(NAME) == "running"


def test_model_output_with_markup_is_text(page, dashboard_stack, chat_endpoint):
    """The real model, held by a JSON schema to one string of markup, streams it into the page: it must arrive as
    text (no element made of it, no script run — a dialog would fail the `page` fixture)."""
    payload = "<script>alert('xss')</script><img src=x onerror=alert(2)>"
    schema = {"type": "object", "properties": {"html": {"type": "string", "enum": [payload]}}, "required": ["html"]}

    def constrain(route) -> None:
        body = json.loads(route.request.post_data)
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "markup", "schema": schema}}
        route.continue_(post_data=json.dumps(body))

    _open(page, dashboard_stack)
    page.route(f"**/endpoints/admin/{NAME}/v1/chat/completions", constrain)
    page.fill("#pg-max-tokens", "80")
    _send(page, "Give me the HTML.")
    expect(page.locator("#pg-error")).to_be_empty()
    content = page.locator(".msg-assistant .content").last
    assert payload in content.text_content()
    assert page.locator("#transcript script, #transcript img").count() == 0
    screenshot(page, "playground-markup-as-text")


def test_json_mode_and_tools_reach_the_endpoint(page, dashboard_stack, chat_endpoint):
    sent: list[dict] = []

    def record(route) -> None:
        body = json.loads(route.request.post_data)
        sent.append(body)
        if body.get("tools"):  # make the model call the tool, to see the page show a streamed tool call
            forced = {**body, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
            route.continue_(post_data=json.dumps(forced))
        else:
            route.continue_()

    _open(page, dashboard_stack)
    page.route(f"**/endpoints/admin/{NAME}/v1/chat/completions", record)
    page.fill("#pg-max-tokens", "60")
    page.check("#pg-json")
    expect(page.locator("#code-openai code")).to_contain_text('response_format={"type": "json_object"}')
    _send(page, "Describe Paris as a JSON object.")
    expect(page.locator("#pg-error")).to_be_empty()
    reply = page.locator(".msg-assistant .content").last.text_content()
    assert reply.lstrip().startswith("{"), reply  # held to JSON by the runtime's grammar
    page.uncheck("#pg-json")
    page.check("#pg-tools")
    expect(page.locator("#code-hub code")).to_contain_text('"name": "get_weather"')
    _send(page, "What is the weather in Paris?")
    expect(page.locator("#pg-error")).to_be_empty()
    assert sent[0]["response_format"] == {"type": "json_object"} and "tools" not in sent[0]
    assert sent[1]["tools"][0]["function"]["name"] == "get_weather" and sent[1]["tool_choice"] == "auto"
    assert "response_format" not in sent[1] and sent[1]["stream"] is True
    assert sent[1]["messages"][-1] == {"role": "user", "content": "What is the weather in Paris?"}
    call = page.locator(".msg-assistant .content").last.text_content()
    assert call.startswith("→ tool call get_weather({") and '"city"' in call, call
