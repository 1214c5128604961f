"""The page modules' pure parts, run in the real browser as the pages load them: the create form builds exactly the
body the CLI's and the SDK's builder (`controlplane.bodies.create_body`) builds from the same choices, and the
playground's code samples are valid Python and a curl command whose payload is the request the page sends."""

from __future__ import annotations

import ast
import json
import shlex

import pytest

from controlplane.bodies import create_body
from tests.e2e.conftest import ADMIN_TOKEN
from tests.fixtures.browser import sign_in

pytestmark = [pytest.mark.browser]

COMPUTE = {"accelerator": "gpu", "instanceType": "nvidia-t4", "instanceSize": "x2"}
CASES = [
    # (form fields, the builder's keyword arguments for the same choices)
    ({"name": " my-ep ", "repository": "org/model ", "revision": "", "task": "text-generation", "image": "huggingface",
      "imageUrl": "", "imagePort": "", "minReplica": 1, "maxReplica": 2, "scaleToZero": "", "env": {}, "secrets": {},
      "type": "authenticated"},
     {"name": "my-ep", "repository": "org/model", "task": "text-generation", "min_replica": 1, "max_replica": 2}),
    ({"name": "custom", "repository": "org/model", "revision": "abc123", "task": "", "image": "custom",
      "imageUrl": "ghcr.io/org/server:1", "imagePort": "8080", "minReplica": 0, "maxReplica": 3, "scaleToZero": "15",
      "env": {"A": "1", "B": "x=y"}, "secrets": {"TOKEN": "s3cret"}, "type": "private"},
     {"name": "custom", "repository": "org/model", "revision": "abc123",
      "custom_image": {"url": "ghcr.io/org/server:1", "port": 8080}, "min_replica": 0, "max_replica": 3,
      "scale_to_zero_timeout": 15, "env": {"A": "1", "B": "x=y"}, "secrets": {"TOKEN": "s3cret"}, "type": "private"}),
    ({"name": "tgi-one", "repository": "org/model", "revision": "", "task": "", "image": "tgi", "imageUrl": "",
      "imagePort": "", "minReplica": 1, "maxReplica": 1, "scaleToZero": "", "env": {}, "secrets": {},
      "type": "public"},
     {"name": "tgi-one", "repository": "org/model", "custom_image": {"tgi": {}}, "type": "public"}),
]


@pytest.fixture
def new_page(page, dashboard_stack):
    sign_in(page, dashboard_stack.url, ADMIN_TOKEN)
    page.goto(dashboard_stack.url + "/ui/new")
    page.locator("#f-hardware option").first.wait_for(state="attached")
    return page


@pytest.mark.parametrize(("form", "kwargs"), CASES)
def test_form_body_is_the_builders_body(new_page, form, kwargs):
    built = new_page.evaluate("""async ([form, compute]) => {
      const m = await import('/ui/static/js/pages/new.js');
      return m.createBody({...form, compute, vendor: 'aws', region: 'us-east-1'});
    }""", [form, COMPUTE])
    expected = create_body(framework="pytorch", accelerator="gpu", instance_type="nvidia-t4", instance_size="x2",
                           vendor="aws", region="us-east-1", **kwargs)
    assert built == expected


def test_env_lines(new_page):
    parsed = new_page.evaluate("""async () => {
      const m = await import('/ui/static/js/pages/new.js');
      const ok = m.parseEnv('# a comment\\nA=1\\n\\n B = two=2 \\nEMPTY=');
      let error = null;
      try { m.parseEnv('A=1\\nnot a pair'); } catch (e) { error = [e.message, e.param]; }
      return [ok, error];
    }""")
    assert parsed == [{"A": "1", "B": " two=2", "EMPTY": ""}, ["line 2: write KEY=VALUE", "model.env"]]


def test_playground_code_is_the_request(new_page):
    body = {"model": "tgi", "messages": [{"role": "system", "content": "Be 'brief'."},
                                         {"role": "user", "content": 'Say "hi" \\ <b>now</b>'}],
            "temperature": 0.5, "max_tokens": 64, "stream": True, "response_format": {"type": "json_object"},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                                     "additionalProperties": False}}}]}
    url = "http://127.0.0.1:8000/endpoints/alice/e1"
    texts = new_page.evaluate("""async ([url, body]) => {
      const m = await import('/ui/static/js/pages/endpoint-playground.js');
      return m.snippets(url, body);
    }""", [url, body])
    for key in ("openai", "hub"):
        tree = ast.parse(texts[key])  # valid Python
        call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and any(k.arg == "messages" for k in n.keywords))
        args = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        assert args["messages"] == body["messages"] and args["tools"] == body["tools"]
        assert args["response_format"] == body["response_format"] and args["stream"] is True
        assert "ENDPOINTCTL_TOKEN" in texts[key]
    assert f'base_url="{url}/v1/"' in texts["openai"] and f'base_url="{url}"' in texts["hub"]
    words = shlex.split(texts["curl"].replace("\\\n", " "))
    assert words[1] == f"{url}/v1/chat/completions"
    assert json.loads(words[words.index("-d") + 1]) == body
