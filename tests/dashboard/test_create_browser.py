"""The create form in a real Chromium against a real stack: the API's errors land next to the field they concern,
and a valid form creates an endpoint (the real model) whose page goes to `running` without a reload, its secret
never shown again."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ADMIN_TOKEN, Api
from tests.fixtures.browser import screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.realmodel, pytest.mark.slow]

SECRET = "s3cret-value-never-shown-again"


def _choose_cpu_x1(page) -> None:
    label = page.locator("#f-hardware option", has_text="intel-icl x1").first.text_content()
    page.select_option("#f-hardware", label=label)


def test_bad_fields_show_their_errors_beside_them(page, dashboard_stack):
    sign_in(page, dashboard_stack.url, ADMIN_TOKEN)
    page.goto(dashboard_stack.url + "/ui/new")
    expect(page.locator("#f-hardware option").first).to_be_attached()
    screenshot(page, "new")
    page.fill("#f-repository", "HuggingFaceTB/SmolLM2-135M-Instruct")
    _choose_cpu_x1(page)

    page.fill("#f-name", "Bad_Name")
    page.click("#create")
    expect(page.locator("#f-name-error")).to_contain_text("invalid endpoint name")
    expect(page.locator("#f-name")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-name")).to_be_focused()

    page.fill("#f-name", "fine-name")
    page.fill("#f-max", "0")
    page.click("#create")
    expect(page.locator("#f-max-error")).to_contain_text("maxReplica")
    expect(page.locator("#f-name-error")).to_be_empty()  # the old error went with the fix

    page.fill("#f-max", "1")
    page.select_option("#f-image", "custom")
    page.click("#create")
    expect(page.locator("#f-image-url-error")).to_contain_text("url is required")

    page.select_option("#f-image", "huggingface")
    page.fill("#f-env", "PYTHONPATH=/tmp")
    page.click("#create")  # an env name the platform refuses: the API names model.env.PYTHONPATH
    expect(page.locator("#f-env-error")).to_contain_text("PYTHONPATH")

    page.fill("#f-env", "no equals sign here")
    page.click("#create")
    expect(page.locator("#f-env-error")).to_contain_text("KEY=VALUE")
    screenshot(page, "new-errors")
    assert Api(dashboard_stack.url).http.get("/v2/endpoint/admin/fine-name").status_code == 404


def test_create_from_the_form_reaches_running(page, dashboard_stack, real_model_dir):
    api = Api(dashboard_stack.url)
    sign_in(page, dashboard_stack.url, ADMIN_TOKEN)
    page.goto(dashboard_stack.url + "/ui/new")
    expect(page.locator("#f-hardware option").first).to_be_attached()
    page.fill("#f-name", "formed")
    page.fill("#f-repository", str(real_model_dir))
    _choose_cpu_x1(page)
    page.fill("#f-env", "MAX_TOTAL_TOKENS=512\nMAX_INPUT_TOKENS=384")
    page.click("#add-secret")
    page.fill(".secret-name", "MY_SECRET")
    page.fill(".secret-value", SECRET)
    page.click("#create")
    page.wait_for_url("**/ui/endpoints/admin/formed")
    try:
        state = page.locator("#state [data-state]")
        expect(state).to_have_attribute("data-state", "running", timeout=300_000)  # live, no reload
        created = api.get("formed")
        assert created["model"]["env"] == {"MAX_TOTAL_TOKENS": "512", "MAX_INPUT_TOKENS": "384"}
        assert created["compute"]["instanceType"] == "intel-icl" and created["compute"]["instanceSize"] == "x1"
        assert SECRET not in page.content() and SECRET not in api.http.get("/v2/endpoint/admin/formed").text
        assert any(e["reason"] == "Running" for e in api.events("formed"))
        screenshot(page, "endpoint-created-from-form")
    finally:
        api.http.delete("/v2/endpoint/admin/formed")
